"""Responses carry no traceback and never echo the personal data they reject."""
from __future__ import annotations

import pytest

BAD_DATE = "31 de fevereiro"
BAD_CPF = "123.456.789-00"  # fails the check digits


def test_rejected_record_errors_do_not_echo_the_raw_values(ingest):
    response = ingest("crm", [{
        "external_id": "p-1",
        "identifiers": {"cpf": BAD_CPF},
        "traits": {"birth_date": BAD_DATE, "full_name": "Joana Pereira"},
    }])
    (result,) = response.get_json()["results"]
    assert result["status"] == "rejected"
    assert "traits.birth_date" in result["errors"]
    text = response.get_data(as_text=True)
    for raw in (BAD_DATE, BAD_CPF, "12345678900", "Joana", "Pereira"):
        assert raw not in text


@pytest.mark.parametrize(("record", "raw"), [
    ({"external_id": "p", "identifiers": {"cpf": [["52998224725"]]}}, "52998224725"),
    ({"external_id": "p", "identifiers": {"email": "x" * 330 + "@example.com"}}, "x" * 330),
    ({"external_id": "p", "traits": {"birth_date": "fevereiro de 87"}}, "fevereiro"),
    ({"external_id": "p", "traits": {"full_name": "Maria " * 60}}, "Maria"),
    ({"external_id": "p", "observed_at": "31/12/2024 10:00", "traits": {"city": "Recife"}}, "31/12/2024"),
    ({"external_id": "p", "consents": [{"purpose": "marketing", "status": "granted", "legal_basis": "y" * 70}]}, "y" * 70),
])
def test_field_errors_never_quote_the_rejected_value(ingest, record, raw):
    response = ingest("crm", [record])
    assert response.get_json()["results"][0]["status"] == "rejected"
    assert raw not in response.get_data(as_text=True)


def test_lookup_error_does_not_echo_the_value(client, admin, problem):
    response = client.get("/api/v1/profiles", query_string={"cpf": "9" * 25}, headers=admin)
    problem(response, 422)
    assert "9" * 25 not in response.get_data(as_text=True)


def test_invalid_cpf_is_kept_but_flagged_unverified(client, admin, ingest, lookup):
    result = ingest("crm", [{"external_id": "p-2", "identifiers": {"cpf": BAD_CPF, "email": "joana@example.com"}}])
    assert result.get_json()["results"][0]["status"] == "accepted"
    (found,) = lookup(email="joana@example.com").get_json()["profiles"]
    assert [p["valid"] for p in found["provenance"]["identifiers"]["cpf_unverified"]] == [False]
    assert "cpf" not in found["attributes"]  # never shown as the verified CPF
    assert len(found["attributes"]["cpf_unverified"]) == 1
    assert [p["valid"] for p in found["provenance"]["identifiers"]["email"]] == [True]
    assert [p["id"] for p in lookup(cpf=BAD_CPF).get_json()["profiles"]] == [found["id"]]


def test_unexpected_exception_is_a_generic_500_problem_without_its_message(app, problem, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("customer 52998224725 broke it")

    response = app.test_client().get("/boom")
    body = problem(response, 500)
    text = response.get_data(as_text=True)
    assert "52998224725" not in text and "RuntimeError" not in text
    assert body["detail"] == "The server failed to process the request; it has been logged."
    assert "RuntimeError" in caplog.text  # logged, by type only
    assert "52998224725" not in caplog.text
