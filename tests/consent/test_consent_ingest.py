"""Consent signals carried by source records reach the ledger through the
real ingestion and identity-resolution path, exactly once, and follow
merges to the surviving profile."""
from __future__ import annotations

from sqlalchemy import func, select

from cdp.ingest import ingest_batch
from cdp.models import MergeEvent, SourceRecord
from consent import ledger
from consent.models import LedgerEntry
from consent.purposes import create_purpose
from identity.resolve import Resolver
from tests.consent.helpers import allowed, verify
from tests.factories import CPF_A, record

GRANT = {"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
         "occurred_at": "2026-01-10T09:30:00-03:00",
         "evidence": {"channel": "web_form", "notice_version": "aviso-2026-01", "ip": "177.10.20.30",
                      "user_agent": "Mozilla/5.0"}}


def entries(rt) -> list[LedgerEntry]:
    with rt.session() as session:
        return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))


def profile_of(rt, record_id: str) -> str:
    with rt.session() as session:
        return session.get(SourceRecord, record_id).profile_id


def test_signals_land_once_per_signal(crt):
    rec = record("F-1", email="lia@example.com", name="Lia Prado",
                 consents=[GRANT, dict(GRANT, purpose="personalization")])
    first = ingest_batch(crt, "formularios", [rec])
    record_id = first.results[0].record_id
    got = entries(crt)
    assert [(e.purpose, e.action, e.method, e.collector) for e in got] == [
        ("email_marketing", "granted", "record", "source:formularios"),
        ("personalization", "granted", "record", "source:formularios")]
    pid = profile_of(crt, record_id)
    assert {e.subject_id for e in got} == {pid} and {e.record_id for e in got} == {record_id}
    assert got[0].notice_version == "aviso-2026-01" and got[0].channel == "web_form"
    assert allowed(crt, [pid]) == {pid}

    # The same record again: a duplicate, nothing appended.
    assert ingest_batch(crt, "formularios", [rec]).counts()["duplicate"] == 1
    # A new version (a changed trait) still carrying the same signals: nothing appended.
    changed = dict(rec, traits={"full_name": "Lia Prado", "city": "Recife"})
    assert ingest_batch(crt, "formularios", [changed]).counts()["updated"] == 1
    assert len(entries(crt)) == 2
    # Resolution running again over the same records (an rq retry): nothing appended.
    with crt.session() as session:
        keys = crt.keys(session)
        rec_row = session.get(SourceRecord, record_id)
        assert ledger.ingest_record_signals(session, keys, [rec_row]) == 0
        assert ledger.backfill(session, keys) == 0
    # A later version with a revocation: exactly one more entry, and the gate closes.
    revoked = dict(changed, consents=[GRANT, dict(GRANT, status="revoked", occurred_at="2026-02-01T10:00:00-03:00")])
    ingest_batch(crt, "formularios", [revoked])
    assert [e.action for e in entries(crt)] == ["granted", "granted", "revoked"]
    assert allowed(crt, [pid]) == set()
    assert verify(crt)["ok"]


def test_source_names_for_purposes_and_bases_are_mapped(crt):
    rd = {"purpose": "communications", "status": "granted", "legal_basis": "pre_existing_contract",
          "evidence": {"channel": "rdstation"}}
    unknown = {"purpose": "sms_marketing", "status": "granted", "legal_basis": "consent",
               "evidence": {"channel": "rdstation"}}
    summary = ingest_batch(crt, "rd_station", [record("RD-1", email="rui@example.com", consents=[rd, unknown])])
    got = entries(crt)
    assert [(e.purpose, e.legal_basis, e.declared_basis) for e in got] == [
        ("email_marketing", "consent", "contract")]  # the registry's basis rules; the source's is kept
    # The unknown purpose was skipped; once declared, a backfill picks it up, once.
    with crt.session() as session:
        create_purpose(session, {"name": "sms_marketing", "legal_basis": "consent", "title_pt": "Ofertas por SMS",
                                 "title_en": "Offers by SMS", "description_pt": "Ofertas por SMS.",
                                 "description_en": "Offers by SMS.", "retention_days": 365,
                                 "notice_version": "aviso-2026-01"})
    for expected in (1, 0):
        with crt.session() as session:
            assert ledger.backfill(session, crt.keys(session)) == expected
    assert [e.purpose for e in entries(crt)] == ["email_marketing", "sms_marketing"]
    pid = profile_of(crt, summary.results[0].record_id)
    assert {e.subject_id for e in entries(crt)} == {pid}


def test_signals_of_a_backfill_land_when_the_rebuild_resolves_it(crt):
    """Stored without resolution (`ingest --no-resolve`), a record's signals
    wait; the rebuild that resolves it appends them, once."""
    from identity.rebuild import rebuild

    stored = ingest_batch(crt, "formularios", [record("BF-1", email="lia@example.com", consents=[GRANT])],
                          resolve=False)
    assert entries(crt) == []
    rebuild(crt)
    pid = profile_of(crt, stored.results[0].record_id)
    assert pid is not None and [(e.subject_id, e.purpose) for e in entries(crt)] == [(pid, "email_marketing")]
    rebuild(crt)
    assert len(entries(crt)) == 1 and allowed(crt, [pid]) == {pid}


def test_unknown_purposes_are_reported_once_per_chunk(crt, caplog):
    unknown = {"purpose": "sms_marketing", "status": "granted", "legal_basis": "consent"}
    batch = [record(f"SMS-{n}", email=f"p{n}@example.com", consents=[unknown]) for n in range(6)]
    with caplog.at_level("WARNING", logger="consent.ledger"):
        ingest_batch(crt, "rd_station", batch)
    lines = [r.getMessage() for r in caplog.records if "unknown purposes" in r.getMessage()]
    # One line for the resolution chunk (a backfill of a million records would otherwise log a million).
    assert lines == ["consent signals for unknown purposes skipped=6 of records=6 "
                     "(`cdp consent backfill` records them once the purpose exists)"]
    assert entries(crt) == []


def test_a_backfill_rebuild_reports_unknown_purposes_once(crt, caplog, monkeypatch):
    """The rebuild writes profiles 500 at a time; its skipped signals are
    summed over the run (one line, not one per batch, whichever process built it)."""
    import identity.rebuild as rb

    unknown = {"purpose": "sms_marketing", "status": "granted", "legal_basis": "consent"}
    batch = [record(f"BK-{n}", email=f"b{n}@example.com", consents=[unknown, GRANT]) for n in range(7)]
    ingest_batch(crt, "rd_station", batch, resolve=False)
    monkeypatch.setattr(rb, "PROFILE_BATCH", 3)  # three batches (built in the pool of processes)
    with caplog.at_level("WARNING", logger="consent.ledger"):
        rb.rebuild(crt)
    lines = [r.getMessage() for r in caplog.records if "unknown purposes" in r.getMessage()]
    assert lines == ["consent signals for unknown purposes skipped=7 of records=7 "
                     "(`cdp consent backfill` records them once the purpose exists)"]
    assert sorted(e.purpose for e in entries(crt)) == ["email_marketing"] * 7  # the known purpose landed


def test_consents_follow_merges_to_the_survivor_and_back_on_undo(crt):
    a = ingest_batch(crt, "crm", [record("A", cpf=CPF_A)]).results[0].record_id
    b = ingest_batch(crt, "forms", [record("B", email="bia@example.com", consents=[GRANT])]).results[0].record_id
    by_cpf, by_email = profile_of(crt, a), profile_of(crt, b)
    assert by_cpf != by_email
    assert allowed(crt, [by_cpf, by_email]) == {by_email}
    # A record carrying both identifiers merges them into the older profile.
    ingest_batch(crt, "erp", [record("C", cpf=CPF_A, email="bia@example.com")])
    assert profile_of(crt, b) == by_cpf
    assert allowed(crt, [by_cpf, by_email]) == {by_cpf}  # the grant follows the survivor
    # A revocation sent for the survivor removes it at once.
    with crt.session() as session:
        ledger.record(session, crt.keys(session), by_cpf, "email_marketing", "revoked", method="api",
                      collector="api:test", evidence={"channel": "app"})
    assert allowed(crt, [by_cpf]) == set()
    # Undo the merge: the absorbed profile comes back with its own entries only.
    with crt.session() as session:
        merge_id = session.scalar(select(MergeEvent.id).where(MergeEvent.kind == "merge"))
        Resolver(session, crt.keys(session), crt.settings).undo_merge(merge_id, actor="test")
    assert allowed(crt, [by_cpf, by_email]) == {by_email}
    assert verify(crt)["ok"]


def test_records_without_consents_append_nothing(crt):
    ingest_batch(crt, "crm", [record(f"N-{i}", email=f"n{i}@example.com") for i in range(5)])
    with crt.session() as session:
        assert session.scalar(select(func.count()).select_from(LedgerEntry)) == 0
