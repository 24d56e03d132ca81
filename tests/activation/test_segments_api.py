"""/api/v1/segments over HTTP (Flask test client on the real app and SQLite)."""
from __future__ import annotations

from activation.metrics import refresh_all
from tests.activation.fixtures import NOW, load_people

OPEN_COMPLAINT = {"metric": "complaints_unresolved", "op": "gt", "value": 0}


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_create_list_version_preview_refresh(runtime, client, api_key):
    people = load_people(runtime)
    refresh_all(runtime, churn_days=180, now=NOW)
    reader, writer = api_key("segments:read"), api_key("segments:read", "segments:write")

    denied = client.post("/api/v1/segments", json={"name": "x", "rules": OPEN_COMPLAINT}, headers=_auth(reader))
    assert denied.status_code == 403
    bad = client.post("/api/v1/segments", json={"name": "x", "rules": {"all": [{"metric": "churned", "op": "lt",
                                                                                "value": 1}]}},
                      headers=_auth(writer))
    assert bad.status_code == 422 and bad.content_type == "application/problem+json"
    assert "rules.all.0.op" in bad.json["errors"]

    made = client.post("/api/v1/segments", json={"name": "abertas", "rules": OPEN_COMPLAINT}, headers=_auth(writer))
    assert made.status_code == 201 and made.json["version"] == 1
    sid = made.json["id"]
    again = client.post("/api/v1/segments", json={"name": "abertas", "rules": OPEN_COMPLAINT}, headers=_auth(writer))
    assert again.status_code == 409 and again.json["field"] == "name"

    shown = client.get(f"/api/v1/segments/{sid}/preview", headers=_auth(reader)).json
    assert shown["count"] == 2 and set(shown["sample"]) == {people["p3"], people["p5"]}
    assert client.post(f"/api/v1/segments/{sid}/refresh", headers=_auth(writer)).json == {"entered": 2, "exited": 0}

    patched = client.patch(f"/api/v1/segments/{sid}", json={"rules": {"metric": "nps_class", "op": "eq",
                                                                       "value": "promoter"}},
                           headers=_auth(writer))
    assert patched.status_code == 200 and patched.json["version"] == 2 and len(patched.json["versions"]) == 2
    # promoters: p1, p4, p6 enter; p3 and p5 exit
    assert client.post(f"/api/v1/segments/{sid}/refresh", headers=_auth(writer)).json == {"entered": 3, "exited": 2}
    listed = client.get("/api/v1/segments", headers=_auth(reader)).json["segments"]
    assert [(s["name"], s["version"], s["members"]) for s in listed] == [("abertas", 2, 3)]
    ad_hoc = client.post("/api/v1/segments/preview", json={"rules": {"metric": "purchase_count", "op": "eq",
                                                                      "value": 0}}, headers=_auth(reader)).json
    assert ad_hoc == {"count": 1, "sample": [people["p6"]]}
    assert client.get("/api/v1/segments/999", headers=_auth(reader)).status_code == 404
