"""Merge history, undoing a merge, and splitting records out of a profile."""
from __future__ import annotations

import pytest


def profile(client, admin, profile_id) -> dict:
    response = client.get(f"/api/v1/profiles/{profile_id}", headers=admin)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def external_ids(view) -> set[str]:
    return {s["external_id"] for s in view["sources"]}


def merge_events(client, admin, profile_id) -> list[dict]:
    response = client.get(f"/api/v1/profiles/{profile_id}/merges", headers=admin)
    assert response.status_code == 200
    return [m for m in response.get_json()["merges"] if m["kind"] == "merge"]


# -- the merge -----------------------------------------------------------------------

def test_linking_record_merges_the_two_profiles_into_the_older(client, admin, merged):
    survivor = profile(client, admin, merged["survivor"])
    assert external_ids(survivor) == {"A", "B", "C"}
    absorbed = profile(client, admin, merged["absorbed"])
    assert absorbed["status"] == "merged"
    assert absorbed["merged_into"] == merged["survivor"]


def test_merge_history_lists_the_merge_with_its_rule(client, admin, merged):
    (event,) = merge_events(client, admin, merged["survivor"])
    assert event["rule"] == "same_email"
    assert event["profile_id"] == merged["survivor"]
    assert event["other_profile_id"] == merged["absorbed"]
    assert event["record_ids"] == [merged["records"]["B"]]
    assert event["details"]["via_record"] == merged["records"]["C"]
    assert event["undone_at"] is None


def test_merge_history_is_also_listed_for_the_absorbed_profile(client, admin, merged):
    assert [e["other_profile_id"] for e in merge_events(client, admin, merged["absorbed"])] == [merged["absorbed"]]


def test_merged_profile_is_found_once_by_either_identifier(lookup, merged):
    assert [p["id"] for p in lookup(email="bia@example.com").get_json()["profiles"]] == [merged["survivor"]]
    assert [p["id"] for p in lookup(cpf="52998224725").get_json()["profiles"]] == [merged["survivor"]]


# -- undo ------------------------------------------------------------------------------

def undo(client, headers, merge_id):
    return client.post(f"/api/v1/merges/{merge_id}/undo", headers=headers)


def test_undo_restores_the_two_profiles(client, admin, merged):
    (event,) = merge_events(client, admin, merged["survivor"])
    response = undo(client, admin, event["id"])
    assert response.status_code == 200
    assert external_ids(profile(client, admin, merged["survivor"])) == {"A", "C"}
    restored = profile(client, admin, merged["absorbed"])
    assert restored["status"] == "active"
    assert external_ids(restored) == {"B"}


def test_undo_answers_with_the_split_event_it_recorded(client, admin, merged):
    (event,) = merge_events(client, admin, merged["survivor"])
    body = undo(client, admin, event["id"]).get_json()
    assert body["kind"] == "split"
    assert body["rule"] == "undo_merge"
    assert body["details"] == {"undoes_merge_event": event["id"]}
    assert body["actor"].startswith("api:")


def test_undone_merge_is_marked_in_the_history(client, admin, merged):
    (event,) = merge_events(client, admin, merged["survivor"])
    undo(client, admin, event["id"])
    (after,) = merge_events(client, admin, merged["survivor"])
    assert after["undone_at"] is not None


def test_second_undo_is_409(client, admin, problem, merged):
    (event,) = merge_events(client, admin, merged["survivor"])
    assert undo(client, admin, event["id"]).status_code == 200
    problem(undo(client, admin, event["id"]), 409)


def test_undone_profiles_stay_apart_when_the_linking_record_is_resent(client, admin, ingest, merged):
    (event,) = merge_events(client, admin, merged["survivor"])
    undo(client, admin, event["id"])
    ingest("erp", [{"external_id": "C", "identifiers": {"cpf": "52998224725", "email": "bia@example.com"},
                    "traits": {"city": "Recife"}}])
    assert profile(client, admin, merged["absorbed"])["status"] == "active"
    assert external_ids(profile(client, admin, merged["absorbed"])) == {"B"}


@pytest.mark.parametrize("merge_id", ["999", "0", "2147483648", "9223372036854775808", "99999999999999999999999"])
def test_undo_of_unknown_merge_is_404(client, admin, problem, merge_id):
    problem(undo(client, admin, merge_id), 404)


def test_undo_of_a_split_event_is_404(client, admin, problem, merged):
    (event,) = merge_events(client, admin, merged["survivor"])
    split_event = undo(client, admin, event["id"]).get_json()
    problem(undo(client, admin, split_event["id"]), 404)


def test_undo_with_non_integer_id_is_404(client, admin, problem):
    problem(undo(client, admin, "abc"), 404)


# -- split ------------------------------------------------------------------------------

def split(client, headers, profile_id, body):
    return client.post(f"/api/v1/profiles/{profile_id}/split", json=body, headers=headers)


def test_split_moves_records_into_a_new_profile(client, admin, merged):
    response = split(client, admin, merged["survivor"], {"record_ids": [merged["records"]["B"]]})
    assert response.status_code == 201
    new = response.get_json()
    assert new["id"] not in (merged["survivor"], merged["absorbed"])
    assert external_ids(new) == {"B"}
    assert [s["record_id"] for s in new["sources"]] == [merged["records"]["B"]]
    assert external_ids(profile(client, admin, merged["survivor"])) == {"A", "C"}


def test_split_profile_keeps_its_own_golden_record(client, admin, merged):
    new = split(client, admin, merged["survivor"], {"record_ids": [merged["records"]["B"]]}).get_json()
    assert new["attributes"]["emails"] == ["bia@example.com"]
    assert "cpf" not in new["attributes"]


def test_split_is_recorded_in_the_history_of_both_profiles(client, admin, merged):
    new = split(client, admin, merged["survivor"], {"record_ids": [merged["records"]["B"]]}).get_json()
    history = client.get(f"/api/v1/profiles/{new['id']}/merges", headers=admin).get_json()["merges"]
    assert [(e["kind"], e["rule"], e["profile_id"]) for e in history] == [("split", "manual_split", merged["survivor"])]


def test_split_with_records_of_another_profile_is_422_naming_record_ids(client, admin, ingest, problem, merged):
    stranger = ingest("crm", [{"external_id": "Z", "identifiers": {"email": "zed@example.net"}}])
    record_id = stranger.get_json()["results"][0]["record_id"]
    response = split(client, admin, merged["survivor"], {"record_ids": [record_id]})
    body = problem(response, 422)
    assert body["field"] == "record_ids"
    assert "record_ids" in body["detail"]


def test_split_with_unknown_record_ids_is_422(client, admin, problem, merged):
    body = problem(split(client, admin, merged["survivor"], {"record_ids": ["0" * 36]}), 422)
    assert body["field"] == "record_ids"


def test_splitting_every_record_out_is_422(client, admin, problem, merged):
    body = problem(split(client, admin, merged["survivor"], {"record_ids": list(merged["records"].values())}), 422)
    assert body["field"] == "record_ids"
    assert external_ids(profile(client, admin, merged["survivor"])) == {"A", "B", "C"}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "record_ids"),
    ({"record_ids": []}, "record_ids"),
    ({"record_ids": "not-a-list"}, "record_ids"),
    ({"record_ids": ["short"]}, "record_ids.0"),
    ({"record_ids": [None]}, "record_ids.0"),
    ({"record_ids": ["0" * 36], "reason": "x"}, "reason"),
])
def test_split_with_a_malformed_body_is_422_naming_the_field(client, admin, problem, merged, body, field):
    assert field in problem(split(client, admin, merged["survivor"], body), 422)["errors"]


def test_split_with_a_body_that_is_not_json_is_400(client, admin, problem, merged):
    response = client.post(f"/api/v1/profiles/{merged['survivor']}/split", data="[", content_type="application/json",
                           headers=admin)
    problem(response, 400)


def test_split_of_a_merged_away_profile_is_404(client, admin, problem, merged):
    problem(split(client, admin, merged["absorbed"], {"record_ids": [merged["records"]["B"]]}), 404)


@pytest.mark.parametrize("profile_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_split_of_an_unknown_profile_is_404(client, admin, problem, profile_id):
    problem(split(client, admin, profile_id, {"record_ids": ["0" * 36]}), 404)
