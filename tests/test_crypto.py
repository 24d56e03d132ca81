import os
import stat

import pytest
from sqlalchemy import select

from cdp import crypto
from cdp.config import ConfigError
from cdp.ingest import ingest_batch
from cdp.models import DataKey, Profile, SourceRecord
from cdp.store import rotate_keys
from identity.resolve import decrypt_golden, decrypt_payload
from tests.factories import CPF_A, record


@pytest.fixture
def dek():
    return crypto.new_data_key()


def test_field_round_trip(dek):
    ct = crypto.encrypt_json(dek, {"name": "José da Silva"}, "profiles", "row-1", "golden")
    assert crypto.decrypt_json(dek, ct, "profiles", "row-1", "golden") == {"name": "José da Silva"}
    assert "José".encode() not in ct


def test_same_plaintext_encrypts_differently(dek):
    a = crypto.encrypt_json(dek, "x", "t", "r", "f")
    b = crypto.encrypt_json(dek, "x", "t", "r", "f")
    assert a != b  # random nonce: equal values are not linkable from ciphertext


def test_modified_ciphertext_fails(dek):
    ct = bytearray(crypto.encrypt_json(dek, "secret", "t", "r", "f"))
    ct[-1] ^= 0x01
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_json(dek, bytes(ct), "t", "r", "f")


@pytest.mark.parametrize("table,row,field", [("other", "r", "f"), ("t", "other-row", "f"), ("t", "r", "other")])
def test_ciphertext_moved_to_other_row_or_field_fails(dek, table, row, field):
    ct = crypto.encrypt_json(dek, "secret", "t", "r", "f")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_json(dek, ct, table, row, field)


def test_wrong_key_fails(dek):
    ct = crypto.encrypt_json(dek, "secret", "t", "r", "f")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_json(crypto.new_data_key(), ct, "t", "r", "f")


def test_wrapped_key_bound_to_its_id():
    ring = crypto.Keyring.generate()
    dek = crypto.new_data_key()
    kek_id, wrapped = ring.wrap("key-1", dek)
    assert ring.unwrap("key-1", kek_id, wrapped) == dek
    with pytest.raises(crypto.DecryptionError):
        ring.unwrap("key-2", kek_id, wrapped)


def test_blind_index_is_deterministic_keyed_and_kind_separated():
    ring = crypto.Keyring.generate()
    assert ring.blind_index("email", "a@b.com") == ring.blind_index("email", "a@b.com")
    assert ring.blind_index("email", "a@b.com") != ring.blind_index("phone", "a@b.com")
    assert ring.blind_index("email", "a@b.com") != crypto.Keyring.generate().blind_index("email", "a@b.com")


def test_keyring_file_is_owner_only(settings):
    crypto.Keyring.load_or_create(settings)
    mode = stat.S_IMODE(os.stat(settings.keys_file).st_mode)
    assert mode == 0o600


def test_keyring_readable_by_others_is_refused(settings):
    crypto.Keyring.load_or_create(settings)
    os.chmod(settings.keys_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        crypto.Keyring.load(settings)


def test_malformed_keyring_is_one_clear_error(settings):
    settings.keys_file.parent.mkdir(parents=True, exist_ok=True)
    settings.keys_file.write_text('{"keks": {}}')
    os.chmod(settings.keys_file, 0o600)
    with pytest.raises(ConfigError, match="keyring"):
        crypto.Keyring.load(settings)


def test_missing_keyring_tells_to_run_init(settings):
    with pytest.raises(ConfigError, match="cdp init"):
        crypto.Keyring.load(settings)


def _snapshot(runtime):
    with runtime.session() as s:
        payloads = {r.id: r.payload_ct for r in s.scalars(select(SourceRecord))}
        wrapped = {k.id: (k.kek_id, k.wrapped) for k in s.scalars(select(DataKey))}
    return payloads, wrapped


def test_rotation_rewraps_keys_without_touching_data(runtime):
    ingest_batch(runtime, "loja", [record(cpf=CPF_A, email="ana@example.com", name="Ana Souza")])
    payloads_before, wrapped_before = _snapshot(runtime)
    old_kek = runtime.keyring.active_kek_id
    new_kek = runtime.keyring.add_kek()

    assert rotate_keys(runtime) == len(wrapped_before)

    payloads_after, wrapped_after = _snapshot(runtime)
    assert payloads_after == payloads_before  # data never re-encrypted
    assert all(kek == new_kek for kek, _ in wrapped_after.values())
    # The old KEK can be dropped: everything still decrypts.
    del runtime.keyring.keks[old_kek]
    with runtime.session() as s:
        keys = runtime.keys(s)
        rec = s.scalars(select(SourceRecord)).one()
        assert decrypt_payload(keys, rec)["traits"]["full_name"] == "Ana Souza"


def test_rotation_is_resumable(runtime):
    ingest_batch(runtime, "loja", [record(email=f"p{i}@example.com", name="Bruno Lima") for i in range(5)])
    runtime.keyring.add_kek()
    assert rotate_keys(runtime, batch_size=2) > 0
    assert rotate_keys(runtime, batch_size=2) == 0  # nothing left on the old KEK


def test_shredding_makes_subject_unreadable(runtime):
    ingest_batch(runtime, "loja", [record(cpf=CPF_A, name="Carla Dias")])
    with runtime.session() as s:
        keys = runtime.keys(s)
        profile = s.scalars(select(Profile)).one()
        rec = s.scalars(select(SourceRecord)).one()
        assert keys.destroy([profile.key_id, rec.key_id]) == 2
    with runtime.session() as s:
        keys = runtime.keys(s)
        with pytest.raises(crypto.DecryptionError):
            decrypt_payload(keys, s.scalars(select(SourceRecord)).one())
        with pytest.raises(crypto.DecryptionError):
            decrypt_golden(keys, s.scalars(select(Profile)).one())
        assert all(k.wrapped is None for k in s.scalars(select(DataKey)))
