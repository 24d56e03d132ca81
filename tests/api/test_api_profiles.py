"""Profile lookups by identifier and the golden-record view."""
from __future__ import annotations

import pytest

CPF = "529.982.247-25"  # the `person` fixture's CPF
CPF_DIGITS = "52998224725"
UNKNOWN = "00000000-0000-0000-0000-000000000000"


def found_ids(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [p["id"] for p in response.get_json()["profiles"]]


@pytest.mark.parametrize("cpf", ["529.982.247-25", "52998224725", " 529 982 247 25 "])
def test_cpf_lookup_finds_exactly_one_profile_for_both_records(person, lookup, cpf):
    assert found_ids(lookup(cpf=cpf)) == [person["profile_id"]]


def test_both_records_of_the_person_are_in_the_one_profile(person, lookup):
    (profile,) = lookup(cpf=CPF_DIGITS).get_json()["profiles"]
    assert profile["record_count"] == 2
    assert profile["status"] == "active"


@pytest.mark.parametrize("email", ["ANA.SOUZA@EXAMPLE.COM", "  Ana.Souza@Example.com  ", "ana@example.org",
                                   "mailto:ana@EXAMPLE.org"])
def test_email_lookup_ignores_case_and_spacing(person, lookup, email):
    assert found_ids(lookup(email=email)) == [person["profile_id"]]


@pytest.mark.parametrize("phone", ["+55 11 98765-4321", "11987654321", "(11) 8765-4321", "+551187654321",
                                   "5511987654321", "011 98765 4321"])
def test_phone_lookup_accepts_other_formats(person, lookup, phone):
    assert found_ids(lookup(phone=phone)) == [person["profile_id"]]


def test_lookup_with_several_identifiers_needs_all_to_match(person, lookup):
    assert found_ids(lookup(cpf=CPF, email="ana@example.org")) == [person["profile_id"]]
    assert found_ids(lookup(cpf=CPF, email="someone.else@example.org")) == []


def test_lookup_of_an_unknown_person_finds_nothing(person, lookup):
    assert found_ids(lookup(email="nobody@example.com")) == []


def test_lookup_lists_profiles_without_their_source_records(person, lookup):
    (profile,) = lookup(cpf=CPF).get_json()["profiles"]
    assert "sources" not in profile
    assert profile["attributes"]["cpf"] == CPF_DIGITS


def test_lookup_without_criteria_is_422(client, admin, problem):
    problem(client.get("/api/v1/profiles", headers=admin), 422)


def test_lookup_with_only_unknown_criteria_is_422(client, admin, problem):
    problem(client.get("/api/v1/profiles?name=Ana", headers=admin), 422)


@pytest.mark.parametrize("query", [
    {"phone": "abc"}, {"phone": "+"}, {"phone": "9" * 40}, {"phone": "١٢٣"},
    {"cpf": "---"}, {"cpf": "abc"}, {"cpf": "1" * 21}, {"cpf": ""},
    {"email": "mailto:"}, {"email": "@@"}, {"email": "a" * 321}, {"email": "a\x00b@example.com"},
    {"cnpj": "//"}, {"cnpj": "AB.CDE.FGH/IJKL-MN"},
])
def test_lookup_value_that_cannot_be_normalized_never_500s(client, admin, problem, query):
    response = client.get("/api/v1/profiles", query_string=query, headers=admin)
    assert response.status_code in (200, 422), response.get_data(as_text=True)
    if response.status_code == 422:
        body = problem(response, 422)
        named = set(body.get("errors", {})) | {body.get("field")}
        assert set(query) <= named, body


def test_empty_lookup_value_is_422_naming_the_field(client, admin, problem):
    body = problem(client.get("/api/v1/profiles", query_string={"phone": "---"}, headers=admin), 422)
    assert body["field"] == "phone"


# -- the golden record ----------------------------------------------------------------

def test_profile_has_merged_attributes_from_both_sources(client, admin, person):
    profile = client.get(f"/api/v1/profiles/{person['profile_id']}", headers=admin).get_json()
    attributes = profile["attributes"]
    assert attributes["cpf"] == CPF_DIGITS
    assert set(attributes["emails"]) == {"ana.souza@example.com", "ana@example.org"}
    assert attributes["phone"] == "+5511987654321"
    assert attributes["full_name"] == "Ana Souza"
    assert attributes["birth_date"] == "1990-05-01"


def test_profile_provenance_names_the_source_of_each_value(client, admin, person):
    provenance = client.get(f"/api/v1/profiles/{person['profile_id']}", headers=admin).get_json()["provenance"]
    assert provenance["name"]["source"] == "crm"
    assert provenance["name"]["record_id"] == person["crm_record"]
    assert provenance["birth_date"]["source"] == "shop"
    assert provenance["birth_date"]["record_id"] == person["shop_record"]
    email_sources = {p["source"] for p in provenance["identifiers"]["email"]}
    assert email_sources == {"crm", "shop"}
    assert {p["source"] for p in provenance["identifiers"]["phone"]} == {"crm"}


def test_profile_provenance_holds_no_values(client, admin, person):
    provenance = client.get(f"/api/v1/profiles/{person['profile_id']}", headers=admin).get_json()["provenance"]
    text = repr(provenance)
    for value in ("Ana", "example", CPF_DIGITS, "98765"):
        assert value not in text


def test_profile_sources_list_both_records_with_their_external_ids(client, admin, person):
    sources = client.get(f"/api/v1/profiles/{person['profile_id']}", headers=admin).get_json()["sources"]
    assert {(s["source"], s["external_id"]) for s in sources} == {("crm", "crm-1"), ("shop", "shop-9")}
    assert {s["record_id"] for s in sources} == {person["crm_record"], person["shop_record"]}
    by_source = {s["source"]: s for s in sources}
    assert by_source["crm"]["link_rule"] == "new_profile"
    assert by_source["shop"]["link_rule"] == "same_cpf"


def test_updated_record_shows_its_new_version_in_the_profile(client, admin, ingest, person):
    response = ingest("crm", [{
        "external_id": "crm-1",
        "identifiers": {"cpf": CPF, "email": "ana.souza@example.com", "phone": "(11) 98765-4321"},
        "traits": {"full_name": "Ana Souza", "city": "Campinas"},
    }])
    assert response.get_json()["results"][0]["status"] == "updated"
    profile = client.get(f"/api/v1/profiles/{person['profile_id']}", headers=admin).get_json()
    assert {s["source"]: s["version"] for s in profile["sources"]} == {"crm": 2, "shop": 1}
    assert profile["attributes"]["address"]["city"] == "Campinas"


def test_unknown_profile_id_is_404(client, admin, problem):
    problem(client.get(f"/api/v1/profiles/{UNKNOWN}", headers=admin), 404)


@pytest.mark.parametrize("profile_id", ["nope", "123", "00000000-0000-0000-0000-00000000000g", "%00"])
def test_non_uuid_profile_id_is_404(client, admin, problem, profile_id):
    problem(client.get(f"/api/v1/profiles/{profile_id}", headers=admin), 404)


def test_merges_of_unknown_profile_is_404(client, admin, problem):
    problem(client.get(f"/api/v1/profiles/{UNKNOWN}/merges", headers=admin), 404)


def test_merges_of_non_uuid_profile_is_404(client, admin, problem):
    problem(client.get("/api/v1/profiles/nope/merges", headers=admin), 404)


def test_profile_without_merges_has_an_empty_history(client, admin, person):
    response = client.get(f"/api/v1/profiles/{person['profile_id']}/merges", headers=admin)
    assert response.status_code == 200
    assert response.get_json() == {"merges": []}
