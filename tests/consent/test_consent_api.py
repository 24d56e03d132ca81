"""The consent REST API: scopes, input errors as problem+json naming the
field, recording and reading consent, purposes, verification, checkpoints
and signed receipts checked with the public key alone."""
from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.api.conftest import check_problem
from tests.consent.helpers import drop_guard, raw

NOTICE = "aviso-2026-01"
GHOST = "00000000-0000-0000-0000-000000000000"


def body(pid, **kw):
    out = {"profile_id": pid, "purpose": "email_marketing", "action": "granted",
           "evidence": {"channel": "web_form", "notice_version": NOTICE, "ip": "189.1.2.3", "user_agent": "UA/1"}}
    out.update(kw)
    return out


def hdr(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pid(srt, make_profiles):
    return make_profiles(srt)[0]


ENDPOINTS = [
    ("POST", "/api/v1/consents", "consents:write", lambda p: body(p)),
    ("GET", "/api/v1/consents/{pid}", "consents:read", None),
    ("GET", "/api/v1/consents/{pid}/receipt", "consents:read", None),
    ("GET", "/api/v1/purposes", "consents:read", None),
    ("GET", "/api/v1/purposes/email_marketing", "consents:read", None),
    ("POST", "/api/v1/purposes", "admin", lambda p: {"name": "x"}),
    ("PATCH", "/api/v1/purposes/email_marketing", "admin", lambda p: {"title_en": "E-mail offers"}),
    ("GET", "/api/v1/ledger/verify", "audit", None),
    ("POST", "/api/v1/ledger/checkpoints", "audit", None),
]
IDS = [f"{m} {p}" for m, p, _, _ in ENDPOINTS]


@pytest.mark.parametrize(("method", "path", "scope", "make"), ENDPOINTS, ids=IDS)
def test_scopes(client, api_key, pid, method, path, scope, make):
    url = path.format(pid=pid)
    payload = make(pid) if make else None
    check_problem(client.open(url, method=method, json=payload), 401)
    wrong = api_key(*[s for s in ("ingest", "profiles:read", "consents:read", "consents:write", "audit")
                      if s != scope])
    if scope != "admin":
        allowed = client.open(url, method=method, json=payload, headers=hdr(api_key(scope)))
        assert allowed.status_code not in (401, 403) and allowed.status_code < 500, allowed.get_data(as_text=True)
    assert scope in check_problem(client.open(url, method=method, json=payload, headers=hdr(wrong)), 403)["detail"]


def test_record_and_read_consent(client, api_key, srt, pid):
    writer, reader, auditor = api_key("consents:write"), api_key("consents:read"), api_key("audit", "consents:read")
    r = client.post("/api/v1/consents", json=body(pid, idempotency_key="form-123"), headers=hdr(writer))
    assert r.status_code == 201, r.get_data(as_text=True)
    out = r.get_json()
    assert out["entry"]["seq"] == 1 and out["entry"]["collector"].startswith("api:")
    assert out["state"]["allowed"] is True and out["duplicate"] is False
    assert "189.1.2.3" not in r.get_data(as_text=True)
    again = client.post("/api/v1/consents", json=body(pid, idempotency_key="form-123"), headers=hdr(writer))
    assert again.status_code == 200 and again.get_json()["duplicate"] and again.get_json()["entry"]["seq"] == 1

    view = client.get(f"/api/v1/consents/{pid}", headers=hdr(reader))
    assert view.status_code == 200
    data = view.get_json()
    state = {s["purpose"]: s for s in data["states"]}
    assert state["email_marketing"]["allowed"] and not state["personalization"]["allowed"]
    assert state["analytics"]["allowed"] and state["analytics"]["requires"] == "no_opt_out"
    assert data["history"][0]["evidence"] is None and data["history"][0]["evidence_status"] == "withheld"
    check_problem(client.get(f"/api/v1/consents/{pid}?include_evidence=true", headers=hdr(reader)), 403)
    proof = client.get(f"/api/v1/consents/{pid}?include_evidence=true", headers=hdr(auditor)).get_json()
    assert proof["history"][0]["evidence"] == {"ip": "189.1.2.3", "user_agent": "UA/1"}

    revoke = client.post("/api/v1/consents", json=body(pid, action="revoked", evidence={"channel": "app"}),
                         headers=hdr(writer))
    assert revoke.status_code == 201 and revoke.get_json()["state"]["allowed"] is False


@pytest.mark.parametrize(("change", "status", "field"), [
    ({"purpose": "no_such_purpose"}, 422, "purpose"),
    ({"purpose": "Not Snake"}, 422, "purpose"),
    ({"action": "maybe"}, 422, "action"),
    ({"profile_id": GHOST}, 404, "profile_id"),
    ({"profile_id": "short"}, 422, "profile_id"),
    ({"evidence": {"channel": "web_form"}}, 422, "evidence.notice_version"),
    ({"evidence": {"channel": "web_form", "notice_version": "aviso-1999"}}, 422, "evidence.notice_version"),
    ({"evidence": {"notice_version": NOTICE}}, 422, "evidence.channel"),
    ({"evidence": {"channel": "fulano@example.com", "notice_version": NOTICE}}, 422, "evidence.channel"),
    ({"evidence": {"channel": "app", "notice_version": NOTICE, "cpf": "1"}}, 422, "evidence.cpf"),
    ({"occurred_at": "2999-01-01T00:00:00Z"}, 422, "occurred_at"),
    ({"occurred_at": "ontem"}, 422, "occurred_at"),
    ({"extra": 1}, 422, "extra"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
def test_bad_consent_input_names_the_field(client, api_key, pid, change, status, field):
    r = client.post("/api/v1/consents", json=body(pid, **change), headers=hdr(api_key("consents:write")))
    problem = check_problem(r, status)
    assert field in problem["detail"] or field in problem.get("errors", {}) or problem.get("field") == field
    assert "fulano@example.com" not in r.get_data(as_text=True)  # input is never echoed


def test_non_json_and_unknown_profiles(client, api_key, pid):
    w, rd = hdr(api_key("consents:write")), hdr(api_key("consents:read"))
    check_problem(client.post("/api/v1/consents", data="{not json", headers={**w, "Content-Type": "application/json"}),
                  400)
    check_problem(client.get("/api/v1/consents/not-a-uuid", headers=rd), 404)
    check_problem(client.get(f"/api/v1/consents/{GHOST}", headers=rd), 404)
    check_problem(client.get(f"/api/v1/consents/{GHOST}/receipt", headers=rd), 404)
    check_problem(client.get(f"/api/v1/consents/{pid}/receipt?lang=fr", headers=rd), 422)


PURPOSE = {"name": "partner_offers", "legal_basis": "consent", "title_pt": "Ofertas de parceiros",
           "title_en": "Partner offers", "description_pt": "Compartilhar e-mail com a Parceira Ltda.",
           "description_en": "Share e-mail with Parceira Ltda.", "retention_days": 365,
           "notice_version": "aviso-p1", "recipients": ["Parceira Ltda."]}


def test_purposes_api(client, api_key, srt):
    admin = hdr(api_key("admin"))
    r = client.post("/api/v1/purposes", json=PURPOSE, headers=admin)
    assert r.status_code == 201 and r.get_json()["version"] == 1 and r.get_json()["requires"] == "grant"
    check_problem(client.post("/api/v1/purposes", json=PURPOSE, headers=admin), 409)
    missing = {k: v for k, v in PURPOSE.items() if k != "legal_basis"}
    p = check_problem(client.post("/api/v1/purposes", json=dict(missing, name="other"), headers=admin), 422)
    assert "legal_basis" in p["errors"]
    p = check_problem(client.post("/api/v1/purposes", json=dict(PURPOSE, name="health", sensitive=True,
                                                                legal_basis="legitimate_interest"), headers=admin), 422)
    assert "legal_basis" in p["detail"]
    p = check_problem(client.post("/api/v1/purposes", json=dict(PURPOSE, name="x", retention_days="10"), headers=admin),
                      422)
    assert "retention_days" in p["errors"]
    patched = client.patch("/api/v1/purposes/partner_offers", json={"recipients": ["Parceira Ltda.", "Outra S.A."]},
                           headers=admin)
    assert patched.status_code == 200 and patched.get_json()["version"] == 2
    check_problem(client.patch("/api/v1/purposes/nope", json={"title_en": "x"}, headers=admin), 404)
    check_problem(client.patch("/api/v1/purposes/analytics", json={"sensitive": True}, headers=admin), 422)
    names = [p["name"] for p in client.get("/api/v1/purposes", headers=admin).get_json()["purposes"]]
    assert {"email_marketing", "analytics", "partner_offers"} <= set(names)


def test_verify_and_checkpoint_api(client, api_key, srt, pid):
    audit = hdr(api_key("audit"))
    client.post("/api/v1/consents", json=body(pid), headers=hdr(api_key("consents:write")))
    ok = client.get("/api/v1/ledger/verify", headers=audit).get_json()
    assert ok["ok"] and ok["entries"] == 1
    cp = client.post("/api/v1/ledger/checkpoints", headers=audit)
    assert cp.status_code == 201
    checkpoint = cp.get_json()
    matched = client.post("/api/v1/ledger/verify", json={"checkpoint": checkpoint}, headers=audit).get_json()
    assert matched["ok"] and matched["checkpoint"]["matched"]
    p = check_problem(client.post("/api/v1/ledger/verify", json={"checkpoint": {"jws": "a.b.c", "public_key": "x"}},
                                  headers=audit), 422)
    assert "checkpoint" in p["detail"]
    drop_guard(srt)
    raw(srt, "UPDATE consent_ledger SET action = 'revoked' WHERE seq = 1")
    bad = client.get("/api/v1/ledger/verify", headers=audit).get_json()
    assert not bad["ok"] and bad["first_bad_seq"] == 1
    check_problem(client.post("/api/v1/ledger/checkpoints", headers=audit), 409)


def _verify_jws_independently(token: str, public_key_b64url: str) -> dict:
    """RFC 7515/8037 by hand with cryptography only: no code from the app."""
    def unb64(s):
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    header, payload, sig = token.split(".")
    assert json.loads(unb64(header))["alg"] == "EdDSA"
    Ed25519PublicKey.from_public_bytes(unb64(public_key_b64url)).verify(unb64(sig), f"{header}.{payload}".encode())
    return json.loads(unb64(payload))


def test_receipt_is_kantara_shaped_and_verifies_with_the_public_key(client, api_key, pid):
    from cryptography.exceptions import InvalidSignature

    client.post("/api/v1/consents", json=body(pid), headers=hdr(api_key("consents:write")))
    r = client.get(f"/api/v1/consents/{pid}/receipt", headers=hdr(api_key("consents:read")))
    assert r.status_code == 200
    out = r.get_json()
    receipt = out["receipt"]
    for field in ("version", "jurisdiction", "consentTimestamp", "collectionMethod", "consentReceiptID",
                  "publicKey", "language", "piiPrincipalId", "piiControllers", "services", "sensitive", "spiCat"):
        assert field in receipt
    assert receipt["jurisdiction"] == "BR" and receipt["piiPrincipalId"] == pid and receipt["language"] == "pt-BR"
    assert receipt["dpo"]["substitute"]
    purpose = receipt["services"][0]["purposes"][0]
    assert purpose["purposeCategory"] == ["email_marketing"] and purpose["legalBasis"] == "consent"
    assert purpose["consentType"] == "EXPLICIT" and "730" in purpose["termination"]
    assert _verify_jws_independently(out["jws"], receipt["publicKey"]) == receipt
    assert "189.1.2.3" not in r.get_data(as_text=True)
    header, payload, sig = out["jws"].split(".")
    forged = base64.urlsafe_b64encode(json.dumps(dict(receipt, piiPrincipalId=str(uuid.uuid4()))).encode()
                                      ).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        _verify_jws_independently(f"{header}.{forged}.{sig}", receipt["publicKey"])
    en = client.get(f"/api/v1/consents/{pid}/receipt?lang=en", headers=hdr(api_key("consents:read"))).get_json()
    assert en["receipt"]["services"][0]["purposes"][0]["purpose"] == "Offers and news by e-mail"


def test_api_on_postgresql(crt, make_profiles):
    """The same calls against PostgreSQL."""
    from cdp import create_app
    from cdp.auth import create_api_key

    client = create_app(crt.settings, crt.keyring).test_client()
    with crt.session() as session:
        token = create_api_key(session, "pg", ["consents:write", "consents:read", "audit"])[1]
    (p,) = make_profiles(crt)
    assert client.post("/api/v1/consents", json=body(p), headers=hdr(token)).status_code == 201
    state = {s["purpose"]: s for s in client.get(f"/api/v1/consents/{p}", headers=hdr(token)).get_json()["states"]}
    assert state["email_marketing"]["allowed"]
    assert client.get("/api/v1/ledger/verify", headers=hdr(token)).get_json()["ok"]
