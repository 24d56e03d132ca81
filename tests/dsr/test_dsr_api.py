"""The request endpoints as a client sees them: enumeration, rate limits,
signed download links, staff actions, problem+json errors."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from consent.dsr.report import make_download_token
from tests.dsr.conftest import ATTACKER, VICTIM, add_person, codes_for

PROBLEM = "application/problem+json"


def _open(client, identifiers, type_="access", **extra):
    response = client.post("/api/v1/dsr", json={"type": type_, "identifiers": identifiers, **extra})
    return response


def _problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["detail"]
    if field:
        assert field in body["detail"]
    return body


def test_known_and_unknown_people_get_the_same_answers(client, runtime):
    add_person(runtime, VICTIM)
    known = _open(client, {"email": VICTIM["email"], "cpf": VICTIM["cpf"]})
    unknown = _open(client, {"email": "ninguem@example.net", "cpf": "390.533.447-05"})

    assert known.status_code == unknown.status_code == 202
    assert known.headers["Content-Type"] == unknown.headers["Content-Type"]
    a, b = known.get_json(), unknown.get_json()
    assert set(a) == set(b) == {"request_id", "token", "status", "message"}
    assert (a["status"], a["message"]) == (b["status"], b["message"])
    assert len(a["token"]) == len(b["token"])
    # Nothing was looked up or sent while the answer was being made: that happens after it.
    assert codes_for(runtime, a["request_id"]) == {} and codes_for(runtime, b["request_id"]) == {}
    known.close()
    unknown.close()
    assert set(codes_for(runtime, a["request_id"])) == {VICTIM["email"]}  # a single code: the e-mail is on file
    assert set(codes_for(runtime, b["request_id"])) == {"ninguem@example.net"}

    # A wrong code, the status page: the same for both.
    for rid, token in ((a["request_id"], a["token"]), (b["request_id"], b["token"])):
        wrong = client.post(f"/api/v1/dsr/{rid}/verify", json={"token": token, "code": "000000"})
        if codes_for(runtime, rid).get(VICTIM["email"]) == "000000":
            pytest.skip("the random code was 000000")
        assert wrong.status_code == 200 and wrong.get_json() == {"verified": False, "status": "received",
                                                                  "attempts_left": 4}
        status = client.get(f"/api/v1/dsr/{rid}", headers={"X-DSR-Token": token}).get_json()
        assert {k: v for k, v in status.items() if k not in ("request_id", "created_at", "due_at")} == \
            {"type": "access", "status": "received"}


def test_full_access_request_over_http(client, runtime):
    add_person(runtime, VICTIM)
    opened = _open(client, {"email": VICTIM["email"]}).get_json()
    client.application.extensions  # noqa: B018
    from consent.dsr.service import dispatch_codes

    dispatch_codes(runtime, opened["request_id"])
    code = codes_for(runtime, opened["request_id"])[VICTIM["email"]]
    ok = client.post(f"/api/v1/dsr/{opened['request_id']}/verify", json={"token": opened["token"], "code": code})
    assert ok.get_json()["verified"] is True
    status = client.get(f"/api/v1/dsr/{opened['request_id']}", headers={"X-DSR-Token": opened["token"]}).get_json()
    assert status["status"] == "completed"
    url = status["downloads"]["html"]["url"].split("8000", 1)[1]
    page = client.get(url)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "Relatório de dados pessoais" in html and "Helena Prado Siqueira" in html and "crm" in html
    assert page.headers["Cache-Control"] == "no-store"
    data = client.get(status["downloads"]["json"]["url"].split("8000", 1)[1]).get_json()
    assert data["profiles"][0]["attributes"]["cpf"] == "52998224725"
    assert data["source_records"][0]["source"] == "crm" and data["controller"]["dpo"]["name"]


def test_download_link_expired_forged_or_for_another_request_is_refused(client, runtime):
    from tests.dsr.conftest import verified_request

    add_person(runtime, VICTIM)
    add_person(runtime, ATTACKER, external_id="x-1")
    mine = verified_request(runtime, "access", {"email": ATTACKER["email"]}).request_id
    theirs = verified_request(runtime, "access", {"email": VICTIM["email"]}).request_id
    ring = runtime.keyring

    fresh = make_download_token(ring, mine, "json")
    assert client.get(f"/api/v1/dsr/{mine}/download", query_string={"format": "json", "token": fresh}).status_code == 200
    # My valid link, used on someone else's request.
    _problem(client.get(f"/api/v1/dsr/{theirs}/download", query_string={"format": "json", "token": fresh}), 403,
             "token")
    # A link issued 25 hours ago.
    old = make_download_token(ring, mine, "json", issued_at=datetime.now(timezone.utc) - timedelta(hours=25))
    body = _problem(client.get(f"/api/v1/dsr/{mine}/download", query_string={"format": "json", "token": old}), 403)
    assert "expired" in body["detail"]
    # Another format than the one signed, and a tampered signature.
    _problem(client.get(f"/api/v1/dsr/{mine}/download", query_string={"format": "html", "token": fresh}), 403)
    _problem(client.get(f"/api/v1/dsr/{mine}/download", query_string={"format": "json", "token": fresh[:-2] + "xx"}),
             403)


def test_rate_limits_per_ip_and_per_identifier(client, runtime):
    for i in range(3):
        assert _open(client, {"email": "alvo@example.com"}).status_code == 202
    body = _problem(_open(client, {"email": "alvo@example.com"}), 429, "identifiers.email")
    assert body["title"]
    for i in range(7):  # the IP has made 3; up to 10 an hour
        assert _open(client, {"email": f"outro{i}@example.com"}).status_code == 202
    limited = _open(client, {"email": "mais-um@example.com"})
    _problem(limited, 429, "ip")
    assert int(limited.headers["Retry-After"]) > 0


def test_bad_input_is_a_problem_naming_the_field(client):
    _problem(_open(client, {"cpf": "529.982.247-24"}), 422, "identifiers.cpf")  # wrong check digit
    _problem(_open(client, {"email": "not-an-email"}), 422, "identifiers.email")
    _problem(_open(client, {}), 422, "identifiers")
    _problem(client.post("/api/v1/dsr", json={"type": "telepathy", "identifiers": {"email": "a@example.com"}}), 422,
             "type")
    _problem(_open(client, {"email": "a@example.com"}, "correction", details={"changes": {"traits": {
        "shoe_size": "42"}}}), 422, "details.changes.traits.shoe_size")
    _problem(client.post("/api/v1/dsr/not-a-uuid/verify", json={"token": "t", "code": "1"}), 404)


def test_staff_endpoints_need_the_privacy_scope(client, api_key, runtime):
    token = api_key("ingest")
    response = client.get("/api/v1/dsr/requests", headers={"Authorization": f"Bearer {token}"})
    _problem(response, 403)
    _problem(client.get("/api/v1/incidents"), 401)


def test_staff_opened_request_with_verified_identity_runs_to_completion(client, api_key, runtime):
    pid = add_person(runtime, VICTIM)
    staff = {"Authorization": f"Bearer {api_key('privacy')}"}
    opened = client.post("/api/v1/dsr/requests", headers=staff, json={
        "type": "deletion", "identifiers": {"cpf": VICTIM["cpf"]}, "profile_ids": [pid],
        "verification_note": "RG conferido no balcão da loja"})
    assert opened.status_code == 201, opened.get_data(as_text=True)
    rid = opened.get_json()["id"]
    assert opened.get_json()["status"] == "identity_verified"
    done = client.post(f"/api/v1/dsr/requests/{rid}/execute", headers=staff, json={})
    assert done.get_json()["status"] == "in_progress"
    assert [s["system"] for s in done.get_json()["systems"]] == ["source:crm"]
    closed = client.post(f"/api/v1/dsr/requests/{rid}/systems", headers=staff,
                         json={"system": "source:crm", "note": "apagado no CRM"})
    assert closed.get_json()["status"] == "completed"
    detail = client.get(f"/api/v1/dsr/requests/{rid}?personal=1", headers=staff).get_json()
    assert detail["claims"]["identifiers"]["cpf"] == "52998224725"
    assert detail["audit"][-1]["action"] == "personal_data_viewed"
    assert "52998224725" not in str(detail["audit"])
    listing = client.get("/api/v1/dsr/requests", headers=staff, query_string={"status": "completed"}).get_json()
    assert [r["id"] for r in listing["requests"]] == [rid]
    _problem(client.post(f"/api/v1/dsr/requests/{rid}/deny", headers=staff, json={"reason_code": "other",
                                                                                   "reason_text": "x"}), 409)


def test_staff_deny_extend_pause_over_http(client, api_key, runtime):
    staff = {"Authorization": f"Bearer {api_key('privacy')}"}
    opened = _open(client, {"email": "joana@example.com"}).get_json()
    rid = opened["request_id"]
    _problem(client.post(f"/api/v1/dsr/requests/{rid}/extend", headers=staff, json={"days": 5, "reason": ""}), 422,
             "reason")
    extended = client.post(f"/api/v1/dsr/requests/{rid}/extend", headers=staff,
                           json={"days": 5, "reason": "Aguardando resposta do ERP"}).get_json()
    assert extended["due_at"] > client.get(f"/api/v1/dsr/{rid}", headers={"X-DSR-Token": opened["token"]}) \
        .get_json()["created_at"]
    paused = client.post(f"/api/v1/dsr/requests/{rid}/pause", headers=staff, json={"reason": "aguardando titular"})
    assert paused.get_json()["paused"] is True
    resumed = client.post(f"/api/v1/dsr/requests/{rid}/resume", headers=staff, json={}).get_json()
    assert resumed["paused"] is False and resumed["due_at"] >= extended["due_at"]
    _problem(client.post(f"/api/v1/dsr/requests/{rid}/deny", headers=staff, json={"reason_code": "other"}), 422,
             "reason_text")
    denied = client.post(f"/api/v1/dsr/requests/{rid}/deny", headers=staff,
                         json={"reason_code": "identity_not_verified"}).get_json()
    assert denied["status"] == "denied"
    shown = client.get(f"/api/v1/dsr/{rid}", headers={"X-DSR-Token": opened["token"]}).get_json()
    assert shown["denial"]["code"] == "identity_not_verified"
    assert shown["denial"]["reason"] == "Não foi possível confirmar a sua identidade."
    actions = [e["action"] for e in client.get(f"/api/v1/dsr/requests/{rid}", headers=staff).get_json()["audit"]]
    assert actions == ["opened", "deadline_extended", "deadline_paused", "deadline_resumed", "denied"]


def test_public_endpoints_over_a_real_http_server(app, runtime):
    """The enumeration check on the wire (werkzeug server, urllib client)."""
    import json
    import threading
    import urllib.request

    from werkzeug.serving import make_server

    add_person(runtime, VICTIM)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        answers = []
        for email in (VICTIM["email"], "ninguem@example.net"):
            req = urllib.request.Request(f"http://127.0.0.1:{srv.server_port}/api/v1/dsr", method="POST",
                                         data=json.dumps({"type": "access", "identifiers": {"email": email}}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                body = json.loads(resp.read())
                answers.append((resp.status, resp.headers["Content-Type"], sorted(body), body["message"],
                                len(resp.headers)))
        assert answers[0] == answers[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=30)
