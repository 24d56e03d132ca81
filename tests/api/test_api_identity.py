"""Review queue and explanation endpoints."""
from tests.conftest import make_runtime, make_settings


def _client(tmp_path):
    from cdp import create_app
    from cdp.auth import create_api_key
    from cdp.ingest import ingest_batch

    runtime = make_runtime(make_settings(tmp_path / "i", match_threshold=0.999999, review_threshold=0.01))
    ingest_batch(runtime, "erp", [{"external_id": "e1", "traits": {"full_name": "Joana Prado", "city": "Recife",
                                                                  "birth_date": "1984-10-10"}}])
    ingest_batch(runtime, "forms", [{"external_id": "f1", "traits": {"full_name": "Joana Prado", "city": "Recife"}}])
    with runtime.session() as s:
        reviewer = create_api_key(s, "reviewer", ["identity:review"])[1]
        reader = create_api_key(s, "reader", ["profiles:read"])[1]
    app = create_app(runtime.settings, runtime.keyring)
    return app.test_client(), {"Authorization": f"Bearer {reviewer}"}, {"Authorization": f"Bearer {reader}"}


def test_review_queue_needs_the_review_scope(tmp_path):
    client, _, reader = _client(tmp_path)
    assert client.get("/api/v1/identity/reviews", headers=reader).status_code == 403


def test_list_open_and_decide_a_review_item(tmp_path):
    client, reviewer, reader = _client(tmp_path)
    listing = client.get("/api/v1/identity/reviews", headers=reviewer).get_json()
    assert listing["total"] == 1
    item = listing["items"][0]
    assert "Joana" not in str(item)  # the list shows evidence levels, not values
    detail = client.get(f"/api/v1/identity/reviews/{item['id']}", headers=reviewer).get_json()
    assert detail["values"]["record"]["values"]["full_name"] == "Joana Prado"
    decided = client.post(f"/api/v1/identity/reviews/{item['id']}", json={"decision": "match"}, headers=reviewer)
    assert decided.status_code == 200 and decided.get_json()["status"] == "match"
    again = client.post(f"/api/v1/identity/reviews/{item['id']}", json={"decision": "non_match"}, headers=reviewer)
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    explained = client.get(f"/api/v1/profiles/{decided.get_json()['profile_id']}/explain?language=en",
                           headers=reader).get_json()
    assert any(m["rule"] == "review_match" for m in explained["merges"])


def test_bad_decision_and_unknown_item_are_4xx(tmp_path):
    client, reviewer, reader = _client(tmp_path)
    bad = client.post("/api/v1/identity/reviews/1", json={"decision": "maybe"}, headers=reviewer)
    assert bad.status_code == 422 and "decision" in bad.get_json()["errors"]
    assert client.get("/api/v1/identity/reviews/999", headers=reviewer).status_code == 404
    assert client.get("/api/v1/identity/reviews/99999999999999", headers=reviewer).status_code == 404
    assert client.get("/api/v1/profiles/nope/explain", headers=reader).status_code == 404
    assert client.get("/api/v1/identity/reviews?limit=0", headers=reviewer).status_code == 422
