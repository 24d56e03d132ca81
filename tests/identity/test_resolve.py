import pytest
from sqlalchemy import func, select

from cdp.ingest import ingest_batch
from cdp.models import CannotLink, MergeEvent, Profile, SourceRecord
from identity.resolve import Resolver
from tests.factories import CPF_A, CPF_B, CPF_INVALID, record


def profile_of(runtime, source, external_id):
    with runtime.session() as s:
        key = runtime.keyring.keyed_hash("external_id", source, external_id)
        return s.scalar(select(SourceRecord.profile_id).where(SourceRecord.source == source,
                                                              SourceRecord.external_key == key))


def active_profiles(runtime):
    with runtime.session() as s:
        return s.scalar(select(func.count()).select_from(Profile).where(Profile.status == "active"))


def test_same_valid_cpf_in_any_format_links(any_runtime):
    ingest_batch(any_runtime, "erp", [record(external_id="e1", cpf="529.982.247-25", name="ANA SOUZA")])
    ingest_batch(any_runtime, "loja", [record(external_id="l1", cpf="52998224725", name="Ana Souza")])
    assert profile_of(any_runtime, "erp", "e1") == profile_of(any_runtime, "loja", "l1")


def test_same_email_links(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", email="ana@example.com")])
    ingest_batch(runtime, "forms", [record(external_id="f1", email=" ANA@example.com")])
    assert profile_of(runtime, "erp", "e1") == profile_of(runtime, "forms", "f1")


def test_same_phone_with_matching_name_links(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", phone="+55 (11) 98765-4321", name="José da Silva")])
    ingest_batch(runtime, "forms", [record(external_id="f1", phone="11 8765-4321", name="Jose Silva")])
    assert profile_of(runtime, "erp", "e1") == profile_of(runtime, "forms", "f1")


def test_same_phone_with_other_name_does_not_link(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", phone="11987654321", name="José da Silva")])
    ingest_batch(runtime, "forms", [record(external_id="f1", phone="11987654321", name="Maria da Silva")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "forms", "f1")


def test_same_phone_without_name_does_not_link(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", phone="11987654321", name="José da Silva")])
    ingest_batch(runtime, "forms", [record(external_id="f1", phone="11987654321")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "forms", "f1")


def test_shared_family_email_with_different_cpfs_does_not_link(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", cpf=CPF_A, email="familia@example.com", name="Ana Souza")])
    ingest_batch(runtime, "erp", [record(external_id="e2", cpf=CPF_B, email="familia@example.com", name="Pedro Souza")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "erp", "e2")


def test_invalid_cpf_never_links(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", cpf=CPF_INVALID, name="Ana Souza")])
    ingest_batch(runtime, "loja", [record(external_id="l1", cpf=CPF_INVALID, name="Bruno Lima")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "loja", "l1")


def test_record_linking_two_profiles_merges_them(any_runtime):
    ingest_batch(any_runtime, "erp", [record(external_id="e1", cpf=CPF_A, name="Ana Souza")])
    ingest_batch(any_runtime, "forms", [record(external_id="f1", email="ana@example.com", name="Ana")])
    assert active_profiles(any_runtime) == 2
    ingest_batch(any_runtime, "loja", [record(external_id="l1", cpf=CPF_A, email="ana@example.com", name="Ana Souza")])
    assert active_profiles(any_runtime) == 1
    pid = profile_of(any_runtime, "erp", "e1")
    assert pid == profile_of(any_runtime, "forms", "f1") == profile_of(any_runtime, "loja", "l1")
    with any_runtime.session() as s:
        merge = s.scalars(select(MergeEvent)).one()
        assert merge.kind == "merge" and merge.profile_id == pid
        assert merge.rule == "same_email"
        assert merge.details["matched_on"] == ["email"]


def test_merge_rules_are_configurable(tmp_path):
    from tests.conftest import make_runtime, make_settings

    runtime = make_runtime(make_settings(tmp_path / "i", match_rules=("cpf",)))
    ingest_batch(runtime, "erp", [record(external_id="e1", email="ana@example.com")])
    ingest_batch(runtime, "forms", [record(external_id="f1", email="ana@example.com")])
    assert profile_of(runtime, "erp", "e1") != profile_of(runtime, "forms", "f1")


def _merged(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", cpf=CPF_A, name="Ana Souza")])
    ingest_batch(runtime, "forms", [record(external_id="f1", email="ana@example.com", name="Ana")])
    ingest_batch(runtime, "loja", [record(external_id="l1", cpf=CPF_A, email="ana@example.com", name="Ana Souza")])
    with runtime.session() as s:
        return s.scalars(select(MergeEvent)).one().id


def test_undo_merge_restores_both_profiles(any_runtime):
    merge_id = _merged(any_runtime)
    with any_runtime.session() as s:
        Resolver(s, any_runtime.keys(s), any_runtime.settings).undo_merge(merge_id, actor="test")
    assert active_profiles(any_runtime) == 2
    assert profile_of(any_runtime, "forms", "f1") != profile_of(any_runtime, "erp", "e1")
    with any_runtime.session() as s:
        assert s.get(MergeEvent, merge_id).undone_at is not None
        assert s.scalar(select(func.count()).select_from(CannotLink)) == 1


def test_undone_merge_is_not_redone_automatically(runtime):
    merge_id = _merged(runtime)
    with runtime.session() as s:
        Resolver(s, runtime.keys(s), runtime.settings).undo_merge(merge_id, actor="test")
    ingest_batch(runtime, "crm", [record(external_id="c1", cpf=CPF_A, email="ana@example.com", name="Ana Souza")])
    assert profile_of(runtime, "forms", "f1") != profile_of(runtime, "erp", "e1")


def test_undo_twice_is_refused(runtime):
    merge_id = _merged(runtime)
    with runtime.session() as s:
        Resolver(s, runtime.keys(s), runtime.settings).undo_merge(merge_id, actor="test")
    with runtime.session() as s, pytest.raises(ValueError):
        Resolver(s, runtime.keys(s), runtime.settings).undo_merge(merge_id, actor="test")


def test_split_moves_records_to_new_profile(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", cpf=CPF_A, name="Ana Souza")])
    ingest_batch(runtime, "loja", [record(external_id="l1", cpf=CPF_A, name="Ana Souza")])
    pid = profile_of(runtime, "erp", "e1")
    with runtime.session() as s:
        rid = s.scalar(select(SourceRecord.id).where(SourceRecord.source == "loja"))
        new = Resolver(s, runtime.keys(s), runtime.settings).split(pid, [rid], actor="test")
        new_id = new.id
    assert profile_of(runtime, "loja", "l1") == new_id != profile_of(runtime, "erp", "e1")
    with runtime.session() as s:
        assert s.get(Profile, new_id).record_count == 1
        assert s.get(Profile, pid).record_count == 1


def test_split_refuses_foreign_or_all_records(runtime):
    ingest_batch(runtime, "erp", [record(external_id="e1", cpf=CPF_A)])
    pid = profile_of(runtime, "erp", "e1")
    with runtime.session() as s:
        resolver = Resolver(s, runtime.keys(s), runtime.settings)
        rid = s.scalar(select(SourceRecord.id))
        with pytest.raises(ValueError):
            resolver.split(pid, [rid], actor="test")
        with pytest.raises(ValueError):
            resolver.split(pid, ["00000000-0000-0000-0000-000000000000"], actor="test")


def test_resolution_is_idempotent(runtime):
    from identity.resolve import resolve_records

    result = ingest_batch(runtime, "erp", [record(external_id="e1", cpf=CPF_A)])
    assert resolve_records(runtime, result.record_ids) == []  # already resolved: nothing to do
    assert active_profiles(runtime) == 1


def test_cached_features_follow_a_new_version_of_the_record(runtime):
    """The feature cache is keyed by record version: after an update, the
    next lookup sees the new content, not what was cached for the old one."""
    from identity.resolve import load_features

    first = ingest_batch(runtime, "crm", [record("C-1", email="ana@example.com", name="Ana Souza")])
    rid = first.results[0].record_id
    with runtime.session() as s:
        assert load_features(s, runtime.keys(s), [rid])[rid].surname == "souza"  # now cached
    ingest_batch(runtime, "crm", [record("C-1", email="ana@example.com", name="Ana Prado")])
    with runtime.session() as s:
        assert s.get(SourceRecord, rid).version == 2
        assert load_features(s, runtime.keys(s), [rid])[rid].surname == "prado"


def test_stored_feature_copies_are_read_instead_of_payloads_and_older_ones_are_derived_again(runtime):
    """Ingest seals each record's features beside its payload, with the
    record's own key; a cold cache reads the copy (here the payload is made
    unreadable to prove it), and a record without a copy, or with one an
    earlier release wrote, is derived from its payload again."""
    import marshal

    from cdp import crypto
    from identity import features as features_mod
    from identity.resolve import FEATURES, load_features

    result = ingest_batch(runtime, "crm", [record("C-1", email="ana@example.com", name="Ana Souza"),
                                          record("C-2", email="bia@example.com", name="Beatriz Lima"),
                                          record("C-3", email="caio@example.com", name="Caio Prado")])
    one, two, three = (r.record_id for r in result.results)
    with runtime.session() as s:
        keys = runtime.keys(s)
        rows = {r.id: r for r in s.scalars(select(SourceRecord))}
        for rid, row in rows.items():
            assert b"souza" not in row.features_ct.lower() and b"ana@" not in row.features_ct
            payload = crypto.decrypt_json(keys.get(row.key_id), row.payload_ct, "source_records", rid, "payload")
            assert features_mod.unseal(keys.get(row.key_id), rid, row.features_ct) == features_mod.from_payload(payload)
        # One: the payload unreadable, so only its copy can answer. Two: no copy (stored before
        # copies existed). Three: a copy an earlier release wrote (another format version).
        rows[one].payload_ct = b"\x00" * 64
        rows[two].features_ct = None
        old = marshal.dumps((features_mod.FEATURES_VERSION - 1, ("caio",)), 4)
        rows[three].features_ct = crypto.encrypt_field(keys.get(rows[three].key_id), old,
                                                       crypto.field_aad("source_records", three, "features"))
        s.commit()
    FEATURES._items.clear()  # a worker that has not met them
    with runtime.session() as s:
        got = load_features(s, runtime.keys(s), [one, two, three])
    assert (got[one].surname, got[two].surname, got[three].surname) == ("souza", "lima", "prado")
    assert got[three].emails == frozenset({"caio@example.com"})

    ingest_batch(runtime, "crm", [record("C-3", email="caio@example.com", name="Caio Prado Neto")])
    with runtime.session() as s:
        row = s.get(SourceRecord, three)
        assert row.version == 2
        assert features_mod.unseal(runtime.keys(s).get(row.key_id), three, row.features_ct).surnames == ("prado", "neto")


def test_key_holders_count_unresolved_records_but_give_them_no_profile(any_runtime):
    """A key's holders include records stored but not resolved yet (they make a
    key crowded, as in a batch rebuild) without a profile to join; at most cap+1 come back."""
    from cdp.models import Identifier
    from identity.resolve import holders

    ingest_batch(any_runtime, "erp", [record(external_id="e1", email="ana@example.com"),
                                      record(external_id="e2", email="ana@example.com")])
    ingest_batch(any_runtime, "forms", [record(external_id="f1", email="ana@example.com")], resolve=False)
    with any_runtime.session() as s:
        bi = s.scalar(select(Identifier.blind_index).where(Identifier.kind == "email").limit(1))
        found = holders(s, {bi: 200})[bi]
        pending = s.scalar(select(SourceRecord.id).where(SourceRecord.status == "pending"))
        assert len(holders(s, {bi: 1})[bi]) == 2  # cap + 1: enough to call the key crowded
    assert len(found) == 3
    assert {pid for rid, pid, _ in found if rid != pending} == {profile_of(any_runtime, "erp", "e1")}
    assert [pid for rid, pid, _ in found if rid == pending] == [None]
