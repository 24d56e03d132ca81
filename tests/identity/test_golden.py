from datetime import datetime, timezone

from sqlalchemy import select

from cdp.ingest import ensure_source, ingest_batch
from cdp.models import Profile
from identity import golden
from identity.resolve import decrypt_golden
from tests.factories import CPF_A, record


def info(record_id, source="s", trust=50, day=1):
    return golden.RecordInfo(record_id, source, trust, datetime(2026, 1, day, tzinfo=timezone.utc))


RULES = ("source_trust", "most_recent", "most_complete")


def test_trusted_source_beats_recent_one():
    g, prov = golden.build([
        (info("r1", "erp", trust=90, day=1), {"traits": {"full_name": "Ana Souza"}}),
        (info("r2", "forms", trust=10, day=9), {"traits": {"full_name": "ana"}}),
    ], RULES)
    assert g["name"]["full_name"] == "Ana Souza"
    assert prov["name"]["source"] == "erp"


def test_most_recent_wins_between_equal_sources():
    g, prov = golden.build([
        (info("r1", day=1), {"traits": {"city": "Santos"}}),
        (info("r2", day=5), {"traits": {"city": "São Paulo"}}),
    ], RULES)
    assert g["address"]["city"] == "São Paulo"
    assert prov["address"]["record_id"] == "r2"


def test_rule_order_is_configurable():
    items = [
        (info("r1", day=1), {"traits": {"full_name": "Ana Maria de Souza"}}),
        (info("r2", day=5), {"traits": {"full_name": "Ana"}}),
    ]
    g, _ = golden.build(items, ("most_complete", "most_recent"))
    assert g["name"]["full_name"] == "Ana Maria de Souza"


def test_address_is_chosen_as_a_whole():
    g, _ = golden.build([
        (info("r1", day=1), {"traits": {"street": "Rua A", "city": "Santos", "postal_code": "11010000"}}),
        (info("r2", day=5), {"traits": {"city": "Campinas"}}),
    ], RULES)
    assert g["address"] == {"city": "Campinas"}  # never "Rua A" in Campinas


def test_incremental_equals_rebuild_in_any_order():
    items = [
        (info("r1", "erp", 80, 1), {"traits": {"full_name": "Ana Souza"}, "identifiers": [
            {"kind": "email", "value": "a@x.com", "valid": True}]}),
        (info("r2", "loja", 50, 3), {"traits": {"full_name": "Ana S."}, "identifiers": [
            {"kind": "email", "value": "b@x.com", "valid": True}, {"kind": "cpf", "value": "1", "valid": False}]}),
        (info("r3", "forms", 50, 2), {"identifiers": [{"kind": "email", "value": "a@x.com", "valid": True}]}),
    ]
    forward = golden.build(items, RULES)
    backward = golden.build(list(reversed(items)), RULES)
    assert forward == backward


def test_any_rule_list_gives_one_result_in_any_order():
    """One rule, or none (the record id alone breaks ties): every arrival
    order folds into the same golden record, identifiers best first."""
    from itertools import permutations

    items = [
        (info("r1", "erp", 80, 1), {"traits": {"full_name": "Ana Souza"}, "identifiers": [
            {"kind": "email", "value": "a@x.com", "valid": True}, {"kind": "phone", "value": "1", "valid": True}]}),
        (info("r2", "loja", 50, 3), {"traits": {"full_name": "Ana Maria Souza"}, "identifiers": [
            {"kind": "email", "value": "b@x.com", "valid": True}, {"kind": "email", "value": "a@x.com",
                                                                    "valid": True}]}),
        (info("r3", "forms", 50, 2), {"traits": {"full_name": "A."}, "identifiers": [
            {"kind": "email", "value": "c@x.com", "valid": True}]}),
    ]
    for rules, name, emails in ((("most_recent",), "Ana Maria Souza", ["a@x.com", "b@x.com", "c@x.com"]),
                                (("source_trust",), "Ana Souza", ["a@x.com", "c@x.com", "b@x.com"]),
                                ((), "A.", ["c@x.com", "a@x.com", "b@x.com"])):
        results = {repr(golden.build(list(order), rules)) for order in permutations(items)}
        assert len(results) == 1
        g, prov = golden.build(items, rules)
        assert g["name"]["full_name"] == name
        assert g["identifiers"]["email"] == emails  # equal ranks (one record's two e-mails) by value
        assert len(prov["identifiers"]["email"]) == 3


def test_unverified_identifiers_are_kept_apart():
    g, _ = golden.build([
        (info("r1", day=9), {"identifiers": [{"kind": "cpf", "value": "bad", "valid": False}]}),
        (info("r2", day=1), {"identifiers": [{"kind": "cpf", "value": "good", "valid": True}]}),
    ], RULES)
    assert g["identifiers"]["cpf"] == ["good"]
    assert g["identifiers"]["cpf_unverified"] == ["bad"]


def test_profile_golden_record_keeps_provenance(runtime):
    with runtime.session() as s:
        ensure_source(s, "erp", trust=90)
    ingest_batch(runtime, "erp", [record(external_id="e1", cpf=CPF_A, name="Ana Maria Souza",
                                         traits={"city": "Santos"})])
    ingest_batch(runtime, "forms", [record(external_id="f1", cpf=CPF_A, name="ana", email="ana@example.com")])
    with runtime.session() as s:
        profile = s.scalars(select(Profile)).one()
        g = decrypt_golden(runtime.keys(s), profile)
        assert g["name"]["full_name"] == "Ana Maria Souza"
        assert profile.provenance["name"]["source"] == "erp"
        assert profile.provenance["identifiers"]["email"][0]["source"] == "forms"
        assert g["identifiers"]["email"] == ["ana@example.com"]
