"""`cdp identity train`: estimate the Fellegi–Sunter model from the data
itself (no labels needed): u from random pairs, m and the match rate by EM
over blocked pairs, with people's review decisions as fixed labels."""
from __future__ import annotations

import random
from collections import defaultdict

from sqlalchemy import func, select, update

from cdp import crypto
from cdp.models import IdentifierKind, SourceRecord
from cdp.store import Runtime
from identity import features as features_mod
from identity.models import LabelledPair, MatchModel
from identity.scoring import Model, estimate_m, estimate_u

MAX_TRAINING_PAIRS = 300_000


def _features(session, keys, record_ids: list[str]) -> dict[str, features_mod.Features]:
    out = {}
    for start in range(0, len(record_ids), 500):
        rows = session.execute(
            select(SourceRecord.id, SourceRecord.key_id, SourceRecord.payload_ct)
            .where(SourceRecord.id.in_(record_ids[start:start + 500]))
        ).all()
        keys.preload([r.key_id for r in rows])
        for rid, key_id, ct in rows:
            out[rid] = features_mod.from_payload(
                crypto.decrypt_json(keys.get(key_id), ct, "source_records", rid, "payload"))
        keys.forget()
    return out


def blocked_pairs(feats: list[features_mod.Features], max_block: int, limit: int = MAX_TRAINING_PAIRS):
    """Pairs sharing a blocking key (keys bigger than max_block skipped)."""
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(feats):
        for key in features_mod.blocking_keys(f):
            index[key].append(i)
    pairs: set[tuple[int, int]] = set()
    for members in index.values():
        if len(members) > max_block:
            continue
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                pairs.add((members[x], members[y]))
                if len(pairs) >= limit:
                    return sorted(pairs)
    return sorted(pairs)


def train(runtime: Runtime, sample_size: int = 100_000, seed: int = 7, progress=None) -> Model:
    with runtime.session() as session:
        keys = runtime.keys(session)
        ids = list(session.scalars(select(SourceRecord.id).order_by(SourceRecord.id)))
        rng = random.Random(seed)
        if len(ids) > sample_size:
            ids = rng.sample(ids, sample_size)
        feats_by_id = _features(session, keys, ids)
        if progress:
            progress("features", len(feats_by_id))
        order = list(feats_by_id)
        feats = [feats_by_id[i] for i in order]
        kinds = sorted(session.scalars(select(IdentifierKind.name).where(IdentifierKind.match == "fuzzy")))
        model = Model.default(kinds)
        estimate_u(model, feats, seed=seed)
        pairs = blocked_pairs(feats, runtime.settings.max_block)
        vectors = [model.vector(feats[a], feats[b]) for a, b in pairs]
        labels = session.execute(select(LabelledPair.record_a, LabelledPair.record_b, LabelledPair.is_match)).all()
        labelled_ids = list({r for a, b, _ in labels for r in (a, b)} - set(feats_by_id))
        feats_by_id.update(_features(session, keys, labelled_ids))
        labelled = [(model.vector(feats_by_id[a], feats_by_id[b]), same) for a, b, same in labels
                    if a in feats_by_id and b in feats_by_id]
        model.prior = 0.1  # EM starts from a neutral match rate among blocked pairs
        estimate_m(model, vectors, labelled)
        n = len(feats)
        blocked_rate = model.prior
        total = n * (n - 1) / 2
        # EM gives the match rate among blocked pairs; scoring starts from the
        # rate among all pairs (matches are almost all inside the blocks).
        if total and pairs:
            model.prior = min(max(blocked_rate * len(pairs) / total, 1e-9), 0.5)
        model.trained_on = {"records": n, "blocked_pairs": len(pairs), "labelled_pairs": len(labelled),
                            "blocked_match_rate": round(blocked_rate, 6)}
        session.execute(update(MatchModel).values(active=False))
        session.add(MatchModel(params=model.to_json(), active=True))
    return model


def record_count(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(SourceRecord))
