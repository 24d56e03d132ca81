"""Erasure: crypto-shredding, suppression, the fence against ingestion,
legal holds, resumable steps, downstream systems and the erasure log."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import delete, func, insert, select, update

from cdp import crypto
from cdp.ingest import ingest_batch
from cdp.models import DataKey, Event, Identifier, Profile, RecordVersion, SourceRecord
from cdp.profiles import lookup
from consent.dsr import execute as ex
from consent.dsr import service
from consent.dsr.models import ErasureEntry, Suppression
from tests.dsr.conftest import VICTIM, add_person, blind_index_hits, outbox_for, verified_request

PII = ["helena.prado@example.com", "Helena", "52998224725", "5511988881234", "98888"]


def _erase(runtime, type_="deletion", confirm=True) -> str:
    opened = verified_request(runtime, type_, {"email": VICTIM["email"]})
    service.execute(runtime, opened.request_id, actor="staff:dpo")
    if confirm:
        view = service.get_request(runtime, opened.request_id)
        for system in view["systems"]:
            if system["status"] == "manual":
                service.confirm_system(runtime, opened.request_id, system["system"], actor="staff:dpo")
    return opened.request_id


def _ciphertexts(runtime, profile_id: str) -> list[tuple[str, bytes, tuple]]:
    """Every ciphertext of the subject, as a backup would hold it."""
    out = []
    with runtime.session() as session:
        profile = session.get(Profile, profile_id)
        out.append((profile.key_id, profile.golden_ct, ("profiles", profile.id, "golden")))
        for r in session.scalars(select(SourceRecord).where(SourceRecord.profile_id == profile_id)):
            out.append((r.key_id, r.payload_ct, ("source_records", r.id, "payload")))
            out.append((r.key_id, r.external_id_ct, ("source_records", r.id, "external_id")))
            for e in session.scalars(select(Event).where(Event.record_id == r.id)):
                out.append((r.key_id, e.attributes_ct, ("events", e.id, "attributes")))
            for v in session.scalars(select(RecordVersion).where(RecordVersion.record_id == r.id)):
                out.append((r.key_id, v.payload_ct, ("record_versions", f"{r.id}:{v.version}", "payload")))
    return out


def _person_with_history(runtime) -> str:
    pid = add_person(runtime, VICTIM, events=[{"type": "purchase", "occurred_at": "2026-03-01T10:00:00-03:00",
                                              "amount": "99.90", "attributes": {"nota": "entregar a Helena"}}])
    # A second version (old values kept) and a second source.
    add_person(runtime, {**VICTIM, "name": "Helena P. Siqueira"})
    add_person(runtime, VICTIM, source="loja", external_id="L-77")
    return pid


def _active_with_victim(runtime) -> list[str]:
    with runtime.session() as session:
        return lookup(session, runtime.keyring, {"cpf": VICTIM["cpf"]}) + \
            lookup(session, runtime.keyring, {"email": VICTIM["email"]})


def test_after_deletion_nothing_decrypts_nothing_matches_nothing_comes_back(any_runtime):
    pid = _person_with_history(any_runtime)
    backup = _ciphertexts(any_runtime, pid)
    assert len(backup) >= 6
    with any_runtime.session() as session:  # readable before
        keys = any_runtime.keys(session)
        for key_id, ct, aad in backup:
            crypto.decrypt_json(keys.get(key_id), ct, *aad)

    request_id = _erase(any_runtime)

    assert service.get_request(any_runtime, request_id)["status"] == "completed"
    with any_runtime.session() as session:
        keys = any_runtime.keys(session)
        for key_id, _ct, _aad in backup:
            with pytest.raises(crypto.DecryptionError):
                keys.get(key_id)
        profile = session.get(Profile, pid)
        assert (profile.status, profile.golden_ct, profile.provenance, profile.record_count) == ("deleted", None, {}, 0)
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == 0
        # No foreign key keeps identifier rows from outliving their records: erasure must delete them.
        assert session.scalar(select(func.count()).select_from(Identifier)) == 0
        assert session.scalar(select(func.count()).select_from(Event)) == 0
        assert session.scalar(select(func.count()).select_from(RecordVersion)) == 0
    assert blind_index_hits(any_runtime, VICTIM) == 0
    assert _active_with_victim(any_runtime) == []

    # The same source records again (a re-sync), and a new record from a new source.
    again = ingest_batch(any_runtime, "crm", [{"external_id": "crm-529", "identifiers": {"cpf": VICTIM["cpf"]}}])
    fresh = ingest_batch(any_runtime, "nps", [{"external_id": "N1", "identifiers": {"email": VICTIM["email"]},
                                               "traits": {"full_name": "Helena Prado"}}])
    assert again.counts()["suppressed"] == 1 and fresh.counts()["suppressed"] == 1
    assert _active_with_victim(any_runtime) == [] and blind_index_hits(any_runtime, VICTIM) == 0
    with any_runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(Profile).where(Profile.status == "active")) == 0


def test_relatives_sharing_a_contact_are_not_suppressed(runtime):
    add_person(runtime, VICTIM)
    _erase(runtime)
    # The son uses the family phone but has his own CPF: he is someone else.
    son = ingest_batch(runtime, "crm", [{"external_id": "son", "identifiers": {"phone": VICTIM["phone"],
                                                                             "cpf": "390.533.447-05"}}])
    assert son.counts()["accepted"] == 1


def test_deletion_racing_ingestion_does_not_rebuild_the_profile(any_runtime, monkeypatch, caplog):
    add_person(any_runtime, VICTIM)
    real_step = ex._run_step
    arrived = {}

    def racing(runtime, request_id, name):
        closed = real_step(runtime, request_id, name)
        if name == "snapshot" and "during" not in arrived:
            # A sync delivers a record of the subject while the erasure runs, before suppression commits.
            arrived["during"] = ingest_batch(runtime, "loja", [{
                "external_id": "PED-9", "identifiers": {"cpf": VICTIM["cpf"], "email": VICTIM["email"]},
                "traits": {"full_name": "Helena Prado"}}]).counts()
        if name == "shred" and "after_suppress" not in arrived:
            arrived["after_suppress"] = ingest_batch(runtime, "nps", [{
                "external_id": "N-1", "identifiers": {"email": VICTIM["email"]}}]).counts()
        return closed

    monkeypatch.setattr(ex, "_run_step", racing)
    caplog.set_level(logging.INFO)
    request_id = _erase(any_runtime)

    assert arrived["during"]["accepted"] == 1  # it got in (the suppression did not exist yet)...
    assert arrived["after_suppress"]["suppressed"] == 1  # ...later ones were held back by the fence
    view = service.get_request(any_runtime, request_id)
    sweep = next(s for s in view["steps"] if s["name"] == "sweep")
    assert sweep["status"] == "done"
    assert view["status"] == "completed"
    # ...and the sweep erased the one that got in: no profile, no record, no index of the subject.
    assert _active_with_victim(any_runtime) == []
    assert blind_index_hits(any_runtime, VICTIM) == 0
    with any_runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == 0
        assert session.scalar(select(func.count()).select_from(Profile).where(Profile.status == "active")) == 0
    after = ingest_batch(any_runtime, "loja", [{"external_id": "PED-10", "identifiers": {"cpf": VICTIM["cpf"]}}])
    assert after.counts()["suppressed"] == 1
    hits = [r for r in caplog.records if "suppressed record rejected" in r.getMessage()]
    assert len(hits) >= 2
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(v in logged for v in PII)


def test_crash_between_steps_shows_on_the_request_and_a_rerun_finishes(any_runtime, monkeypatch):
    pid = _person_with_history(any_runtime)
    backup = _ciphertexts(any_runtime, pid)

    def crash(ctx):
        raise RuntimeError(f"power cut while erasing {VICTIM['email']}")

    monkeypatch.setitem(ex.STEPS, "shred", crash)
    opened = verified_request(any_runtime, "deletion", {"email": VICTIM["email"]})
    view = service.execute(any_runtime, opened.request_id, actor="staff:dpo")

    steps = {s["name"]: s for s in view["steps"]}
    assert view["status"] == "in_progress"
    assert [steps[n]["status"] for n in ("scope", "snapshot", "suppress", "shred", "purge")] == \
        ["done", "done", "done", "failed", "pending"]
    assert steps["shred"]["error"] == "RuntimeError"  # the class, never the message
    assert "helena" not in str(view).lower()
    with any_runtime.session() as session:
        assert session.get(Profile, pid).status == "erasing"  # fenced: nothing attaches to it meanwhile
    assert ingest_batch(any_runtime, "nps", [{"external_id": "x", "identifiers": {"cpf": VICTIM["cpf"]}}]) \
        .counts()["suppressed"] == 1

    monkeypatch.undo()  # the cause is fixed; the request is run again
    view = service.execute(any_runtime, opened.request_id, actor="staff:dpo")
    for system in view["systems"]:
        service.confirm_system(any_runtime, opened.request_id, system["system"], actor="staff:dpo")
    view = service.get_request(any_runtime, opened.request_id)
    assert view["status"] == "completed"
    assert {s["name"]: s["attempts"] for s in view["steps"]}["snapshot"] == 1  # done steps were not redone
    with any_runtime.session() as session:
        keys = any_runtime.keys(session)
        for key_id, _ct, _aad in backup:
            with pytest.raises(crypto.DecryptionError):
                keys.get(key_id)
    assert blind_index_hits(any_runtime, VICTIM) == 0


def test_legal_hold_keeps_blocked_data_and_says_so(any_runtime):
    from consent.erasure import add_legal_hold

    add_legal_hold(any_runtime, source="erp_notas", reason="CTN art. 195: notas fiscais guardadas por 5 anos",
                   retention_days=1825, actor="staff:dpo")
    add_person(any_runtime, VICTIM)
    invoice_profile = add_person(any_runtime, VICTIM, source="erp_notas", external_id="NF-1001", events=[
        {"type": "invoice", "occurred_at": "2026-03-01T10:00:00-03:00", "amount": "350.00"}])
    with any_runtime.session() as session:
        invoice = session.scalar(select(SourceRecord).where(SourceRecord.source == "erp_notas"))
        invoice_id, invoice_key = invoice.id, invoice.key_id

    request_id = _erase(any_runtime)

    view = service.get_request(any_runtime, request_id)
    assert view["status"] == "completed"
    with any_runtime.session() as session:
        kept = session.get(SourceRecord, invoice_id)
        assert kept is not None and kept.status == "blocked" and kept.profile_id is None
        payload = crypto.decrypt_json(any_runtime.keys(session).get(invoice_key), kept.payload_ct,
                                      "source_records", kept.id, "payload")
        assert payload["traits"]["full_name"] == VICTIM["name"]  # kept, readable for the legal purpose
        assert session.scalar(select(func.count()).select_from(SourceRecord)
                              .where(SourceRecord.source == "crm")) == 0
        assert session.get(Profile, invoice_profile).status == "deleted"
        # Blocked from every other use: no profile, no lookup, no resolution.
        assert session.scalar(select(func.count()).select_from(Event).where(Event.profile_id.is_not(None))) == 0
    assert _active_with_victim(any_runtime) == []
    done = [m for m in outbox_for(any_runtime, request_id) if m["template"] == "completed"][0]
    assert "mantidos por obrigação legal" in done["body"] and "CTN art. 195" in done["body"]
    snapshot = next(s for s in view["steps"] if s["name"] == "snapshot")
    assert snapshot["status"] == "done"


class _ErasableSource:
    """A source connector whose system can erase subjects — or fail to."""


@pytest.fixture
def erasable_plugin(monkeypatch):
    from marshmallow import Schema

    from cdp import plugins
    from cdp.connectors import ActionResult, ConnectorError, SourceConnector
    from cdp.hookspecs import hookimpl

    calls = {"n": 0, "fail": True, "subjects": []}

    class Erasable(SourceConnector):
        name = "test_erasable"
        config_schema = Schema

        def read(self, stream, cursor=None, batch_size=500):
            return iter(())

        def on_subject_request(self, action, subject):
            calls["n"] += 1
            calls["subjects"].append((action, list(subject.external_ids)))
            if calls["fail"]:
                raise ConnectorError("test_erasable: upstream API unavailable")
            return ActionResult("done", "apagado")

    class Plugin:
        @hookimpl
        def cdp_source_types(self):
            return [Erasable]

    pm = plugins.manager()
    plugin = Plugin()
    pm.register(plugin, name="test-erasable")
    plugins._types.cache_clear()
    yield calls
    pm.unregister(plugin)
    plugins._types.cache_clear()


def test_request_never_completes_while_a_system_is_open(runtime, erasable_plugin):
    from cdp.ingest import ensure_source

    with runtime.session() as session:
        ensure_source(session, "shop", plugin="test_erasable").config = {}  # a configured source
    add_person(runtime, VICTIM)  # crm: records pushed through the API, no connector -> a manual task
    add_person(runtime, VICTIM, source="shop", external_id="SHOP-1")
    opened = verified_request(runtime, "deletion", {"email": VICTIM["email"]})

    with pytest.raises(ex.StepFailed):
        ex.run_request(runtime, opened.request_id)
    view = service.get_request(runtime, opened.request_id)
    systems = {s["system"]: s["status"] for s in view["systems"]}
    assert systems == {"source:crm": "manual", "source:shop": "failed"}
    assert view["status"] == "in_progress"
    assert erasable_plugin["subjects"][0] == ("delete", ["SHOP-1"])

    erasable_plugin["fail"] = False  # the upstream API is back: a retry asks only the failed system
    ex.run_request(runtime, opened.request_id)
    view = service.get_request(runtime, opened.request_id)
    assert {s["system"]: s["status"] for s in view["systems"]} == {"source:crm": "manual", "source:shop": "done"}
    assert view["status"] == "in_progress" and view["outcome"] == "awaiting_systems" and view["open_systems"] == 1
    assert erasable_plugin["n"] == 2
    ex.run_request(runtime, opened.request_id)  # running again changes nothing while a person has not confirmed
    assert service.get_request(runtime, opened.request_id)["status"] == "in_progress"

    view = service.confirm_system(runtime, opened.request_id, "source:crm", actor="staff:dpo", note="apagado no CRM")
    assert view["status"] == "completed" and view["open_systems"] == 0
    actions = [e["action"] for e in view["audit"]]
    assert actions.index("system_confirmed") < actions.index("completed")


def _rows(session, model) -> list[dict]:
    table = model.__table__
    return [dict(r._mapping) for r in session.execute(select(table))]


def test_erasure_log_reapplied_after_a_restore(any_runtime):
    from consent.erasure import log_path, reapply_erasures

    pid = _person_with_history(any_runtime)
    with any_runtime.session() as session:  # the nightly backup, taken before the request
        backup = {m: _rows(session, m) for m in (DataKey, Profile, SourceRecord, RecordVersion, Identifier, Event)}
    _erase(any_runtime)
    assert log_path(any_runtime.settings).exists()
    text = log_path(any_runtime.settings).read_text()
    assert not any(v in text for v in PII)  # ids and keyed hashes only

    # Restore the backup: keys, profile and records come back, and the
    # suppression list and the log mirror are as old as the backup (empty).
    with any_runtime.session() as session:
        session.execute(delete(Suppression))
        session.execute(delete(ErasureEntry))
        for row in backup[DataKey]:
            session.execute(update(DataKey).where(DataKey.id == row["id"]).values(**row))
        for row in backup[Profile]:
            session.execute(update(Profile).where(Profile.id == row["id"]).values(**row))
        for model in (SourceRecord, RecordVersion, Identifier, Event):
            if backup[model]:
                session.execute(insert(model.__table__), backup[model])
    assert pid in _active_with_victim(any_runtime)  # the backup brought her back
    assert blind_index_hits(any_runtime, VICTIM) > 0

    totals = reapply_erasures(any_runtime)

    assert totals["entries"] == 1 and totals["refused_lines"] == 0 and totals["keys_destroyed"] >= 3
    assert _active_with_victim(any_runtime) == [] and blind_index_hits(any_runtime, VICTIM) == 0
    with any_runtime.session() as session:
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == 0
        assert session.get(Profile, pid).status == "deleted"
        assert session.scalar(select(func.count()).select_from(DataKey).where(
            DataKey.id.in_([r["key_id"] for r in backup[SourceRecord]]), DataKey.wrapped.is_not(None))) == 0
        assert session.scalar(select(func.count()).select_from(ErasureEntry)) == 1
    again = ingest_batch(any_runtime, "crm", [{"external_id": "crm-529", "identifiers": {"cpf": VICTIM["cpf"]}}])
    assert again.counts()["suppressed"] == 1
    assert reapply_erasures(any_runtime)["keys_destroyed"] == 0  # idempotent


def test_tampered_erasure_log_line_is_refused(runtime):
    from consent.erasure import log_path, reapply_erasures

    add_person(runtime, VICTIM)
    _erase(runtime)
    path = log_path(runtime.settings)
    path.write_text(path.read_text().replace('"records": [', '"records": ["00000000-0000-0000-0000-000000000000", '))
    totals = reapply_erasures(runtime)
    assert totals["entries"] == 0 and totals["refused_lines"] == 1
