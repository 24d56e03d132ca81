from sqlalchemy import func, select

from cdp.ingest import ingest_batch
from cdp.models import Event, Identifier, RecordVersion, SourceRecord
from identity.resolve import decrypt_payload
from tests.factories import CPF_A, CPF_INVALID, record


def _count(runtime, model):
    with runtime.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_same_record_twice_changes_nothing(any_runtime):
    rec = record(external_id="A1", cpf=CPF_A, email="ana@example.com", name="Ana Souza")
    first = ingest_batch(any_runtime, "erp", [rec])
    counts = (_count(any_runtime, SourceRecord), _count(any_runtime, Identifier), _count(any_runtime, RecordVersion))
    second = ingest_batch(any_runtime, "erp", [dict(rec)])
    assert first.counts()["accepted"] == 1
    assert second.counts()["duplicate"] == 1
    assert second.record_ids == []
    assert (_count(any_runtime, SourceRecord), _count(any_runtime, Identifier), _count(any_runtime, RecordVersion)) == counts


def test_observed_at_alone_is_not_a_change(runtime):
    ingest_batch(runtime, "erp", [record(external_id="A1", email="a@b.com", observed_at="2026-01-01T00:00:00Z")])
    again = ingest_batch(runtime, "erp", [record(external_id="A1", email="a@b.com", observed_at="2026-02-01T00:00:00Z")])
    assert again.counts()["duplicate"] == 1


def test_changed_record_is_new_version(any_runtime):
    ingest_batch(any_runtime, "erp", [record(external_id="A1", email="ana@example.com", name="Ana Souza")])
    result = ingest_batch(any_runtime, "erp", [record(external_id="A1", email="ana.souza@example.com", name="Ana Souza")])
    assert result.results[0].status == "updated"
    with any_runtime.session() as s:
        rec = s.scalars(select(SourceRecord)).one()
        assert rec.version == 2
        assert s.scalar(select(func.count()).select_from(RecordVersion)) == 1
        assert decrypt_payload(any_runtime.keys(s), rec)["identifiers"][0]["value"] == "ana.souza@example.com"
        idents = [i for i in rec.identifiers if not i.kind.startswith("bk:")]
        assert len(idents) == 1  # old identifiers replaced, not accumulated


def test_same_external_id_in_other_source_is_other_record(runtime):
    ingest_batch(runtime, "erp", [record(external_id="1", email="a@b.com")])
    ingest_batch(runtime, "loja", [record(external_id="1", email="a@b.com")])
    assert _count(runtime, SourceRecord) == 2


def test_bad_record_does_not_block_good_ones(runtime):
    batch = [
        record(email="ok1@example.com"),
        {"external_id": "x", "identifiers": {"email": "a@b.com"}, "colour": "blue"},
        record(email="ok2@example.com", traits={"birth_date": "31/02"}),
        record(email="ok3@example.com"),
    ]
    result = ingest_batch(runtime, "loja", batch)
    assert [r.status for r in result.results] == ["accepted", "rejected", "rejected", "accepted"]
    assert "colour" in result.results[1].errors
    assert "traits.birth_date" in result.results[2].errors
    assert _count(runtime, SourceRecord) == 2


def test_rejection_messages_hold_no_raw_value(runtime):
    result = ingest_batch(runtime, "loja", [record(email="a@b.com", traits={"birth_date": "not-a-date-9x7"})])
    assert "not-a-date-9x7" not in str(result.results[0].errors)


def test_record_needs_some_content(runtime):
    result = ingest_batch(runtime, "loja", [{"external_id": "empty"}])
    assert result.results[0].status == "rejected"
    assert "identifiers" in result.results[0].errors


def test_invalid_cpf_is_kept_but_not_strong(runtime):
    ingest_batch(runtime, "loja", [record(cpf=CPF_INVALID, name="Davi Rocha")])
    with runtime.session() as s:
        ident = s.scalars(select(Identifier).where(Identifier.kind.not_like("bk:%"))).one()
        assert ident.kind == "cpf_unverified"
        assert ident.strong is False
        payload = decrypt_payload(runtime.keys(s), s.scalars(select(SourceRecord)).one())
        assert payload["identifiers"][0]["valid"] is False


def test_custom_identifier_kinds_exact_and_fuzzy(runtime):
    ingest_batch(runtime, "erp", [record(custom={"customer_number": "  C-001 ", "ssn": {"value": "123", "match": "fuzzy"}})])
    with runtime.session() as s:
        kinds = {i.kind: i.strong for i in s.scalars(select(Identifier).where(Identifier.kind.not_like("bk:%")))}
    assert kinds == {"custom:customer_number": True, "custom:ssn": False}


def test_events_keep_amounts_clear_and_attributes_encrypted(runtime):
    event = {"type": "purchase", "occurred_at": "2026-05-01T10:00:00-03:00", "id": "PED-1", "amount": "349.90",
             "attributes": {"note": "entregar para Maria"}}
    ingest_batch(runtime, "loja", [record(email="a@b.com", events=[event])])
    with runtime.session() as s:
        ev = s.scalars(select(Event)).one()
        assert str(ev.amount) == "349.90"
        assert ev.currency == "BRL"
        assert ev.occurred_at.hour == 13  # stored in UTC
        assert b"Maria" not in ev.attributes_ct
        assert ev.profile_id is not None


def test_normalized_forms_are_stored(runtime):
    ingest_batch(runtime, "loja", [record(email="  Ana@Example.COM ", phone="(11) 8765-4321", cpf="52998224725",
                                          traits={"postal_code": "1310100", "birth_date": "17/05/1990"})])
    with runtime.session() as s:
        payload = decrypt_payload(runtime.keys(s), s.scalars(select(SourceRecord)).one())
    values = {i["kind"]: i["value"] for i in payload["identifiers"]}
    assert values == {"email": "ana@example.com", "phone": "+5511987654321", "cpf": "52998224725"}
    assert payload["traits"]["postal_code"] == "01310100"
    assert payload["traits"]["birth_date"] == "1990-05-17"


def test_record_ids_and_their_keys_follow_the_order_of_ingest(any_runtime):
    # Time-ordered ids put new rows at the right end of the indexes on them
    # (a random id wrote all over them); later batches get larger ids.
    first = ingest_batch(any_runtime, "erp", [record(external_id=str(n), email=f"p{n}@example.com") for n in range(50)])
    second = ingest_batch(any_runtime, "erp", [record(external_id="later", email="later@example.com")])
    ids = first.record_ids + second.record_ids
    assert ids == sorted(ids) and len(set(ids)) == 51
    with any_runtime.session() as s:
        key_of = dict(s.execute(select(SourceRecord.id, SourceRecord.key_id)).all())
    keys = [key_of[rid] for rid in ids]
    assert keys == sorted(keys)
