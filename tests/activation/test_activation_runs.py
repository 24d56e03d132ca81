"""Activation runs against real local HTTP receivers: a Mailchimp-shaped
list kept in step with a segment (adds, removes after leaving the segment
and after consent revocation), holdouts, the failure registry and re-drives
with the same idempotency key, disclosures only for what was acknowledged."""
from __future__ import annotations

import hashlib
import logging

import pytest
from sqlalchemy import func, select

from activation.destinations import ActivationError, add_destination, build_destination
from activation.metrics import holdout_bucket
from activation.models import Segment
from activation.run_models import ActivationMember, Delivery
from activation.runs import (create_activation, discard, failures, in_holdout, list_runs, retry, set_active,
                             submit_run)
from activation.segments import refresh_members, update_segment
from cdp import http as cdp_http
from cdp.connectors import AuthError
from cdp.disclosures import Disclosure
from plugins.email_list import EmailListDestination, subscriber_hash
from tests.activation.fakes import MC_KEY, MailchimpFake, WebhookReceiver
from tests.activation.fixtures import NOW
from tests.activation.test_members_gate import _setup
from tests.consent.helpers import grant

EMAILS = {name: f"{name}@exemplo.com.br" for name in ("p1", "p2", "p3", "p4", "p5", "p6")}
CONSENTED = {"p1", "p2", "p4", "p6"}  # _setup grants e-mail marketing to these


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    # The HTTP kit's retries (the one retry layer), fast: 3 attempts, tiny backoff.
    monkeypatch.setattr(cdp_http, "DEFAULT_RETRY", cdp_http.RetryPolicy(retries=2, backoff=0.01, retry_after_max=1))


@pytest.fixture
def mailchimp():
    with MailchimpFake() as server:
        yield server


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


def _destination(rt, name, type_name, config):
    with rt.session() as s:
        return add_destination(s, rt.keys(s), name, type_name, config).id


def _activation(rt, sid, dest, fields=("email", "first_name"), **kw):
    with rt.session() as s:
        return create_activation(s, kw.pop("name", "newsletter"), sid, dest, "email_marketing", list(fields),
                                 **kw).id


def _disclosed(rt) -> list[str]:
    with rt.session() as s:
        return list(s.scalars(select(Disclosure.profile_id).where(Disclosure.recipient_type == "destination")))


def test_list_destination_follows_segment_and_consent(any_runtime, mailchimp):
    rt = any_runtime
    people, sid = _setup(rt)
    by_id = {v: k for k, v in people.items()}
    _destination(rt, "mc", "email_list", mailchimp.config())
    aid = _activation(rt, sid, "mc", batch_size=3)

    first = submit_run(rt, aid)
    assert (first["status"], first["added"], first["removed"], first["sent"]) == ("ok", 4, 0, 4)
    assert first["skipped_consent"] == 2 and first["held_out"] == 0 and first["deliveries"] == 2  # 3 + 1
    assert mailchimp.subscribed() == {EMAILS[n] for n in CONSENTED}
    assert sorted(by_id[p] for p in _disclosed(rt)) == sorted(CONSENTED)
    with rt.session() as s:
        d = s.scalars(select(Disclosure).where(Disclosure.recipient_type == "destination")).first()
        assert (d.recipient_id, d.purpose, d.fields) == ("email_list:mc", "email_marketing",
                                                         ["email", "first_name", "profile_id"])
        # The reference the list knows a member by is kept, encrypted: no e-mail in clear.
        refs = s.scalars(select(ActivationMember.ref_ct)).all()
        assert len(refs) == 4 and all(r and b"exemplo" not in r for r in refs)

    puts = len(mailchimp.hits(method="PUT"))
    again = submit_run(rt, aid)  # nothing changed: nothing sent, nothing disclosed
    assert (again["sent"], again["deliveries"]) == (0, 0)
    assert len(mailchimp.hits(method="PUT")) == puts and len(_disclosed(rt)) == 4

    grant(rt, people["p2"], action="revoked")
    revoked = submit_run(rt, aid)
    assert (revoked["added"], revoked["removed"], revoked["skipped_consent"]) == (0, 1, 3)
    assert mailchimp.archived() == {EMAILS["p2"]}
    (delete,) = mailchimp.hits(method="DELETE")
    assert delete.path.endswith(subscriber_hash(EMAILS["p2"]))
    assert len(_disclosed(rt)) == 4  # a removal discloses nothing new

    # p4 (5 purchases) leaves the segment.
    with rt.session() as s:
        seg = s.get(Segment, sid)
        update_segment(s, seg, rules={"metric": "purchase_count", "op": "lte", "value": 4})
        refresh_members(s, seg, now=NOW)
    left = submit_run(rt, aid)
    assert (left["added"], left["removed"]) == (0, 1)
    assert mailchimp.subscribed() == {EMAILS["p1"], EMAILS["p6"]}
    assert len(_disclosed(rt)) == 4

    grant(rt, people["p2"])  # consents again: added again, and that is a new disclosure
    back = submit_run(rt, aid)
    assert (back["added"], back["removed"]) == (1, 0)
    assert mailchimp.subscribed() == {EMAILS[n] for n in ("p1", "p2", "p6")}
    assert sorted(by_id[p] for p in _disclosed(rt)) == sorted([*CONSENTED, "p2"])
    with rt.session() as s:
        assert [r["added"] for r in list_runs(s, aid)] == [1, 0, 0, 0, 4]


def test_a_paused_activation_adds_no_one_but_still_removes(runtime, mailchimp):
    """Privacy first: a pause never keeps a subject in a destination after they revoke consent."""
    people, sid = _setup(runtime)
    _destination(runtime, "mc", "email_list", mailchimp.config())
    aid = _activation(runtime, sid, "mc")
    assert submit_run(runtime, aid)["added"] == 4
    assert set_active(runtime, "newsletter", False)["active"] is False
    grant(runtime, people["p2"], action="revoked")
    grant(runtime, people["p3"])  # newly eligible while paused
    paused = submit_run(runtime, aid)
    assert (paused["status"], paused["added"], paused["removed"]) == ("ok", 0, 1)
    assert mailchimp.subscribed() == {EMAILS[n] for n in ("p1", "p4", "p6")}
    assert set_active(runtime, aid, True)["active"] is True
    resumed = submit_run(runtime, aid)
    assert (resumed["added"], resumed["removed"]) == (1, 0)
    assert mailchimp.subscribed() == {EMAILS[n] for n in ("p1", "p3", "p4", "p6")}


def test_discarded_deliveries_leave_the_registry_and_are_planned_again(runtime, mailchimp):
    people, sid = _setup(runtime)
    _destination(runtime, "mc", "email_list", mailchimp.config())
    aid = _activation(runtime, sid, "mc")
    mailchimp.fail("*", 503, times=100)
    down = submit_run(runtime, aid)
    assert down["status"] == "failed"
    with runtime.session() as s:
        (failed,) = failures(s, aid)
    with pytest.raises(ActivationError) as err:
        discard(runtime, [failed["id"], 999])
    assert (err.value.field, err.value.status) == ("delivery", 404)
    out = discard(runtime, [failed["id"]])
    assert out["discarded"] == 1 and out["deliveries"][0]["status"] == "discarded"
    with runtime.session() as s:
        assert failures(s) == []
        assert list_runs(s, aid)[0]["status"] == "partial"  # nothing was sent, nothing is pending
    with pytest.raises(ActivationError) as err:
        discard(runtime, [failed["id"]])
    assert err.value.status == 409  # no longer in the registry
    mailchimp.clear_faults()
    grant(runtime, people["p1"], action="revoked")  # the state changed meanwhile: the new plan follows it
    again = submit_run(runtime, aid)
    assert (again["status"], again["added"]) == ("ok", 3)
    assert mailchimp.subscribed() == {EMAILS[n] for n in ("p2", "p4", "p6")}


def test_list_retries_429_and_5xx_then_registers_the_failure_and_retry_sends_once(runtime, mailchimp, caplog):
    caplog.set_level(logging.DEBUG)
    people, sid = _setup(runtime)
    _destination(runtime, "mc", "email_list", mailchimp.config())
    aid = _activation(runtime, sid, "mc", batch_size=2)

    mailchimp.fail("*", 429, retry_after=0)
    mailchimp.fail("*", 503)
    ok = submit_run(runtime, aid)  # 429 and 503 absorbed by the kit's retries
    assert ok["status"] == "ok" and ok["added"] == 4
    assert [h.status for h in mailchimp.hits(method="PUT")][:3] == [429, 503, 200]

    grant(runtime, people["p1"], action="revoked")
    grant(runtime, people["p3"])
    grant(runtime, people["p5"])
    mailchimp.fail("*", 503, times=100)  # the list is down for good
    down = submit_run(runtime, aid)
    assert down["status"] == "failed" and down["sent"] == 0 and down["failed"] == 3  # p1 out, p3 + p5 in
    with runtime.session() as s:
        registry = failures(s, aid)
    assert [(f["op"], f["subjects"], f["attempts"]) for f in registry] == [("remove", 1, 1), ("add", 2, 1)]
    for f in registry:
        assert "email_list: " in f["last_error"] and "answered HTTP 503" in f["last_error"]
        assert "after 3 attempt(s)" in f["last_error"] and f["next_retry_at"]
    assert len(_disclosed(runtime)) == 4  # nothing acknowledged, nothing disclosed

    # While they are in the registry, a new run leaves their subjects alone (never two open deliveries).
    assert submit_run(runtime, aid)["deliveries"] == 0

    mailchimp.clear_faults()
    out = retry(runtime, activation_id=aid)
    assert out["retried"] == 2 and {d["status"] for d in out["deliveries"]} == {"done"}
    assert {d["idempotency_key"] for d in out["deliveries"]} == {f["idempotency_key"] for f in registry}
    assert mailchimp.subscribed() == {EMAILS[n] for n in ("p2", "p3", "p4", "p5", "p6")}
    assert mailchimp.archived() == {EMAILS["p1"]}
    with runtime.session() as s:
        assert failures(s) == []
        runs = list_runs(s, aid)
        assert runs[1]["status"] == "ok" and (runs[1]["added"], runs[1]["removed"]) == (2, 1)
    assert len(_disclosed(runtime)) == 6  # p3, p5 once each
    assert retry(runtime) == {"retried": 0, "deliveries": []}
    text = caplog.text + repr([r.args for r in caplog.records])
    assert not any(e in text for e in EMAILS.values())
    assert not any(subscriber_hash(e) in text for e in EMAILS.values())
    assert MC_KEY not in text


def test_list_401_is_a_named_error_and_bad_rows_are_refused_one_by_one(runtime, mailchimp):
    people, sid = _setup(runtime)
    bad = EmailListDestination(mailchimp.config(api_key="ffffffffffffffffffffffffffffffff-us21"))
    with pytest.raises(AuthError) as info:
        bad.check()
    assert str(info.value).startswith("email_list: credentials rejected (HTTP 401)") and "ffff" not in str(info.value)
    good = EmailListDestination(mailchimp.config())
    good.check()
    result = good.deliver([{"profile_id": "a", "email": "ana@exemplo.com.br"}, {"profile_id": "b", "email": None},
                           {"profile_id": "c", "email": "sem-arroba"}], "k")
    assert (result.delivered, result.failed) == (1, 2)
    assert [i for i, _ in result.errors] == [1, 2]
    # The refused address and its subscriber_hash (in the PUT path) must not reach the stored reason.
    assert not any(s in repr(result.errors) for s in ("sem-arroba", subscriber_hash("sem-arroba")))
    assert good.remove(["ninguem@exemplo.com.br"]).delivered == 1  # 404: already gone

    _destination(runtime, "mc_bad", "email_list", bad.config)
    aid = _activation(runtime, sid, "mc_bad")
    run = submit_run(runtime, aid)
    assert run["status"] == "failed"
    with runtime.session() as s:
        (failure,) = failures(s, aid)
    assert failure["last_error"].startswith("email_list: credentials rejected (HTTP 401)")


def test_holdout_members_are_never_sent(any_runtime, receiver):
    rt = any_runtime
    people, sid = _setup(rt)
    for name in ("p3", "p5"):
        grant(rt, people[name])  # everyone consents
    with rt.session() as s:
        seg = s.get(Segment, sid)
        buckets = {n: holdout_bucket(p) for n, p in people.items()}
        # a segment holdout that catches at least one member and not all
        seg.holdout_pct = sorted(buckets.values())[2] + 1 if sorted(buckets.values())[2] < 50 else 50
        seg_pct = seg.holdout_pct
    _destination(rt, "hook", "webhook", receiver.config())
    aid = _activation(rt, sid, "hook", fields=("email",), holdout_pct=50)
    with rt.session() as s:
        from activation.run_models import Activation

        act = s.get(Activation, aid)
        held = {n for n, p in people.items() if buckets[n] < seg_pct or in_holdout(act, p)}
    run = submit_run(rt, aid)
    sent = {n for n, p in people.items() if p in receiver.state}
    assert held and sent == set(people) - held
    assert run["held_out"] == len(held) and run["added"] == len(sent) and run["skipped_consent"] == 0
    assert {p for p in _disclosed(rt)} == {people[n] for n in sent}
    # Stable: the next run sends nobody new and removes nobody.
    assert submit_run(rt, aid)["sent"] == 0


def test_webhook_end_to_end_signed_keyed_and_a_lost_ack_is_not_a_duplicate(runtime, receiver):
    people, sid = _setup(runtime)
    _destination(runtime, "hook", "webhook", receiver.config())
    aid = _activation(runtime, sid, "hook", fields=("email", "ltv"))

    receiver.mode = "ack_lost"  # the receiver applies, then its answer is lost, three times
    run = submit_run(runtime, aid)
    assert run["status"] == "failed" and run["failed"] == 4
    with runtime.session() as s:
        (failure,) = failures(s, aid)
    key = failure["idempotency_key"]
    assert receiver.key_hits[key] == 3 and len(receiver.applied) == 1  # retried, applied once
    assert _disclosed(runtime) == []

    receiver.mode = "up"
    retry(runtime, [failure["id"]])
    assert receiver.key_hits[key] == 4 and len(receiver.applied) == 1
    assert set(receiver.upserts.values()) == {1} and len(receiver.upserts) == 4
    assert len(_disclosed(runtime)) == 4
    row = receiver.state[people["p1"]]
    assert set(row) == {"profile_id", "email", "ltv"} and row["email"] == EMAILS["p1"]
    with runtime.session() as s:
        assert s.get(Delivery, failure["id"]).status == "done"
        assert list_runs(s, aid)[0]["status"] == "ok"

    grant(runtime, people["p4"], action="revoked")
    removal = submit_run(runtime, aid)
    assert removal["removed"] == 1 and people["p4"] not in receiver.state
    remove_key = [k for k, v in receiver.applied.items() if v["type"] == "remove"]
    assert len(remove_key) == 1 and remove_key[0].startswith(f"cdp-act{aid}-run{removal['id']}-1-")
    assert len(_disclosed(runtime)) == 4


def test_idempotency_keys_are_deterministic(runtime, receiver):
    _, sid = _setup(runtime)
    _destination(runtime, "hook", "webhook", receiver.config())
    aid = _activation(runtime, sid, "hook", fields=("email",), batch_size=2)
    run = submit_run(runtime, aid)
    with runtime.session() as s:
        rows = s.scalars(select(Delivery).where(Delivery.run_id == run["id"]).order_by(Delivery.ordinal)).all()
        for d in rows:
            digest = hashlib.sha256(f"{d.op}\n".encode() + "\n".join(d.profile_ids).encode()).hexdigest()
            assert d.idempotency_key == f"cdp-act{aid}-run{run['id']}-{d.ordinal}-{digest[:16]}"
        assert s.scalar(select(func.count(func.distinct(Delivery.idempotency_key)))) == len(rows) == 2


def test_bad_configuration_names_the_field(runtime, mailchimp):
    _, sid = _setup(runtime)
    with pytest.raises(ActivationError) as err:
        _destination(runtime, "mc", "email_list", {"api_key": "nope", "list_id": "x"})
    assert err.value.field == "config.api_key" and "nope" not in str(err.value)
    with pytest.raises(ActivationError) as err:
        _destination(runtime, "mc", "carrier_pigeon", {})
    assert err.value.field == "type"
    _destination(runtime, "mc", "email_list", mailchimp.config())
    with pytest.raises(ActivationError) as err:
        _activation(runtime, sid, "mc", fields=("ltv",))
    assert err.value.field == "fields" and "email" in err.value.message
    with pytest.raises(ActivationError) as err:
        _activation(runtime, sid, "mc", fields=("email",), holdout_pct=70)
    assert err.value.field == "holdout_pct"
    with pytest.raises(ActivationError) as err:
        with runtime.session() as s:
            create_activation(s, "x", sid, "mc", "astrologia", ["email"])
    assert err.value.field == "purpose"
    with runtime.session() as s:
        from activation.run_models import Destination

        dest = s.scalar(select(Destination).where(Destination.name == "mc"))
        assert dest.secrets_ct and MC_KEY.encode() not in dest.secrets_ct and "api_key" not in dest.config
        assert build_destination(s, runtime.keys(s), dest).config["api_key"] == MC_KEY


def test_migration_0008_matches_the_models_and_downgrades(tmp_path, backend):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    from cdp import migrate
    from cdp.models import Base
    from cdp.store import get_engine
    from tests.conftest import make_settings

    mine = {"destinations", "activations", "activation_runs", "deliveries", "activation_members"}
    settings = make_settings(tmp_path / "mig", backend)
    migrate.upgrade(settings, "0008")
    engine = get_engine(settings.database_url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert mine <= set(inspect(conn).get_table_names())
    assert [d for d in diffs if any(t in repr(d) for t in mine)] == []
    migrate.downgrade(settings, "0007")
    with engine.connect() as conn:
        assert not mine & set(inspect(conn).get_table_names())
    migrate.upgrade(settings, "head")


def test_scheduled_activations_are_due_after_their_interval(runtime, receiver):
    from datetime import timedelta

    from activation.run_models import Activation
    from activation.runs import due_activations
    from cdp.models import utcnow

    _, sid = _setup(runtime)
    _destination(runtime, "hook", "webhook", receiver.config())
    hourly = _activation(runtime, sid, "hook", fields=("email",), schedule={"every_minutes": 60})
    _activation(runtime, sid, "hook", fields=("email",), name="manual")
    # Daily, twelve hours from now (cron reads UTC): an hour from now is never past its next run.
    hour = (utcnow().hour + 12) % 24
    nightly = _activation(runtime, sid, "hook", fields=("email",), name="nightly", schedule={"cron": f"0 {hour} * * *"})
    assert due_activations(runtime) == [hourly, nightly]  # never run: due now
    submit_run(runtime, hourly)
    submit_run(runtime, nightly)
    assert due_activations(runtime) == []
    assert due_activations(runtime, utcnow() + timedelta(minutes=61)) == [hourly]
    assert due_activations(runtime, utcnow() + timedelta(days=1, minutes=1)) == [hourly, nightly]
    set_active(runtime, hourly, False)  # paused: still due, its runs send removals only
    assert due_activations(runtime, utcnow() + timedelta(days=2)) == [hourly, nightly]
    with pytest.raises(ActivationError) as err:
        _activation(runtime, sid, "hook", fields=("email",), name="x", schedule={"every_minutes": 0})
    assert err.value.field == "schedule.every_minutes"


def test_file_drop_destination_writes_one_file_per_delivery(runtime, tmp_path):
    import csv
    import stat

    people, sid = _setup(runtime)
    by_id = {v: k for k, v in people.items()}
    drop = tmp_path / "drop"
    drop.mkdir()
    _destination(runtime, "agencia", "file_drop", {"directory": str(drop), "format": "csv"})
    aid = _activation(runtime, sid, "agencia", fields=("email", "purchase_count"), batch_size=3)
    run = submit_run(runtime, aid)
    assert (run["status"], run["added"]) == ("ok", 4)
    files = sorted(drop.iterdir())
    assert [f.name.split(".", 1)[1] for f in files] == ["add.csv", "add.csv"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    with runtime.session() as s:
        keys = {d.idempotency_key for d in s.scalars(select(Delivery))}
    assert {f.name.rsplit(".", 2)[0] for f in files} == keys
    rows = [r for f in files for r in csv.DictReader(f.open(encoding="utf-8"))]
    assert {by_id[r["profile_id"]]: r["email"] for r in rows} == {n: EMAILS[n] for n in CONSENTED}

    grant(runtime, people["p1"], action="revoked")
    submit_run(runtime, aid)
    (removal,) = [f for f in drop.iterdir() if ".remove." in f.name]
    assert [r["profile_id"] for r in csv.DictReader(removal.open(encoding="utf-8"))] == [people["p1"]]
    assert not list(drop.glob(".*.partial"))

    with pytest.raises(ActivationError) as err:
        _destination(runtime, "x", "file_drop", {"directory": str(drop), "format": "xml"})
    assert err.value.field == "config.format"


def test_a_destination_whose_plugin_is_gone_fails_clearly_and_recovers(runtime, receiver):
    from activation.run_models import Destination

    _, sid = _setup(runtime)
    _destination(runtime, "hook", "webhook", receiver.config())
    aid = _activation(runtime, sid, "hook", fields=("email",))
    with runtime.session() as s:
        s.scalar(select(Destination).where(Destination.name == "hook")).type = "uninstalled_thing"
    run = submit_run(runtime, aid)
    assert run["status"] == "failed" and run["failed"] == 4
    with runtime.session() as s:
        (failure,) = failures(s, aid)
        assert "unknown destination type 'uninstalled_thing'" in failure["last_error"]
        s.scalar(select(Destination).where(Destination.name == "hook")).type = "webhook"
    assert retry(runtime)["deliveries"][0]["status"] == "done" and len(receiver.state) == 4


def test_a_crash_between_ack_and_commit_is_redriven_without_a_duplicate(runtime, receiver):
    from datetime import timedelta

    from activation.run_models import ActivationRun, Destination
    from activation.runs import plan_run
    from cdp.models import utcnow

    _, sid = _setup(runtime)
    _destination(runtime, "hook", "webhook", receiver.config())
    aid = _activation(runtime, sid, "hook", fields=("email",))
    with runtime.session() as s:
        run = ActivationRun(activation_id=aid, status="queued")
        s.add(run)
        s.flush()
        run_id = run.id
    (delivery_id,) = plan_run(runtime, run_id)
    # The worker claimed it, the receiver applied and acknowledged it, and the worker died before its commit.
    with runtime.session() as s:
        d = s.get(Delivery, delivery_id)
        d.status, d.attempts, d.failed_at = "sending", 1, utcnow() - timedelta(minutes=31)
        key, ids = d.idempotency_key, list(d.profile_ids)
        dest = build_destination(s, runtime.keys(s), s.scalar(select(Destination)))
    dest.deliver([{"profile_id": pid} for pid in ids], key)
    assert len(receiver.applied) == 1 and len(receiver.state) == 4

    assert submit_run(runtime, aid)["deliveries"] == 0  # its subjects are still in flight
    with runtime.session() as s:
        (stuck,) = failures(s, aid)
    assert stuck["id"] == delivery_id and stuck["status"] == "sending"
    retry(runtime, [delivery_id])
    assert receiver.key_hits[key] == 2 and len(receiver.applied) == 1  # same key: not applied again
    assert set(receiver.upserts.values()) == {1}
    assert sorted(_disclosed(runtime)) == sorted(ids)  # recorded once, with the commit
