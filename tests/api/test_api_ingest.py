"""POST /api/v1/sources/{source}/records: per-record results, idempotency,
and 4xx problem+json (never a 500) for every kind of bad request."""
from __future__ import annotations

import json

import pytest

URL = "/api/v1/sources/crm/records"

GOOD = {"external_id": "c-1", "identifiers": {"email": "ana@example.com"}, "traits": {"full_name": "Ana Souza"}}
OTHER = {"external_id": "c-2", "identifiers": {"cpf": "52998224725"}, "traits": {"city": "Recife"}}


def statuses(response) -> list[str]:
    return [r["status"] for r in response.get_json()["results"]]


# -- per-record results --------------------------------------------------------

def test_new_record_is_accepted_with_its_record_id(ingest):
    response = ingest("crm", [GOOD])
    assert response.status_code == 200
    (result,) = response.get_json()["results"]
    assert result["status"] == "accepted"
    assert result["external_id"] == "c-1"
    assert len(result["record_id"]) == 36


def test_reposting_the_same_record_is_a_duplicate_of_the_same_record(ingest):
    first = ingest("crm", [GOOD]).get_json()["results"][0]
    again = ingest("crm", [GOOD]).get_json()["results"][0]
    assert again["status"] == "duplicate"
    assert again["record_id"] == first["record_id"]


def test_changed_content_is_an_update_of_the_same_record(ingest, count_rows):
    first = ingest("crm", [GOOD]).get_json()["results"][0]
    changed = dict(GOOD, traits={"full_name": "Ana Souza Lima"})
    again = ingest("crm", [changed]).get_json()["results"][0]
    assert again["status"] == "updated"
    assert again["record_id"] == first["record_id"]
    assert count_rows("source_records") == 1
    assert count_rows("record_versions") == 1


def test_same_external_id_in_another_source_is_a_different_record(ingest):
    a = ingest("crm", [GOOD]).get_json()["results"][0]
    b = ingest("shop", [GOOD]).get_json()["results"][0]
    assert b["status"] == "accepted"
    assert b["record_id"] != a["record_id"]


@pytest.mark.parametrize(("record", "field"), [
    ({"external_id": "r", "traits": {"birth_date": "31/02"}}, "traits.birth_date"),
    ({"external_id": "r", "traits": {"birth_date": "not a date"}}, "traits.birth_date"),
    ({"external_id": "r", "identifiers": {"email": 5.5}}, "identifiers.email"),
    ({"external_id": "r", "identifiers": {"email": ["a@example.com", {"x": 1}]}}, "identifiers.email"),
    ({"external_id": "r", "identifiers": {"cpf": True}}, "identifiers.cpf"),
    ({"external_id": "r", "identifiers": {"email": "a@example.com"}, "favourite_colour": "blue"}, "favourite_colour"),
    ({"external_id": "r", "traits": {"shoe_size": "38"}}, "traits.shoe_size"),
    ({"identifiers": {"email": "a@example.com"}}, "external_id"),
    ({"external_id": "r"}, "identifiers"),
    ({"external_id": "r", "source": "other", "traits": {"city": "Recife"}}, "source"),
    ({"external_id": "r", "observed_at": "yesterday", "traits": {"city": "Recife"}}, "observed_at"),
    ({"external_id": "r", "events": [{"type": "Bought!", "occurred_at": "2024-01-01T00:00:00Z"}]}, "events.0.type"),
    ({"external_id": "r", "events": [{"type": "buy", "occurred_at": "2024-01-01T00:00:00Z", "amount": "NaN"}]},
     "events.0.amount"),
    ({"external_id": "r", "consents": [{"purpose": "marketing", "status": "maybe"}]}, "consents.0.status"),
])
def test_invalid_record_is_rejected_naming_the_field(ingest, record, field):
    response = ingest("crm", [record])
    assert response.status_code == 200
    (result,) = response.get_json()["results"]
    assert result["status"] == "rejected"
    assert field in result["errors"], result["errors"]
    assert "record_id" not in result


def test_bad_record_never_blocks_good_ones_in_the_same_batch(ingest, count_rows):
    bad = {"external_id": "bad", "traits": {"birth_date": "99/99"}}
    response = ingest("crm", [GOOD, bad, OTHER])
    assert statuses(response) == ["accepted", "rejected", "accepted"]
    assert [r["index"] for r in response.get_json()["results"]] == [0, 1, 2]
    assert count_rows("source_records") == 2


def test_counts_sum_up_one_of_each_status(ingest):
    ingest("crm", [GOOD, OTHER])
    batch = [GOOD, dict(OTHER, traits={"city": "Olinda"}), {"external_id": "new", "traits": {"city": "Natal"}},
             {"external_id": "bad"}]
    response = ingest("crm", batch)
    assert response.get_json()["counts"] == {"accepted": 1, "updated": 1, "duplicate": 1, "rejected": 1}
    assert statuses(response) == ["duplicate", "updated", "accepted", "rejected"]


def test_same_batch_twice_is_all_duplicates_and_adds_no_rows(ingest, count_rows):
    batch = [GOOD, OTHER, {"external_id": "c-3", "identifiers": {"phone": "+55 11 98765-4321"}}]
    first = ingest("crm", batch).get_json()
    rows = (count_rows("source_records"), count_rows("record_versions"), count_rows("profiles"))
    second = ingest("crm", batch).get_json()
    assert first["counts"]["accepted"] == 3
    assert second["counts"] == {"accepted": 0, "updated": 0, "duplicate": 3, "rejected": 0}
    assert (count_rows("source_records"), count_rows("record_versions"), count_rows("profiles")) == rows
    assert rows[0] == 3


def test_ingest_response_lists_no_jobs_when_resolving_in_process(ingest):
    body = ingest("crm", [GOOD]).get_json()
    assert body["jobs"] == []


# -- request-level errors -----------------------------------------------------------

@pytest.mark.parametrize("source", ["Bad-Name", "CRM", "1crm", "crm.shop", "x" * 65])
def test_bad_source_name_in_url_is_422_naming_source(client, admin, problem, source):
    response = client.post(f"/api/v1/sources/{source}/records", json={"records": [GOOD]}, headers=admin)
    body = problem(response, 422)
    assert body["field"] == "source"
    assert "source" in body["detail"]


def test_bad_source_name_stores_nothing(client, admin, count_rows):
    client.post("/api/v1/sources/Bad-Name/records", json={"records": [GOOD]}, headers=admin)
    assert count_rows("source_records") == 0


def test_body_that_is_not_json_is_400(client, admin, problem):
    response = client.post(URL, data="{not json", content_type="application/json", headers=admin)
    body = problem(response, 400)
    assert body["errors"]


def test_body_in_another_encoding_is_400(client, admin, problem):
    response = client.post(URL, data=b"\xff\xfe{}", content_type="application/json", headers=admin)
    problem(response, 400)


def test_body_sent_as_plain_text_is_422_naming_records(client, admin, problem):
    response = client.post(URL, data=json.dumps({"records": [GOOD]}), content_type="text/plain", headers=admin)
    assert "records" in problem(response, 422)["errors"]


def test_body_that_is_a_list_is_422(client, admin, problem):
    problem(client.post(URL, json=[GOOD], headers=admin), 422)


def test_missing_records_is_422_naming_records(client, admin, problem):
    body = problem(client.post(URL, json={}, headers=admin), 422)
    assert "records" in body["errors"]
    assert "records" in body["detail"]


def test_unknown_top_level_field_is_422_naming_it(client, admin, problem):
    body = problem(client.post(URL, json={"records": [GOOD], "dry_run": True}, headers=admin), 422)
    assert "dry_run" in body["errors"]


def test_records_not_a_list_is_422_naming_records(client, admin, problem):
    body = problem(client.post(URL, json={"records": GOOD}, headers=admin), 422)
    assert "records" in body["errors"]


def test_empty_records_is_422_naming_records(client, admin, problem):
    body = problem(client.post(URL, json={"records": []}, headers=admin), 422)
    assert "records" in body["errors"]


def test_more_than_1000_records_is_422_and_stores_nothing(client, admin, problem, count_rows):
    batch = [{"external_id": str(i), "traits": {"city": "Recife"}} for i in range(1001)]
    body = problem(client.post(URL, json={"records": batch}, headers=admin), 422)
    assert "records" in body["errors"]
    assert count_rows("source_records") == 0


def test_exactly_1000_records_are_accepted(ingest):
    batch = [{"external_id": str(i), "traits": {"city": "Recife"}} for i in range(1000)]
    body = ingest("crm", batch).get_json()
    assert body["counts"]["accepted"] == 1000


@pytest.mark.parametrize("item", [1, "text", None, ["list"], True])
def test_records_containing_a_non_object_is_422_naming_its_index(client, admin, problem, item):
    body = problem(client.post(URL, json={"records": [GOOD, item]}, headers=admin), 422)
    assert "records.1" in body["errors"]


def test_lone_surrogate_in_a_record_is_422_naming_the_record(client, admin, problem, count_rows):
    raw = json.dumps({"records": [GOOD, {"external_id": "s", "traits": {"city": "\udcff"}}]})
    assert "\\udcff" in raw
    response = client.post(URL, data=raw, content_type="application/json", headers=admin)
    assert "records.1" in problem(response, 422)["errors"]
    assert count_rows("source_records") == 0


def test_json_nested_deeper_than_the_parser_allows_is_400(client, admin, problem):
    depth = 5000
    raw = '{"records": [{"external_id": "d", "traits": {"city": "x"}, "events": [{"type": "b", ' \
          '"occurred_at": "2024-01-01T00:00:00Z", "attributes": {"a": ' + "[" * depth + "]" * depth + "}}]}]}"
    problem(client.post(URL, data=raw, content_type="application/json", headers=admin), 400)


def test_integer_literal_too_long_to_parse_is_400(client, admin, problem):
    raw = '{"records": [{"external_id": "n", "identifiers": {"cpf": 1' + "0" * 5000 + "}}]}"
    problem(client.post(URL, data=raw, content_type="application/json", headers=admin), 400)


def test_get_on_the_ingest_endpoint_is_405_problem(client, admin, problem):
    problem(client.get(URL, headers=admin), 405)


def test_unknown_path_is_404_problem(client, admin, problem):
    problem(client.get("/api/v1/nothing-here", headers=admin), 404)


@pytest.mark.parametrize("record", [
    {"external_id": "t1", "events": [{"type": "buy", "occurred_at": "0001-01-01T00:00:00+05:00"}]},
    {"external_id": "t2", "events": [{"type": "buy", "occurred_at": "9999-12-31T23:59:59-05:00"}]},
    {"external_id": "t3", "observed_at": "0001-01-01T00:00:00+05:00", "traits": {"city": "Recife"}},
    {"external_id": "t4", "consents": [{"purpose": "marketing", "status": "granted",
                                        "occurred_at": "0001-01-01T00:00:00+01:00"}]},
], ids=["event", "event-9999", "observed_at", "consent"])
def test_out_of_range_datetime_rejects_only_that_record(ingest, record):
    response = ingest("crm", [GOOD, record])
    assert response.status_code == 200
    assert statuses(response) == ["accepted", "rejected"]
