"""The first-party webhook destination against a real local receiver:
signed bodies, idempotency keys, retries of POST, clear auth errors, and
data-subject deletions sent as removals."""
from __future__ import annotations

import json

import pytest

from cdp.connectors import AuthError, ConfigInvalid, Subject
from cdp.http import verify_signature
from cdp.testing import FixtureServer
from plugins.webhook_destination import WebhookDestination

SECRET = "whsec-0f1e2d3c4b5a69788796"


@pytest.fixture
def receiver(fast_retries):
    with FixtureServer() as server:
        server.add("/hooks/cdp", method="POST", json={"ok": True})
        yield server


def destination(server, **overrides):
    return WebhookDestination({"url": f"{server.url}/hooks/cdp", "signing_secret": SECRET, **overrides},
                              destination="crm_hook")


def test_deliver_posts_signed_json_with_the_idempotency_key(receiver):
    rows = [{"profile_id": "p-1", "email": "ana@example.com.br"}, {"profile_id": "p-2"}]
    result = destination(receiver).deliver(rows, "audience-7:batch-1")
    assert (result.delivered, result.failed) == (2, 0)
    (request,) = receiver.hits("/hooks/cdp")
    assert request.headers["Idempotency-Key"] == "audience-7:batch-1"
    assert verify_signature(SECRET, request.body, request.headers["X-Cdp-Signature"], prefix="sha256=")
    assert json.loads(request.body) == {"type": "upsert", "rows": rows}


def test_post_is_retried_because_the_key_makes_it_safe(receiver):
    receiver.fail("/hooks/cdp", 503)
    destination(receiver).deliver([{"profile_id": "p-1"}], "k-1")
    hits = receiver.hits("/hooks/cdp")
    assert [h.status for h in hits] == [503, 200]
    assert {h.headers["Idempotency-Key"] for h in hits} == {"k-1"}


def test_check_and_auth_errors(receiver):
    destination(receiver).check()
    assert json.loads(receiver.hits("/hooks/cdp")[-1].body) == {"type": "ping"}
    receiver.fail("/hooks/cdp", 401)
    with pytest.raises(AuthError) as info:
        destination(receiver).check()
    assert str(info.value).startswith("webhook: credentials rejected (HTTP 401)") and SECRET not in str(info.value)


def test_remove_and_subject_deletion(receiver):
    assert destination(receiver).remove(["p-1", "p-2"]).delivered == 2
    assert json.loads(receiver.hits("/hooks/cdp")[-1].body) == {"type": "remove", "refs": ["p-1", "p-2"]}
    done = destination(receiver).on_subject_request("delete", Subject(external_ids=["p-9"]))
    assert done.status == "done"
    assert json.loads(receiver.hits("/hooks/cdp")[-1].body) == {"type": "remove", "refs": ["p-9"]}
    assert destination(receiver).on_subject_request("correct", Subject(external_ids=["p-9"])).status == "manual"


def test_config_is_validated():
    with pytest.raises(ConfigInvalid) as info:
        WebhookDestination({"url": "not a url", "signing_secret": "tiny-secret"})
    assert set(info.value.errors) == {"url", "signing_secret"} and "tiny-secret" not in str(info.value)
