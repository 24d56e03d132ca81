"""Local HTTP receivers for activation tests, on cdp.testing.FixtureServer
(real HTTP on 127.0.0.1; its faults: fail(path, status, times, retry_after)).

* MailchimpFake keeps an audience the way the Mailchimp Marketing API v3
  does: members keyed by subscriber_hash (MD5 of the lower-cased e-mail),
  PUT upserts, DELETE archives (404 when absent), Basic auth with the key.
* WebhookReceiver verifies the signature, applies each Idempotency-Key once,
  and can lose its acknowledgements (applies, then answers 503).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import Counter

from werkzeug.wrappers import Request, Response

from cdp.http import verify_signature
from cdp.testing import FixtureServer

MC_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-us21"
MC_LIST = "a1b2c3d4e5"
MEMBER = re.compile(r"^/3\.0/lists/([0-9A-Za-z]+)/members/([0-9a-f]{32})$")
WEBHOOK_SECRET = "whsec-0f1e2d3c4b5a69788796"


def _json(status: int, body) -> Response:
    return Response(json.dumps(body), status=status, headers={"Content-Type": "application/json"})


class MailchimpFake(FixtureServer):
    def __init__(self, list_id: str = MC_LIST, api_key: str = MC_KEY):
        super().__init__()
        self.list_id = list_id
        self.members: dict[str, dict] = {}
        token = base64.b64encode(f"cdp:{api_key}".encode()).decode()
        self.require(headers={"Authorization": f"Basic {token}"})

    def config(self, **overrides) -> dict:
        return {"api_key": MC_KEY, "list_id": self.list_id, "base_url": self.url, **overrides}

    def subscribed(self) -> set[str]:
        with self._lock:
            return {m["email_address"] for m in self.members.values() if m["status"] == "subscribed"}

    def archived(self) -> set[str]:
        with self._lock:
            return {m["email_address"] for m in self.members.values() if m["status"] == "archived"}

    def _route(self, request: Request) -> Response:
        if request.path == "/3.0/ping" and request.method == "GET":
            return _json(200, {"health_status": "Everything's Chimpy!"})
        match = MEMBER.match(request.path)
        if not match or match.group(1) != self.list_id:
            return _json(404, {"title": "Resource Not Found", "status": 404})
        member_hash = match.group(2)
        with self._lock:
            if request.method == "PUT":
                body = request.get_json(silent=True) or {}
                email = body.get("email_address") or ""
                if "@" not in email or hashlib.md5(email.lower().encode()).hexdigest() != member_hash:
                    return _json(400, {"title": "Invalid Resource", "status": 400})
                member = self.members.get(member_hash)
                if member is None or member["status"] == "archived":
                    member = {"id": member_hash, "email_address": email, "status": body.get("status_if_new"),
                              "merge_fields": {}}
                    self.members[member_hash] = member
                member["merge_fields"].update(body.get("merge_fields") or {})
                return _json(200, member)
            if request.method == "DELETE":
                member = self.members.get(member_hash)
                if member is None or member["status"] == "archived":
                    return _json(404, {"title": "Resource Not Found", "status": 404})
                member["status"] = "archived"
                return Response(status=204)
        return _json(405, {"title": "Method Not Allowed", "status": 405})


class WebhookReceiver(FixtureServer):
    PATH = "/hooks/cdp"

    def __init__(self):
        super().__init__()
        self.mode = "up"  # up | down (503, nothing applied) | ack_lost (applied, then 503)
        self.applied: dict[str, dict] = {}  # Idempotency-Key -> body, applied once
        self.key_hits: Counter = Counter()
        self.state: dict[str, dict] = {}  # what the receiver's system holds, by profile_id
        self.upserts: Counter = Counter()  # times each profile_id was applied as an upsert
        self._apply_lock = threading.Lock()
        self.add(self.PATH, method="POST", handler=self._handle)

    def config(self) -> dict:
        return {"url": f"{self.url}{self.PATH}", "signing_secret": WEBHOOK_SECRET}

    def _handle(self, request: Request):
        body = request.get_data()
        if not verify_signature(WEBHOOK_SECRET, body, request.headers.get("X-Cdp-Signature"), prefix="sha256="):
            return 401, {"error": "bad signature"}
        key = request.headers.get("Idempotency-Key")
        with self._apply_lock:
            self.key_hits[key] += 1
            if self.mode == "down":
                return 503, {"error": "down"}
            payload = json.loads(body)
            if key not in self.applied:  # the receiver's de-duplication
                self.applied[key] = payload
                if payload["type"] == "upsert":
                    for row in payload["rows"]:
                        self.state[row["profile_id"]] = row
                        self.upserts[row["profile_id"]] += 1
                elif payload["type"] == "remove":
                    for ref in payload["refs"]:
                        self.state.pop(ref, None)
            if self.mode == "ack_lost":
                return 503, {"error": "timeout after commit"}
            return 200, {"ok": True}
