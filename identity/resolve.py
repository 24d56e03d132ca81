"""Incremental identity resolution, deterministic rules (first version).

Each new record is compared only with the profiles its strong identifiers
point to (blind-index lookups), never with everything. A record that links
several profiles merges them (union-find semantics); each merge is logged
with its rule and can be undone. Guards keep shared family contacts apart:
an e-mail or phone never joins two people who hold different valid CPFs.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from rapidfuzz import fuzz
from sqlalchemy import func, select, text, true, update
from sqlalchemy.orm import Session, selectinload

from cdp import crypto
from cdp.models import CannotLink, Event, Identifier, MergeEvent, Profile, Source, SourceRecord, new_id, utcnow
from cdp.store import KeyStore, Runtime
from identity import golden as golden_mod
from identity.normalize import name_tokens, normalize_name

log = logging.getLogger(__name__)

# An identifier shared by more profiles than this is junk for matching (a
# store's placeholder phone, a shared mailbox) and is ignored.
MAX_PROFILES_PER_IDENTIFIER = 25
RESOLUTION_LOCK_ID = 0x43445031  # "CDP1": serializes resolution on PostgreSQL


@dataclass
class Decision:
    record_id: str
    profile_id: str
    rule: str
    merged: list[str] = field(default_factory=list)


def decrypt_payload(keys: KeyStore, record: SourceRecord) -> dict:
    return crypto.decrypt_json(keys.get(record.key_id), record.payload_ct, "source_records", record.id, "payload")


def decrypt_golden(keys: KeyStore, profile: Profile) -> dict:
    if profile.golden_ct is None:
        return {"identifiers": {}}
    return crypto.decrypt_json(keys.get(profile.key_id), profile.golden_ct, "profiles", profile.id, "golden")


def _store_golden(keys: KeyStore, profile: Profile, golden: dict, provenance: dict) -> None:
    profile.golden_ct = crypto.encrypt_json(keys.get(profile.key_id), golden, "profiles", profile.id, "golden")
    profile.provenance = provenance
    profile.updated_at = utcnow()


def _record_info(record: SourceRecord, trust: int) -> golden_mod.RecordInfo:
    return golden_mod.RecordInfo(record.id, record.source, trust, record.observed_at)


class Resolver:
    """Resolves records chunk by chunk. Within a chunk, candidate lookups,
    CPF sets and golden records live in memory (prefetched with a handful of
    queries) and are written back once at the end, so the cost per record is
    a few dictionary operations rather than several round trips."""

    def __init__(self, session: Session, keys: KeyStore, settings):
        self.session = session
        self.keys = keys
        self.settings = settings
        self._trust = {s.name: s.trust for s in session.scalars(select(Source))}
        self._rule_order = {name: i for i, name in enumerate(settings.match_rules)}
        self._reset_chunk()

    def _reset_chunk(self) -> None:
        self._index: dict[bytes, set[str]] = {}      # blind index -> profile ids holding it
        self._junk: set[bytes] = set()               # identifiers shared by too many profiles
        self._alias: dict[str, str] = {}             # merged profile -> surviving profile
        self._cpfs: dict[str, set[bytes]] = {}       # profile -> its valid CPF blind indexes
        self._cannot: set[tuple[str, str]] = set()
        self._goldens: dict[str, tuple[dict, dict]] = {}
        self._dirty: set[str] = set()
        self._rebuild: set[str] = set()
        self._profiles: dict[str, Profile] = {}      # includes profiles created in this chunk (not yet flushed)

    def trust(self, source: str) -> int:
        if source not in self._trust:
            src = self.session.get(Source, source)
            self._trust[source] = src.trust if src else 50
        return self._trust[source]

    # -- prefetch ----------------------------------------------------------
    def _prefetch(self, records: list[SourceRecord]) -> None:
        bis = list({i.blind_index for r in records for i in r.identifiers if i.strong})
        for start in range(0, len(bis), 500):
            part = bis[start:start + 500]
            base = (
                select(Identifier.blind_index, SourceRecord.profile_id)
                .join(SourceRecord, SourceRecord.id == Identifier.record_id)
                .where(Identifier.blind_index.in_(part), Identifier.strong.is_(True),
                       SourceRecord.profile_id.is_not(None))
            )
            sub = base.distinct().subquery()
            crowded = (select(sub.c.blind_index).group_by(sub.c.blind_index)
                       .having(func.count() > MAX_PROFILES_PER_IDENTIFIER))
            self._junk.update(self.session.scalars(crowded))
            for bi, pid in self.session.execute(base.where(Identifier.blind_index.not_in(self._junk) if self._junk
                                                           else true()).distinct()):
                self._index.setdefault(bi, set()).add(pid)
        pids = {p for ps in self._index.values() for p in ps} | {r.profile_id for r in records if r.profile_id}
        self._load_profiles(pids)

    def _load_profiles(self, pids: set[str]) -> None:
        wanted = [p for p in pids if p not in self._cpfs]
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            loaded = list(self.session.scalars(select(Profile).where(Profile.id.in_(part))))
            for profile in loaded:
                self._profiles[profile.id] = profile
            self.keys.preload([p.key_id for p in loaded])
            for pid in part:
                self._cpfs[pid] = set()
            for pid, bi in self.session.execute(
                select(SourceRecord.profile_id, Identifier.blind_index)
                .join(SourceRecord, SourceRecord.id == Identifier.record_id)
                .where(SourceRecord.profile_id.in_(part), Identifier.kind == "cpf", Identifier.strong.is_(True))
            ):
                self._cpfs[pid].add(bi)
            for a, b in self.session.execute(
                select(CannotLink.profile_a, CannotLink.profile_b)
                .where(CannotLink.profile_a.in_(part) | CannotLink.profile_b.in_(part))
            ):
                self._cannot.add((a, b))

    def _profile(self, pid: str) -> Profile | None:
        if pid not in self._profiles:
            self._profiles[pid] = self.session.get(Profile, pid)
        return self._profiles[pid]

    def _root(self, pid: str) -> str:
        while pid in self._alias:
            pid = self._alias[pid]
        return pid

    # -- matching --------------------------------------------------------
    def _candidates(self, strong: list[Identifier]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for ident in strong:
            if ident.blind_index in self._junk:
                continue
            profiles = {self._root(p) for p in self._index.get(ident.blind_index, ())}
            if len(profiles) > MAX_PROFILES_PER_IDENTIFIER:
                continue
            for pid in profiles:
                found.setdefault(pid, set()).add(ident.kind)
        return found

    def _golden(self, profile: Profile) -> tuple[dict, dict]:
        if profile.id not in self._goldens:
            golden = decrypt_golden(self.keys, profile)
            golden.setdefault("identifiers", {})
            # A deep copy: mutating the loaded JSON in place would hide the
            # change from SQLAlchemy, and the provenance would not be saved.
            provenance = copy.deepcopy(profile.provenance or {})
            provenance.setdefault("identifiers", {})
            self._goldens[profile.id] = (golden, provenance)
        return self._goldens[profile.id]

    def _names_agree(self, record_name: str | None, profile: Profile) -> bool:
        if not record_name:
            return False
        golden, _ = self._golden(profile)
        forms = normalize_name((golden.get("name") or {}).get("full_name"))
        if forms is None:
            return False
        a, b = name_tokens(record_name), name_tokens(forms.match)
        if not a or not b:
            return False
        # Same first given name (allowing a typo), and the rest compatible:
        # "Maria Silva" ~ "Maria da Silva Souza", but not "João Silva".
        if fuzz.ratio(a[0], b[0]) < self.settings.name_threshold:
            return False
        return fuzz.token_set_ratio(" ".join(a), " ".join(b)) >= self.settings.name_threshold

    def _rule_for(self, kinds: set[str], record_name: str | None, profile: Profile) -> tuple[int, str] | None:
        for rule in self.settings.match_rules:
            if rule == "cpf" and "cpf" in kinds:
                return self._rule_order[rule], "same_cpf"
            if rule == "cnpj" and "cnpj" in kinds:
                return self._rule_order[rule], "same_cnpj"
            if rule == "custom":
                custom = sorted(k for k in kinds if k.startswith("custom:"))
                if custom:
                    return self._rule_order[rule], f"same_{custom[0]}"
            if rule == "email" and "email" in kinds:
                return self._rule_order[rule], "same_email"
            if rule == "phone_name" and "phone" in kinds and self._names_agree(record_name, profile):
                return self._rule_order[rule], "same_phone_and_name"
        return None

    def _cannot_link(self, a: str, b: str) -> bool:
        return tuple(sorted((a, b))) in self._cannot

    # -- the decision ----------------------------------------------------
    def resolve_chunk(self, records: list[SourceRecord]) -> list[Decision]:
        self._reset_chunk()
        self.keys.preload([r.key_id for r in records])
        self._prefetch(records)
        with self.session.no_autoflush:
            decisions = [self._resolve_one(r) for r in records]
        self._write_back([r.id for r in records])
        return decisions

    def resolve(self, record: SourceRecord) -> Decision:
        return self.resolve_chunk([record])[0]

    def _resolve_one(self, record: SourceRecord) -> Decision:
        payload = decrypt_payload(self.keys, record)
        strong = [i for i in record.identifiers if i.strong]
        record_cpfs = {i.blind_index for i in strong if i.kind == "cpf"}
        record_name = (payload.get("name") or {}).get("match")

        matches: list[tuple[int, Profile, str, set[str]]] = []
        for pid, kinds in self._candidates(strong).items():
            profile = self._profile(pid)
            if profile is None or profile.status != "active":
                continue
            found = self._rule_for(kinds, record_name, profile)
            if found is not None:
                matches.append((found[0], profile, found[1], kinds))
        matches.sort(key=lambda m: (m[0], m[1].created_at, m[1].id))

        # Grow the merge set greedily, strongest rule first, refusing any
        # profile that would join two different valid CPFs or that a person
        # has marked as a different individual.
        chosen: list[tuple[Profile, str, set[str]]] = []
        cpfs = set(record_cpfs)
        for _, profile, rule, kinds in matches:
            theirs = self._cpfs.get(profile.id, set())
            if rule != "same_cpf" and cpfs and theirs and not (cpfs & theirs):
                continue
            if rule != "same_cpf" and len(cpfs | theirs) > max(len(cpfs), len(theirs), 1):
                continue
            if any(self._cannot_link(profile.id, p.id) for p, _, _ in chosen):
                continue
            chosen.append((profile, rule, kinds))
            cpfs |= theirs

        if record.profile_id is not None:
            current = self._profile(self._root(record.profile_id))
            if current is not None and current.status == "active" and all(p.id != current.id for p, _, _ in chosen):
                chosen.insert(0, (current, record.link_rule or "existing", set()))

        if not chosen:
            profile = self._new_profile()
            self._attach(record, profile, "new_profile", payload, strong)
            return Decision(record.id, profile.id, "new_profile")

        target = min((c[0] for c in chosen), key=lambda p: (p.created_at, p.id))
        first_rule = chosen[0][1]
        merged = []
        for profile, rule, kinds in chosen:
            if profile.id != target.id:
                self._merge(target, profile, rule, kinds, record.id)
                merged.append(profile.id)
        if record.profile_id == target.id:
            self._rebuild.add(target.id)  # a new version of a member: values may have changed
        self._attach(record, target, first_rule, payload, strong)
        return Decision(record.id, target.id, first_rule, merged)

    def _new_profile(self) -> Profile:
        key_id, _ = self.keys.create()
        profile = Profile(id=new_id(), key_id=key_id, provenance={}, record_count=0, status="active",
                          created_at=utcnow())
        self.session.add(profile)
        self._profiles[profile.id] = profile
        self._cpfs[profile.id] = set()
        self._goldens[profile.id] = golden_mod.empty()
        return profile

    def _attach(self, record: SourceRecord, profile: Profile, rule: str, payload: dict, strong) -> None:
        if record.profile_id != profile.id:
            profile.record_count = (profile.record_count or 0) + 1
        record.profile_id = profile.id
        record.link_rule = rule
        record.status = "resolved"
        for ident in strong:
            self._index.setdefault(ident.blind_index, set()).add(profile.id)
            if ident.kind == "cpf":
                self._cpfs.setdefault(profile.id, set()).add(ident.blind_index)
        if profile.id not in self._rebuild:
            golden, provenance = self._golden(profile)
            golden_mod.apply_record(golden, provenance, _record_info(record, self.trust(record.source)), payload,
                                    self.settings.survivorship)
            self._dirty.add(profile.id)

    def _merge(self, target: Profile, other: Profile, rule: str, kinds: set[str], via_record: str) -> None:
        self.session.flush()  # records attached earlier in this chunk must move too
        moved = list(self.session.scalars(select(SourceRecord.id).where(SourceRecord.profile_id == other.id)))
        self._move_records(moved, other, target)
        other.status = "merged"
        other.merged_into = target.id
        other.golden_ct = None
        other.provenance = {}
        self.keys.destroy([other.key_id])  # its golden copy is gone; nothing else used that key
        self._alias[other.id] = target.id
        self._cpfs.setdefault(target.id, set()).update(self._cpfs.pop(other.id, set()))
        self._goldens.pop(other.id, None)
        self._dirty.discard(other.id)
        self._rebuild.add(target.id)
        self.session.add(MergeEvent(
            kind="merge", profile_id=target.id, other_profile_id=other.id, record_ids=moved, rule=rule,
            details={"matched_on": sorted(kinds), "via_record": via_record},
        ))
        log.info("merged profile=%s into=%s rule=%s records=%d", other.id, target.id, rule, len(moved))

    def _write_back(self, record_ids: list[str]) -> None:
        for pid in self._dirty - self._rebuild:
            profile = self._profile(pid)
            golden, provenance = self._goldens[pid]
            _store_golden(self.keys, profile, golden, provenance)
        self.session.flush()
        for pid in self._rebuild:
            profile = self._profile(pid)
            if profile is not None and profile.status == "active":
                self.rebuild_golden(profile)
        # Events follow their record to its profile, in one statement per chunk.
        for start in range(0, len(record_ids), 500):
            part = record_ids[start:start + 500]
            owner = select(SourceRecord.profile_id).where(SourceRecord.id == Event.record_id).scalar_subquery()
            self.session.execute(update(Event).where(Event.record_id.in_(part)).values(profile_id=owner),
                                 execution_options={"synchronize_session": False})
        self._reset_chunk()

    def _move_records(self, record_ids: list[str], source: Profile, target: Profile) -> None:
        if not record_ids:
            return
        self.session.execute(update(SourceRecord).where(SourceRecord.id.in_(record_ids)).values(profile_id=target.id),
                             execution_options={"synchronize_session": "fetch"})
        self.session.execute(update(Event).where(Event.record_id.in_(record_ids)).values(profile_id=target.id),
                             execution_options={"synchronize_session": False})
        source.record_count = max(0, (source.record_count or 0) - len(record_ids))
        target.record_count = (target.record_count or 0) + len(record_ids)

    def rebuild_golden(self, profile: Profile) -> None:
        records = self.session.scalars(
            select(SourceRecord).where(SourceRecord.profile_id == profile.id).order_by(SourceRecord.id)
        ).all()
        self.keys.preload([r.key_id for r in records])
        items = [(_record_info(r, self.trust(r.source)), decrypt_payload(self.keys, r)) for r in records]
        golden, provenance = golden_mod.build(items, self.settings.survivorship)
        profile.record_count = len(records)
        _store_golden(self.keys, profile, golden, provenance)

    # -- undo ------------------------------------------------------------
    def split(self, profile_id: str, record_ids: list[str], actor: str, reason: str = "manual_split") -> Profile:
        """Move records out of a profile into a new one, and remember that the
        two are different people."""
        profile = self.session.get(Profile, profile_id)
        if profile is None or profile.status != "active":
            raise LookupError("profile not found or not active")
        members = set(self.session.scalars(select(SourceRecord.id).where(SourceRecord.profile_id == profile_id)))
        moving = [r for r in dict.fromkeys(record_ids)]
        if not moving or not set(moving) <= members:
            raise ValueError("record_ids must be records of this profile")
        if set(moving) == members:
            raise ValueError("cannot split every record out of a profile")
        new = self._new_profile()
        self.session.flush()
        self._move_records(moving, profile, new)
        self._finish_split(profile, new, moving, actor, reason, None)
        return new

    def undo_merge(self, merge_event_id: int, actor: str) -> Profile:
        event = self.session.get(MergeEvent, merge_event_id)
        if event is None or event.kind != "merge":
            raise LookupError("merge event not found")
        if event.undone_at is not None:
            raise ValueError("this merge was already undone")
        records = self.session.scalars(select(SourceRecord).where(SourceRecord.id.in_(event.record_ids))).all()
        current = {r.profile_id for r in records}
        if len(current) != 1:
            raise ValueError("the merged records have since been split apart; split them by hand")
        holder = self.session.get(Profile, current.pop())
        other = self.session.get(Profile, event.other_profile_id)
        key_id, _ = self.keys.create()
        other.key_id = key_id
        other.status = "active"
        other.merged_into = None
        self.session.flush()
        self._move_records([r.id for r in records], holder, other)
        event.undone_at = utcnow()
        self._finish_split(holder, other, [r.id for r in records], actor, "undo_merge", event.id)
        return other

    def _finish_split(self, remaining: Profile, split_off: Profile, moved: list[str], actor, reason, undone) -> None:
        self.session.flush()
        self.session.expire_all()
        self.rebuild_golden(remaining)
        self.rebuild_golden(split_off)
        a, b = sorted((remaining.id, split_off.id))
        exists = self.session.scalar(select(CannotLink.id).where(CannotLink.profile_a == a, CannotLink.profile_b == b))
        if exists is None:
            self.session.add(CannotLink(profile_a=a, profile_b=b))
        self.session.add(MergeEvent(
            kind="split", profile_id=remaining.id, other_profile_id=split_off.id, record_ids=moved, rule=reason,
            details={"undoes_merge_event": undone} if undone else {}, actor=actor,
        ))


def resolve_records(runtime: Runtime, record_ids: list[str], progress=None) -> list[Decision]:
    """Resolve stored records, in bounded transactions. Safe to run twice:
    records already resolved are skipped (rq retries, crashes)."""
    decisions: list[Decision] = []
    size = runtime.settings.resolve_batch_size
    for start in range(0, len(record_ids), size):
        chunk = record_ids[start:start + size]
        with runtime.session() as session:
            if session.bind.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RESOLUTION_LOCK_ID})
            resolver = Resolver(session, runtime.keys(session), runtime.settings)
            records = session.scalars(
                select(SourceRecord)
                .where(SourceRecord.id.in_(chunk), SourceRecord.status == "pending")
                .options(selectinload(SourceRecord.identifiers))
            ).all()
            by_id = {r.id: r for r in records}
            decisions.extend(resolver.resolve_chunk([by_id[rid] for rid in chunk if rid in by_id]))
        if progress:
            progress(len(chunk))
    return decisions


def pending_record_ids(runtime: Runtime) -> list[str]:
    with runtime.session() as session:
        return list(session.scalars(
            select(SourceRecord.id).where(SourceRecord.status == "pending").order_by(SourceRecord.received_at, SourceRecord.id)
        ))
