"""`cdp identity train`: estimate the Fellegi–Sunter model from the data
itself (no labels needed): u from random pairs, m and the match rate by EM
over blocked pairs, with people's review decisions as fixed labels."""
from __future__ import annotations

import random
from collections import defaultdict

from sqlalchemy import func, select, update

from cdp.models import IdentifierKind, SourceRecord
from cdp.store import Runtime
from identity import features as features_mod
from identity.models import LabelledPair, MatchModel
from identity.resolve import load_features
from identity.scoring import Model, estimate_m, estimate_u

MAX_TRAINING_PAIRS = 300_000


# Training blocks, as in Splink: EM runs once per block over the pairs that
# agree on it, with the block's own fields left out (they agree by
# construction, so they cannot tell matches from non-matches there). Each
# field's m comes from the sessions where it was free to vary.
SINGLE_FIELD_BLOCKS = ("birth_date", "postal_code", "email", "phone", "cpf")  # and every fuzzy id
MIN_SESSION_PAIRS = 50


def training_blocks(model: Model) -> list[tuple[str, tuple[str, ...], object]]:
    """(name, comparisons the block fixes, the values a record is blocked on):
    a field's block uses the values its exact level compares; names block on
    given name and surname together."""
    blocks = [("name", ("given_name", "surname"),
               lambda f: (f"{f.given}|{f.surname}",) if f.given and f.surname else ())]
    for c in model.comparisons:
        if c.name in SINGLE_FIELD_BLOCKS or c.name.startswith("id:"):
            blocks.append((c.name, (c.name,), c.exact_values))
    return blocks


def block_pairs(feats: list[features_mod.Features], values_of, max_block: int, limit: int, rng: random.Random):
    """Pairs of records sharing a value (values held by more than max_block
    records skipped), at most `limit` of them; returns (pairs, how many pairs
    the block has in all) so counts can be scaled back up."""
    index: dict = defaultdict(list)
    for i, f in enumerate(feats):
        for value in set(values_of(f)):
            index[value].append(i)
    groups = [sorted(m) for v, m in sorted(index.items(), key=lambda kv: str(kv[0])) if 1 < len(m) <= max_block]
    total = sum(len(g) * (len(g) - 1) // 2 for g in groups)
    rng.shuffle(groups)
    pairs: list[tuple[int, int]] = []
    for g in groups:
        for x in range(len(g)):
            for y in range(x + 1, len(g)):
                pairs.append((g[x], g[y]))
        if len(pairs) >= limit:
            break
    return pairs, total


def _coverage(feats, values_of) -> float:
    return sum(1 for f in feats if values_of(f)) / len(feats) if feats else 0.0


def train(runtime: Runtime, sample_size: int = 100_000, seed: int = 7, progress=None) -> Model:
    with runtime.session() as session:
        keys = runtime.keys(session)
        # A stable order (keyed hashes) so the same data trains the same model.
        ids = list(session.scalars(select(SourceRecord.id).order_by(SourceRecord.external_key)))
        rng = random.Random(seed)
        if len(ids) > sample_size:
            ids = rng.sample(ids, sample_size)
        feats_by_id = load_features(session, keys, ids)
        if progress:
            progress("features", len(feats_by_id))
        feats = [feats_by_id[i] for i in ids if i in feats_by_id]
        kinds = sorted(session.scalars(select(IdentifierKind.name).where(IdentifierKind.match == "fuzzy")))
        model = Model.default(kinds)
        estimate_u(model, feats, seed=seed)
        labels = session.execute(select(LabelledPair.record_a, LabelledPair.record_b, LabelledPair.is_match)).all()
        labelled_ids = list({r for a, b, _ in labels for r in (a, b)} - set(feats_by_id))
        feats_by_id.update(load_features(session, keys, labelled_ids))
        labelled = [(model.vector(feats_by_id[a], feats_by_id[b]), same) for a, b, same in labels
                    if a in feats_by_id and b in feats_by_id]
        sessions = _em_sessions(model, feats, labelled, runtime.settings.max_block, rng)
        _combine(model, sessions, feats)
        model.trained_on = {"records": len(feats), "labelled_pairs": len(labelled),
                            "sessions": {s["block"]: {"pairs": s["pairs"], "block_pairs": s["block_pairs"],
                                                      "match_rate": round(s["rate"], 6)} for s in sessions}}
        session.execute(update(MatchModel).values(active=False))
        session.add(MatchModel(params=model.to_json(), active=True))
    return model


def _em_sessions(model: Model, feats, labelled, max_block: int, rng: random.Random,
                 limit: int = MAX_TRAINING_PAIRS // 3) -> list[dict]:
    sessions = []
    for name, fixed, values_of in training_blocks(model):
        pairs, total = block_pairs(feats, values_of, max_block, limit, rng)
        if len(pairs) < MIN_SESSION_PAIRS:
            continue
        trial = Model(model.comparisons, {k: list(v) for k, v in model.m.items()}, model.u, prior=0.3)
        vectors = [trial.vector(feats[a], feats[b]) for a, b in pairs]
        rate = estimate_m(trial, vectors, labelled, exclude=frozenset(fixed))
        sessions.append({"block": name, "fixed": fixed, "values_of": values_of, "pairs": len(pairs),
                         "block_pairs": total, "rate": rate, "m": trial.m})
    return sessions


def _combine(model: Model, sessions: list[dict], feats) -> None:
    """Each field's m: the mean over sessions where it varied. The prior
    (probability two random records match): each session's matches, scaled
    to the whole block and divided by the share of true matches the block
    can catch (both records have the value, and it agrees), over all pairs."""
    for c in model.comparisons:
        estimates = [s["m"][c.name] for s in sessions if c.name not in s["fixed"]]
        if estimates:
            model.m[c.name] = [sum(col) / len(estimates) for col in zip(*estimates)]
    model.changed()
    n = len(feats)
    all_pairs = n * (n - 1) / 2
    lambdas = []
    for s in sessions:
        recall = _coverage(feats, s["values_of"]) ** 2
        for name in s["fixed"]:
            recall *= model.m[name][0]
        if recall > 0.01 and all_pairs:
            lambdas.append(s["rate"] * s["block_pairs"] / recall / all_pairs)
    if lambdas:
        lambdas.sort()
        model.prior = min(max(lambdas[len(lambdas) // 2], 1e-9), 0.5)


def record_count(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(SourceRecord))
