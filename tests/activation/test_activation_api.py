"""/api/v1/destinations and /api/v1/activations: scopes, secrets never
returned, bad input as problem+json naming the field, runs, the failure
registry and re-drives."""
from __future__ import annotations

import pytest

from cdp import http as cdp_http
from tests.activation.fakes import MC_KEY, MailchimpFake
from tests.activation.test_members_gate import _setup


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(cdp_http, "DEFAULT_RETRY", cdp_http.RetryPolicy(retries=1, backoff=0.01, retry_after_max=1))


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_destinations_activations_runs_failures_and_retry(runtime, client, api_key):
    _, sid = _setup(runtime)
    reader, writer = api_key("activations:read"), api_key("activations:read", "activations:write")
    with MailchimpFake() as mc:
        body = {"name": "mc", "type": "email_list", "config": mc.config()}
        assert client.post("/api/v1/destinations", json=body, headers=_auth(reader)).status_code == 403
        created = client.post("/api/v1/destinations", json=body, headers=_auth(writer))
        assert created.status_code == 201, created.json
        assert created.json["secrets"] == ["api_key"] and MC_KEY not in created.get_data(as_text=True)
        listed = client.get("/api/v1/destinations", headers=_auth(reader))
        assert [d["name"] for d in listed.json["destinations"]] == ["mc"]
        assert MC_KEY not in listed.get_data(as_text=True)

        bad = client.post("/api/v1/destinations", json={**body, "name": "mc2", "config": {"list_id": "x"}},
                          headers=_auth(writer))
        assert bad.status_code == 422 and bad.content_type == "application/problem+json"
        assert bad.json["field"] == "config.api_key"
        dup = client.post("/api/v1/destinations", json=body, headers=_auth(writer))
        assert dup.status_code == 409 and dup.json["field"] == "name"
        unknown = client.post("/api/v1/destinations", json={**body, "extra": 1}, headers=_auth(writer))
        assert unknown.status_code == 422 and "extra" in unknown.json["errors"]

        act = {"name": "newsletter", "segment": sid, "destination": "mc", "purpose": "email_marketing",
               "fields": ["email", "first_name"], "holdout_pct": 0}
        no_email = client.post("/api/v1/activations", json={**act, "fields": ["ltv"]}, headers=_auth(writer))
        assert no_email.status_code == 422 and no_email.json["field"] == "fields"
        no_seg = client.post("/api/v1/activations", json={**act, "segment": 999}, headers=_auth(writer))
        assert no_seg.status_code == 422 and no_seg.json["field"] == "segment"
        bad_cron = client.post("/api/v1/activations", json={**act, "schedule": {"cron": "whenever"}},
                               headers=_auth(writer))
        assert bad_cron.status_code == 422 and bad_cron.json["field"] == "schedule.cron"
        made = client.post("/api/v1/activations", json={**act, "schedule": {"every_minutes": 60}},
                           headers=_auth(writer))
        assert made.status_code == 201, made.json
        aid = made.json["id"]
        assert made.json["fields"] == ["profile_id", "email", "first_name"]
        assert made.json["schedule"] == {"every_minutes": 60}

        assert client.post(f"/api/v1/activations/{aid}/run", headers=_auth(reader)).status_code == 403
        assert client.post("/api/v1/activations/999/run", headers=_auth(writer)).status_code == 404
        mc.fail("*", 503, times=100)
        run = client.post(f"/api/v1/activations/{aid}/run", headers=_auth(writer))
        assert run.status_code == 200 and run.json["status"] == "failed" and run.json["failed"] == 4
        assert "exemplo" not in run.get_data(as_text=True)

        fails = client.get("/api/v1/activations/failures", headers=_auth(reader))
        (failure,) = fails.json["failures"]
        assert "answered HTTP 503" in failure["last_error"] and failure["subjects"] == 4
        assert "profile_ids" not in failure
        assert client.post("/api/v1/activations/failures/retry", json={"deliveries": [999]},
                           headers=_auth(writer)).json["field"] == "delivery"
        mc.clear_faults()
        redriven = client.post("/api/v1/activations/failures/retry", json={"deliveries": [failure["id"]]},
                               headers=_auth(writer))
        assert redriven.status_code == 200 and redriven.json["deliveries"][0]["status"] == "done"
        assert len(mc.subscribed()) == 4
        again = client.post("/api/v1/activations/failures/retry", json={"deliveries": [failure["id"]]},
                            headers=_auth(writer))
        assert again.status_code == 409  # no longer in the registry
        gone = client.post("/api/v1/activations/failures/discard", json={"deliveries": [failure["id"]]},
                           headers=_auth(writer))
        assert gone.status_code == 409 and gone.json["field"] == "delivery"
        empty = client.post("/api/v1/activations/failures/discard", json={"deliveries": []}, headers=_auth(writer))
        assert empty.status_code == 422 and "deliveries" in empty.json["errors"]
        assert client.post("/api/v1/activations/failures/discard", json={"deliveries": [failure["id"]]},
                           headers=_auth(reader)).status_code == 403

        runs = client.get(f"/api/v1/activations/{aid}/runs", headers=_auth(reader))
        assert [(r["status"], r["added"]) for r in runs.json["runs"]] == [("ok", 4)]

        # Pause and resume (what a paused run sends: test_activation_runs).
        assert client.post(f"/api/v1/activations/{aid}/pause", headers=_auth(reader)).status_code == 403
        assert client.post("/api/v1/activations/999/pause", headers=_auth(writer)).status_code == 404
        paused = client.post(f"/api/v1/activations/{aid}/pause", headers=_auth(writer))
        assert paused.status_code == 200 and paused.json["active"] is False and paused.json["in_destination"] == 4
        assert client.get("/api/v1/activations", headers=_auth(reader)).json["activations"][0]["active"] is False
        resumed = client.post(f"/api/v1/activations/{aid}/resume", headers=_auth(writer))
        assert resumed.status_code == 200 and resumed.json["active"] is True
        acts = client.get("/api/v1/activations", headers=_auth(reader))
        assert acts.json["activations"][0]["in_destination"] == 4
    assert client.get("/api/v1/activations", headers=_auth(api_key("segments:read"))).status_code == 403
