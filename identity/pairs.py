"""The decision on one pair of records, shared by incremental resolution and
batch rebuild (so both reach the same clusters): a deterministic rule on a
shared strong identifier, else the probabilistic model's score."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rapidfuzz.distance import JaroWinkler

from identity.features import Features
from identity.scoring import Model

PROBABILISTIC = "probabilistic"


@dataclass
class Edge:
    other: str            # the other record's id
    rule: str             # same_cpf | same_cnpj | same_custom:<kind> | same_email | same_phone_and_name | probabilistic
    rank: int             # lower is stronger (the configured rule order; the model comes last)
    probability: float
    details: dict = field(default_factory=dict)  # levels, weights, matched identifier kinds: never values
    review: bool = False  # between the review and match thresholds: a person decides


def names_agree(a: Features, b: Features, threshold: float) -> bool:
    """Same first given name (allowing a typo or a nickname) and compatible
    surnames: "Maria Silva" ~ "Maria da Silva Souza", not "João Silva"."""
    if not a.given or not b.given:
        return False
    if JaroWinkler.similarity(a.given, b.given) < threshold:
        return False
    if not a.surnames or not b.surnames:
        return True  # a form with the first name only
    if set(a.surnames) & set(b.surnames):
        return True
    return JaroWinkler.similarity(a.surnames[-1], b.surnames[-1]) >= threshold


def names_conflict(a: Features, b: Features) -> bool:
    """Clearly different given names: a shared family e-mail, not one person."""
    if not a.given or not b.given:
        return False
    if JaroWinkler.similarity(a.given, b.given) >= 0.75:
        return False
    if a.given_all and b.given_all and set(a.given_all.split()) & set(b.given_all.split()):
        return False
    return True


def _bits(probability: float) -> float:
    """The match weight (log2 odds) below which the model's probability is
    below this one. At 0 nothing is below; at 1 (which the model reaches only
    past 53 bits, rounding) everything is, up to at least 50 bits."""
    if probability <= 0:
        return -math.inf
    if probability >= 1:
        return 50.0
    return math.log2(probability / (1 - probability))


def decide(a: Features, b: Features, other: str, shared: set[str], model: Model, settings) -> Edge | None:
    """shared: strong identifier kinds the two records have in common."""
    order = {name: i for i, name in enumerate(settings.match_rules)}
    threshold = settings.name_threshold / 100.0
    for rule in settings.match_rules:
        if rule == "cpf" and "cpf" in shared:
            return Edge(other, "same_cpf", order[rule], 1.0, {"matched_on": sorted(shared)})
        if rule == "cnpj" and "cnpj" in shared:
            return Edge(other, "same_cnpj", order[rule], 1.0, {"matched_on": sorted(shared)})
        if rule == "custom":
            custom = sorted(k for k in shared if k.startswith("custom:"))
            if custom:
                return Edge(other, f"same_{custom[0]}", order[rule], 1.0, {"matched_on": sorted(shared)})
        if rule == "email" and "email" in shared and not names_conflict(a, b):
            return Edge(other, "same_email", order[rule], 1.0, {"matched_on": sorted(shared)})
        if rule == "phone_name" and "phone" in shared and names_agree(a, b, threshold):
            return Edge(other, "same_phone_and_name", order[rule], 1.0, {"matched_on": sorted(shared)})
    vector = model.vector_above(a, b, _bits(settings.review_threshold))
    if vector is None:
        return None
    _, probability = model.score(vector)
    if probability < settings.review_threshold:
        return None
    details = model.explain(vector)
    if shared:
        details["matched_on"] = sorted(shared)
    return Edge(other, PROBABILISTIC, len(order), probability, details,
                review=probability < settings.match_threshold)
