"""Fellegi–Sunter scoring: per-field comparison levels, m/u probabilities,
a match weight and probability per pair, and unsupervised estimation (EM).

A level is an index into the field's level list (0 = strongest agreement);
None means "cannot compare" (a value missing on either side) and adds no
evidence, as in the classic model.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from rapidfuzz.distance import OSA, JaroWinkler, Levenshtein
from rapidfuzz import fuzz

from identity.features import Features


def _jw(a: str, b: str) -> float:
    return JaroWinkler.similarity(a, b)


def _best(pairs, fn) -> float:
    return max((fn(a, b) for a, b in pairs), default=0.0)


# -- comparisons ------------------------------------------------------------------
# Each returns a level index or None. The level names are for explanations.

def cmp_given(a: Features, b: Features):
    if not a.given or not b.given:
        return None
    if a.given == b.given:
        return 0
    sim = _jw(a.given, b.given)
    if sim >= 0.92:
        return 1
    # Compound given names: "maria eduarda" vs "eduarda"
    if a.given_all and b.given_all and (set(a.given_all.split()) & set(b.given_all.split())):
        return 2
    if sim >= 0.80:
        return 2
    # Swapped given name and surname.
    if a.surname and b.surname and (a.given == b.surname or a.surname == b.given):
        return 2
    return 3


def cmp_surname(a: Features, b: Features):
    if not a.surnames or not b.surnames:
        return None
    if a.surnames[-1] == b.surnames[-1] or a.surnames == b.surnames:
        return 0
    if set(a.surnames) & set(b.surnames):
        return 1  # "da Silva Souza" vs "Souza": one shared surname
    sim = _jw(a.surnames[-1], b.surnames[-1])
    if sim >= 0.92:
        return 1
    if sim >= 0.80 or (a.given and b.given and (a.surnames[-1] == b.given or b.surnames[-1] == a.given)):
        return 2
    return 3


def cmp_birth_date(a: Features, b: Features):
    x, y = a.birth_date, b.birth_date
    if not x or not y:
        return None
    if x == y:
        return 0
    if len(x) == len(y) == 8 and (x[:4] + x[6:8] + x[4:6] == y or Levenshtein.distance(x, y) <= 1):
        return 1  # day/month swapped, or one digit typed wrong
    if Levenshtein.distance(x, y) <= 2 or x[:4] == y[:4]:
        return 2
    return 3


def cmp_postal(a: Features, b: Features):
    if not a.postal_code or not b.postal_code:
        return None
    if a.postal_code == b.postal_code:
        return 0
    return 1 if Levenshtein.distance(a.postal_code, b.postal_code) <= 1 else 2


def cmp_city(a: Features, b: Features):
    if not a.city or not b.city:
        return None
    if a.city == b.city:
        return 0
    return 1 if _jw(a.city, b.city) >= 0.90 else 2


def cmp_street(a: Features, b: Features):
    if not a.street or not b.street:
        return None
    if a.street == b.street:
        return 0
    return 1 if fuzz.token_set_ratio(a.street, b.street) >= 85 else 2


def cmp_street_number(a: Features, b: Features):
    if not a.street_number or not b.street_number:
        return None
    return 0 if a.street_number == b.street_number else 1


def cmp_email(a: Features, b: Features):
    if not a.emails or not b.emails:
        return None
    if a.emails & b.emails:
        return 0
    for x in a.email_users:
        for y in b.email_users:
            # "ana1981" and "ana1986" are different users, however alike.
            if x == y or (_jw(x, y) >= 0.93 and _digits(x) == _digits(y)):
                if x in a.informative_users or y in b.informative_users:
                    return 1
                return None  # both spell their own name: the name fields already said so
    return 2


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def cmp_phone(a: Features, b: Features):
    if not a.phones or not b.phones:
        return None
    if a.phones & b.phones:
        return 0
    if {p[-8:] for p in a.phones} & {p[-8:] for p in b.phones}:
        return 1
    return 2


def cmp_cpf(a: Features, b: Features):
    ax, bx = a.cpfs | a.cpfs_unverified, b.cpfs | b.cpfs_unverified
    if not ax or not bx:
        return None
    if a.cpfs & b.cpfs:
        return 0
    if ax & bx:
        return 1  # the same digits, one side failing its check digit
    # OSA distance: two swapped digits are one typo, as people make them.
    if any(OSA.distance(x, y) <= 2 for x in ax for y in bx) and not (a.cpfs and b.cpfs):
        return 1  # a typo: a failed check digit is a signal, not an identity
    return 2


def cmp_fuzzy_id(kind: str):
    def compare(a: Features, b: Features):
        x, y = a.fuzzy_ids.get(kind), b.fuzzy_ids.get(kind)
        if not x or not y:
            return None
        if x & y:
            return 0
        d = min(OSA.distance(p, q) for p in x for q in y)  # a transposition counts once
        return 1 if d <= 1 else 2 if d <= 2 else 3
    return compare


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[str, ...]
    fn: object
    # Prior m and u per level, used until the model is trained.
    m: tuple[float, ...]
    u: tuple[float, ...]
    # The value(s) whose equality is the "exact" level: lets training measure
    # u(exact) from value frequencies over every record instead of from a
    # sample of random pairs, where rare agreements (an identifier, a birth
    # date) happen a handful of times and swing the weight from run to run.
    exact_values: object = None


def _one(attr):
    return lambda f: (getattr(f, attr),) if getattr(f, attr) else ()


def _many(attr):
    return lambda f: tuple(getattr(f, attr))


COMPARISONS: list[Comparison] = [
    Comparison("given_name", ("exact", "jaro_winkler>=0.92", "close_or_compound", "different"), cmp_given,
               (0.80, 0.10, 0.06, 0.04), (0.01, 0.01, 0.03, 0.95),
               _one("given")),
    Comparison("surname", ("exact", "shared_or_jw>=0.92", "close_or_swapped", "different"), cmp_surname,
               (0.82, 0.10, 0.04, 0.04), (0.01, 0.02, 0.03, 0.94),
               lambda f: f.surnames[-1:]),
    Comparison("birth_date", ("exact", "typo_or_swap", "same_year_or_2_edits", "different"), cmp_birth_date,
               (0.85, 0.08, 0.04, 0.03), (0.0005, 0.003, 0.03, 0.9665),
               _one("birth_date")),
    Comparison("postal_code", ("exact", "1_edit", "different"), cmp_postal, (0.85, 0.07, 0.08), (0.005, 0.02, 0.975),
               _one("postal_code")),
    Comparison("city", ("exact", "jaro_winkler>=0.90", "different"), cmp_city, (0.88, 0.05, 0.07), (0.05, 0.02, 0.93),
               _one("city")),
    Comparison("street", ("exact", "token_set>=85", "different"), cmp_street, (0.80, 0.10, 0.10), (0.002, 0.01, 0.988),
               _one("street")),
    Comparison("street_number", ("exact", "different"), cmp_street_number, (0.90, 0.10), (0.02, 0.98),
               _one("street_number")),
    Comparison("email", ("exact", "same_user", "different"), cmp_email, (0.70, 0.10, 0.20), (0.0001, 0.001, 0.9989),
               _many("emails")),
    Comparison("phone", ("exact", "same_last_8", "different"), cmp_phone, (0.70, 0.05, 0.25), (0.0001, 0.0005, 0.9994),
               _many("phones")),
    Comparison("cpf", ("exact", "typo", "different"), cmp_cpf, (0.90, 0.07, 0.03), (0.00001, 0.0005, 0.99949),
               _many("cpfs")),
]


def _fuzzy_values(kind: str):
    return lambda f: tuple(f.fuzzy_ids.get(kind) or ())


def comparisons_for(fuzzy_kinds: list[str]) -> list[Comparison]:
    extra = [Comparison(f"id:{k}", ("exact", "1_edit_or_swap", "2_edits", "different"), cmp_fuzzy_id(k),
                        (0.85, 0.08, 0.03, 0.04), (0.0001, 0.001, 0.005, 0.9939),
                        _fuzzy_values(k)) for k in sorted(fuzzy_kinds)]
    return COMPARISONS + extra


# -- the model ---------------------------------------------------------------------

@dataclass
class Model:
    """m/u per field level and the prior match probability among compared pairs."""

    comparisons: list[Comparison]
    m: dict[str, list[float]]
    u: dict[str, list[float]]
    # Probability that two random records match (Splink's λ): scoring a blocked
    # pair starts from it, so agreement on the blocking fields must earn the match.
    prior: float = 1e-4
    trained_on: dict = field(default_factory=dict)

    @classmethod
    def default(cls, fuzzy_kinds: list[str] = ()) -> "Model":
        comps = comparisons_for(list(fuzzy_kinds))
        return cls(comps, {c.name: list(c.m) for c in comps}, {c.name: list(c.u) for c in comps})

    @classmethod
    def from_json(cls, data: dict) -> "Model":
        kinds = [name[3:] for name in data["m"] if name.startswith("id:")]
        comps = comparisons_for(kinds)
        model = cls.default(kinds)
        for c in comps:
            if c.name in data["m"] and len(data["m"][c.name]) == len(c.levels):
                model.m[c.name] = list(data["m"][c.name])
                model.u[c.name] = list(data["u"][c.name])
        model.prior = data.get("prior", model.prior)
        model.trained_on = data.get("trained_on", {})
        return model

    def to_json(self) -> dict:
        return {"m": self.m, "u": self.u, "prior": self.prior, "trained_on": self.trained_on,
                "levels": {c.name: list(c.levels) for c in self.comparisons}}

    def changed(self) -> None:
        """Call after editing m or u in place: the weight tables are rebuilt."""
        self._version = getattr(self, "_version", 0) + 1

    def vector(self, a: Features, b: Features) -> list:
        return [c.fn(a, b) for c in self.comparisons]

    def _tables(self) -> tuple[list[list[float]], float]:
        """log2(m/u) per field level and the prior's log-odds, recomputed only
        when the parameters change (scoring is the inner loop)."""
        key = (getattr(self, "_version", 0), self.prior)
        if getattr(self, "_cache_key", None) != key:
            self._weight_table = [
                [math.log2(max(m, 1e-9) / max(u, 1e-9)) for m, u in zip(self.m[c.name], self.u[c.name])]
                for c in self.comparisons
            ]
            self._prior_weight = math.log2(self.prior / (1 - self.prior))
            # vector_above's order (largest best weight first) and, per step,
            # the most the fields from there on can add (a missing value adds 0).
            best = [max(0.0, *row) for row in self._weight_table]
            order = sorted(range(len(best)), key=lambda i: -best[i])
            self._plan = (order, [sum(best[i] for i in order[step:]) for step in range(len(order))])
            self._cache_key = key
        return self._weight_table, self._prior_weight

    def vector_above(self, a: Features, b: Features, floor: float) -> list | None:
        """The comparison vector, or None as soon as the pair cannot reach
        `floor` bits, whatever the fields not yet compared say: each adds at
        most its best level's weight, and nothing when a value is missing.
        Most blocked pairs are plainly different people; the fields with
        most at stake go first, so those pairs skip the costlier rest."""
        table, w = self._tables()
        order, room = self._plan
        comparisons = self.comparisons
        vector: list = [None] * len(table)
        for step, pos in enumerate(order):
            if w + room[step] < floor - 1e-6:  # the margin absorbs summing in another order
                return None
            level = comparisons[pos].fn(a, b)
            vector[pos] = level
            if level is not None:
                w += table[pos][level]
        return vector

    def weights(self, vector: list) -> list[float | None]:
        table, _ = self._tables()
        return [None if level is None else row[level] for row, level in zip(table, vector)]

    def score(self, vector: list) -> tuple[float, float]:
        """(match weight in bits, match probability)."""
        table, w = self._tables()
        for row, level in zip(table, vector):
            if level is not None:
                w += row[level]
        w = max(min(w, 60.0), -60.0)
        return w, 1.0 / (1.0 + 2.0 ** -w)

    def explain(self, vector: list) -> dict:
        """Per-field level and weight: why a pair scored what it did (no values)."""
        weight, probability = self.score(vector)
        fields = {}
        for c, level, w in zip(self.comparisons, vector, self.weights(vector)):
            if level is not None:
                fields[c.name] = {"level": c.levels[level], "weight": round(w, 2)}
        return {"probability": round(probability, 6), "match_weight": round(weight, 2),
                "prior_weight": round(math.log2(self.prior / (1 - self.prior)), 2), "fields": fields}


def estimate_u(model: Model, sample: list[Features], pairs: int = 50_000, seed: int = 7) -> None:
    """u = how often fields agree by chance: measured on random pairs (almost
    all non-matches), as Splink does."""
    if len(sample) < 2:
        return
    rng = random.Random(seed)
    counts = {c.name: [1.0] * len(c.levels) for c in model.comparisons}  # +1 smoothing
    for _ in range(pairs):
        a, b = rng.sample(sample, 2)
        for c, level in zip(model.comparisons, model.vector(a, b)):
            if level is not None:
                counts[c.name][level] += 1
    for c in model.comparisons:
        row = counts[c.name]
        exact = _exact_agreement_rate(c, sample)
        if exact is None or len(row) < 2:
            total = sum(row)
            model.u[c.name] = [x / total for x in row]
            continue
        # u(exact) from value frequencies; the sample splits the rest among
        # the other levels.
        rest = sum(row[1:])
        model.u[c.name] = [exact] + [(1.0 - exact) * x / rest for x in row[1:]]
    model.changed()


def _exact_agreement_rate(c: Comparison, sample: list[Features]) -> float | None:
    """P(two random records agree exactly on the field | both have it):
    sum over values of c(c-1) / n(n-1), counted on the whole sample."""
    if c.exact_values is None:
        return None
    counts: dict = {}
    n = 0
    for f in sample:
        values = c.exact_values(f)
        if values:
            n += 1
            for v in set(values):
                counts[v] = counts.get(v, 0) + 1
    if n < 2:
        return None
    agreeing = sum(k * (k - 1) for k in counts.values())
    return max(agreeing / (n * (n - 1)), 0.5 / (n * (n - 1)))  # never exactly zero


def estimate_m(model: Model, vectors: list[list], labelled: list[tuple[list, bool]] = (),
               iterations: int = 25, prior_strength: float = 200.0, exclude: frozenset = frozenset()) -> float:
    """m and the match rate by expectation–maximisation over candidate pairs,
    with u fixed; returns the match rate among the pairs and sets it as the
    model's prior. Pairs a person labelled enter with their label as a fixed
    posterior, so review decisions feed the model.

    `exclude` names comparisons the pairs were selected on (a training block
    on birth date): those fields agree by construction, so they are left out
    of the E-step and their m is not re-estimated here — as Splink does.

    The default m values act as a Dirichlet prior worth `prior_strength`
    pairs (MAP estimation), which keeps rare levels from collapsing to zero."""
    defaults = {c.name: c.m for c in model.comparisons}
    keep = [c.name not in exclude for c in model.comparisons]
    # Identical comparison vectors are scored once: a few thousand patterns
    # stand for hundreds of thousands of pairs.
    patterns: dict[tuple, list] = {}
    for v in vectors:
        key = tuple(level if k else None for level, k in zip(v, keep))
        patterns.setdefault(key, [0.0, None])[0] += 1
    for v, same in labelled:
        key = tuple(level if k else None for level, k in zip(v, keep))
        patterns.setdefault(("labelled", same) + key, [0.0, 1.0 if same else 0.0])[0] += 1
    if not patterns:
        return model.prior
    rows = [((key[2:] if key and key[0] == "labelled" else key), count, fixed)
            for key, (count, fixed) in patterns.items()]
    total_count = sum(count for _, count, _ in rows)
    prior = model.prior
    for _ in range(iterations):
        m_counts = {c.name: [prior_strength * x for x in defaults[c.name]] for c in model.comparisons}
        total_p = 0.0
        for vector, count, fixed in rows:
            p = model.score(vector)[1] if fixed is None else fixed
            total_p += p * count
            for c, level in zip(model.comparisons, vector):
                if level is not None:
                    m_counts[c.name][level] += p * count
        for c, k in zip(model.comparisons, keep):
            if k:
                row = m_counts[c.name]
                total = sum(row)
                model.m[c.name] = [x / total for x in row]
        model.changed()
        new_prior = min(max(total_p / total_count, 1e-6), 0.999)
        if abs(new_prior - prior) < 1e-7:
            break
        model.prior = prior = new_prior
    return model.prior
