"""Request types other than erasure, deadlines, disclosures, notifications
and the promise that nothing personal is stored in clear along the way."""
from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from cdp.disclosures import Recipient, disclosures_for, processing_records, record_disclosures
from cdp.ingest import ingest_batch
from cdp.models import Profile
from consent.dsr import service
from consent.dsr.deadlines import BRASILIA, due_at
from consent.dsr.models import DsrEvent, DsrRequest, DsrStep, DsrSystem
from consent.dsr.report import render_html
from tests.conftest import make_runtime, make_settings
from tests.dsr.conftest import VICTIM, add_person, outbox_for, verified_request

PII = ["helena.prado@example.com", "Helena", "52998224725", "5511988881234", "98888"]


def _result(runtime, request_id):
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id)
        return service.decrypt_for(runtime.keys(session), req, "result", req.result_ct)


def test_deadline_is_fifteen_days_end_of_day_in_brasilia_and_doubles_for_small_agents(tmp_path):
    # 23:30 in Brasília on 28 Feb is already 1 March in UTC: the day of the request is Brasília's.
    received = datetime(2026, 3, 1, 2, 30, tzinfo=timezone.utc)
    due = due_at(received, 15)
    assert due.astimezone(BRASILIA).isoformat() == "2026-03-15T23:59:59-03:00"
    from consent.dsr.deadlines import deadline_days
    from cdp.config import Settings

    assert deadline_days(Settings.from_env({"CDP_INSTANCE_PATH": str(tmp_path)})) == 15
    assert deadline_days(Settings.from_env({"CDP_INSTANCE_PATH": str(tmp_path), "CDP_SMALL_AGENT": "1"})) == 30
    assert deadline_days(Settings.from_env({"CDP_INSTANCE_PATH": str(tmp_path), "CDP_DSR_DEADLINE_DAYS": "10",
                                            "CDP_SMALL_AGENT": "1"})) == 20


def test_overdue_and_due_soon_queries(runtime):
    a = service.open_request(runtime, type="access", identifiers={"email": "a@example.com"})
    b = service.open_request(runtime, type="deletion", identifiers={"email": "b@example.com"})
    c = service.open_request(runtime, type="access", identifiers={"email": "c@example.com"})
    with runtime.session() as session:
        past = datetime.now(timezone.utc) - timedelta(days=1)
        session.execute(update(DsrRequest).where(DsrRequest.id.in_([a.request_id, c.request_id]))
                        .values(due_at=past))
    service.pause(runtime, c.request_id, actor="staff:dpo", reason="aguardando documento do titular")
    assert [r["id"] for r in service.overdue(runtime)] == [a.request_id]  # paused requests are not overdue
    assert {r["id"] for r in service.due_soon(runtime, 3)} == {a.request_id, c.request_id}
    assert {r["id"] for r in service.due_soon(runtime, 20)} == {a.request_id, b.request_id, c.request_id}
    with pytest.raises(service.DsrError) as err:
        service.extend(runtime, b.request_id, actor="staff:dpo", reason=" ", days=3)
    assert err.value.field == "reason"
    before = service.get_request(runtime, b.request_id)["due_at"]
    after = service.extend(runtime, b.request_id, actor="staff:dpo", reason="volume alto", days=15)
    assert after["due_at"] > before
    event = [e for e in after["audit"] if e["action"] == "deadline_extended"][0]
    assert event["has_note"] and event["actor"] == "staff:dpo" and set(event["detail"]) == {"from", "to"}


def test_confirmation_consent_info_and_sharing_info(any_runtime):
    pid = add_person(any_runtime, VICTIM)
    with any_runtime.session() as session:
        record_disclosures(session, Recipient("destination", "rd-station", "RD Station"), "email_marketing",
                           [pid], ["email", "full_name"])
        record_disclosures(session, Recipient("api_key", "7", "crm-parceiro"), "analytics", [pid], ["city"])
    confirmation = verified_request(any_runtime, "confirmation", {"email": VICTIM["email"]})
    answer = _result(any_runtime, confirmation.request_id)
    assert answer["processing"] is True and answer["sources"] == ["crm"] and answer["records"] == 1
    assert "Confirmação de tratamento" in render_html(answer)

    info = verified_request(any_runtime, "consent_info", {"email": VICTIM["email"]}, language="en")
    answer = _result(any_runtime, info.request_id)
    assert answer["language"] == "en" and answer["article"] == "Art. 18, VIII"
    html = render_html(answer)
    assert "Information about consent" in html

    sharing = verified_request(any_runtime, "sharing_info", {"email": VICTIM["email"]})
    answer = _result(any_runtime, sharing.request_id)
    assert {(d["recipient_name"], d["purpose"]) for d in answer["disclosures"]} == \
        {("RD Station", "email_marketing"), ("crm-parceiro", "analytics")}
    assert "source_records" not in answer  # only what was shared
    assert "RD Station" in render_html(answer)

    # Erasure tells every recipient too (Art. 18 §6): each one a task until confirmed.
    deletion = verified_request(any_runtime, "deletion", {"email": VICTIM["email"]})
    view = service.execute(any_runtime, deletion.request_id, actor="staff:dpo")
    assert {s["system"] for s in view["systems"]} == {"source:crm", "destination:destination:rd-station",
                                                      "recipient:api_key:7"}
    assert view["status"] == "in_progress"
    with any_runtime.session() as session:
        assert len(disclosures_for(session, pid)) == 2  # the Art. 37 record stays (ids only)


def test_processing_records_export(runtime):
    with runtime.session() as session:
        record_disclosures(session, Recipient("destination", "rd", "RD Station"), "email_marketing",
                           ["p1", "p2", "p3"], ["email"])
        record_disclosures(session, Recipient("destination", "rd", "RD Station"), "email_marketing", ["p1"], ["email"])
        record_disclosures(session, Recipient("api_key", "9", "bi"), "analytics", ["p2"], ["city", "state"])
        data = json.loads(processing_records(session, "json"))
        csv_text = processing_records(session, "csv")
    rows = {(r["recipient_name"], r["purpose"]): r for r in data["processing_records"]}
    assert rows[("RD Station", "email_marketing")]["profiles"] == 3
    assert rows[("RD Station", "email_marketing")]["disclosures"] == 4
    assert rows[("bi", "analytics")]["fields"] == ["city", "state"]
    assert csv_text.splitlines()[0].startswith("recipient_type,recipient_id,recipient_name,purpose,fields")
    assert "city;state" in csv_text


def test_correction_wins_over_a_later_sync(runtime):
    from cdp.profiles import profile_view

    pid = add_person(runtime, VICTIM)
    opened = verified_request(runtime, "correction", {"email": VICTIM["email"]}, details={"changes": {
        "traits": {"full_name": "Helena Prado Siqueira Lima"}, "identifiers": {"email": "helena.lima@example.com"}}})
    view = service.execute(runtime, opened.request_id, actor="staff:dpo")
    assert [s["system"] for s in view["systems"]] == ["source:crm"]  # asked to correct upstream too
    with runtime.session() as session:
        golden = profile_view(session, runtime.keys(session), session.get(Profile, pid))["attributes"]
    assert golden["full_name"] == "Helena Prado Siqueira Lima" and golden["email"] == "helena.lima@example.com"
    # The CRM syncs again with its old, wrong name (and a new city): the correction holds.
    ingest_batch(runtime, "crm", [{"external_id": "crm-529", "identifiers": {"email": VICTIM["email"],
                                                                           "cpf": VICTIM["cpf"]},
                                   "traits": {"full_name": VICTIM["name"], "city": "Campinas"}}])
    with runtime.session() as session:
        golden = profile_view(session, runtime.keys(session), session.get(Profile, pid))["attributes"]
    assert golden["full_name"] == "Helena Prado Siqueira Lima"
    service.confirm_system(runtime, opened.request_id, "source:crm", actor="staff:dpo")
    assert service.get_request(runtime, opened.request_id)["status"] == "completed"


@pytest.mark.skipif(importlib.util.find_spec("consent.ledger") is None, reason="consent ledger not installed yet")
def test_consent_revocation_through_a_request(runtime):
    from consent import ledger
    from consent.purposes import DEFAULT_NOTICE, seed_defaults

    pid = add_person(runtime, VICTIM)
    with runtime.session() as session:
        seed_defaults(session)
        ledger.append(session, runtime.keys(session), profile_id=pid, purpose="email_marketing", action="granted",
                      source="console", evidence={"channel": "checkout", "notice_version": DEFAULT_NOTICE},
                      notice_version=DEFAULT_NOTICE)
        assert ledger.allowed(session, [pid], "email_marketing") == {pid}
    opened = verified_request(runtime, "consent_revocation", {"email": VICTIM["email"]})
    view = service.get_request(runtime, opened.request_id)
    assert view["status"] == "completed"
    with runtime.session() as session:
        assert ledger.allowed(session, [pid], "email_marketing") == set()
        history = ledger.history(session, runtime.keys(session), pid, "email_marketing")
    assert history[-1]["action"] == "revoked" and history[-1]["method"] == "dsr"
    done = [m for m in outbox_for(runtime, opened.request_id) if m["template"] == "completed"][0]
    assert "email_marketing" in done["body"]


def test_automated_decision_review_is_answered_by_a_person(runtime):
    add_person(runtime, VICTIM)
    opened = verified_request(runtime, "automated_review", {"email": VICTIM["email"]},
                              details={"decision": "limite de crédito negado"})
    with pytest.raises(service.InvalidState):
        service.execute(runtime, opened.request_id, actor="staff:dpo")
    view = service.respond(runtime, opened.request_id, actor="staff:analista",
                           message="Revisamos a decisão: o critério foi renda declarada; o limite foi revisto.")
    assert view["status"] == "completed" and view["outcome"] == "answered"
    done = [m for m in outbox_for(runtime, opened.request_id) if m["template"] == "completed"][0]
    assert "Revisamos a decisão" in done["body"]


def test_blocking_keeps_data_but_holds_back_new_records(runtime):
    pid = add_person(runtime, VICTIM)
    opened = verified_request(runtime, "blocking", {"email": VICTIM["email"]})
    view = service.execute(runtime, opened.request_id, actor="staff:dpo")
    assert view["status"] == "completed"
    with runtime.session() as session:
        assert session.get(Profile, pid).status == "blocked"
    again = ingest_batch(runtime, "loja", [{"external_id": "L1", "identifiers": {"cpf": VICTIM["cpf"]}}])
    assert again.counts()["suppressed"] == 1


def test_messages_go_out_by_smtp_in_the_subjects_language(tmp_path):
    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        runtime = make_runtime(make_settings(tmp_path / "instance",
                                             smtp_url=f"smtp://127.0.0.1:{port}?from=lgpd@loja.example"))
        add_person(runtime, VICTIM)
        opened = service.open_request(runtime, type="access", identifiers={"email": VICTIM["email"]}, language="en")
        assert service.dispatch_codes(runtime, opened.request_id) == 1
    finally:
        controller.stop()
    assert len(sink.messages) == 1
    envelope = sink.messages[0]
    assert envelope.rcpt_tos == [VICTIM["email"]] and envelope.mail_from == "lgpd@loja.example"
    text = envelope.content.decode()
    assert "Verification code for your data request" in text
    with runtime.session() as session:
        from consent import notify

        assert notify.outbox(session, runtime.keys(session), opened.request_id) == []  # sent, then shredded
        sent = notify.outbox(session, runtime.keys(session), opened.request_id, status="sent")
    assert sent == []  # the text is no longer readable anywhere


def test_nothing_personal_in_clear_in_the_database_or_the_erasure_log(runtime):
    pid = add_person(runtime, VICTIM)
    with runtime.session() as session:
        record_disclosures(session, Recipient("destination", "rd", "RD Station"), "email_marketing", [pid], ["email"])
    access = verified_request(runtime, "access", {"email": VICTIM["email"], "cpf": VICTIM["cpf"]})
    denied = service.open_request(runtime, type="deletion", identifiers={"phone": VICTIM["phone"]})
    service.deny(runtime, denied.request_id, actor="staff:dpo", reason_code="other",
                 reason_text=f"Pedido duplicado de {VICTIM['email']}")
    deletion = verified_request(runtime, "deletion", {"email": VICTIM["email"]})
    service.execute(runtime, deletion.request_id, actor="staff:dpo")
    assert service.get_request(runtime, access.request_id)["status"] == "completed"
    with runtime.session() as session:
        clear = [json.dumps(e.detail) + e.actor for e in session.scalars(select(DsrEvent))]
        clear += [json.dumps(s.state) for s in session.scalars(select(DsrStep))]
        clear += [str(s.detail) for s in session.scalars(select(DsrSystem))]
    assert not any(v.lower() in "\n".join(clear).lower() for v in PII)
    db = runtime.settings.instance_path / "cdp.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = db.read_bytes() + runtime.settings.erasure_log.read_bytes()
    assert [v for v in PII if v.encode() in blob] == []


def test_housekeeping_expires_unverified_and_shreds_closed_requests(runtime):
    from cdp import crypto

    add_person(runtime, VICTIM)
    stale = service.open_request(runtime, type="access", identifiers={"email": VICTIM["email"]})
    done = verified_request(runtime, "access", {"email": VICTIM["email"]})
    with runtime.session() as session:
        old = datetime.now(timezone.utc) - timedelta(days=40)
        session.execute(update(DsrRequest).where(DsrRequest.id == stale.request_id).values(created_at=old))
        session.execute(update(DsrRequest).where(DsrRequest.id == done.request_id).values(closed_at=old))
        key_id = session.get(DsrRequest, done.request_id).key_id
    assert service.expire_unverified(runtime) == 1
    shown = service.subject_status(runtime, stale.request_id, stale.token)
    assert shown["status"] == "denied" and shown["denial"]["code"] == "identity_not_verified"
    assert service.purge_closed(runtime) >= 1
    with runtime.session() as session:
        req = session.get(DsrRequest, done.request_id)
        assert req.result_ct is None and req.claims_ct is None and req.purged_at is not None
        with pytest.raises(crypto.DecryptionError):
            runtime.keys(session).get(key_id)
    assert "downloads" not in service.subject_status(runtime, done.request_id, done.token)
    assert service.get_request(runtime, done.request_id)["audit"][-1]["action"] == "personal_data_purged"


def test_erasing_a_blocked_subject_makes_the_suppression_permanent(runtime):
    from consent.dsr.models import Suppression
    from consent.suppression import lift

    add_person(runtime, VICTIM)
    blocking = verified_request(runtime, "blocking", {"email": VICTIM["email"]})
    service.execute(runtime, blocking.request_id, actor="staff:dpo")
    deletion = verified_request(runtime, "deletion", {"email": VICTIM["email"]})
    assert len(service.get_request(runtime, deletion.request_id)["profile_ids"]) == 1  # blocked data is still held
    view = service.execute(runtime, deletion.request_id, actor="staff:dpo")
    service.confirm_system(runtime, deletion.request_id, "source:crm", actor="staff:dpo")
    with runtime.session() as session:
        assert {s.mode for s in session.scalars(select(Suppression))} == {"erase"}
        assert lift(session, blocking.request_id) == 0  # unblocking can no longer let the person back in
    assert ingest_batch(runtime, "loja", [{"external_id": "x", "identifiers": {"cpf": VICTIM["cpf"]}}]) \
        .counts()["suppressed"] == 1
    assert view["status"] == "in_progress"
