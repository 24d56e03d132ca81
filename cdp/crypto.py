"""Field encryption, envelope keys and blind indexes.

* Every personal field is AES-256-GCM ciphertext; the associated data binds it
  to its table, row and field, so a ciphertext copied to another row or field
  fails to decrypt.
* Each data key (DEK) encrypts one subject's record or profile and is stored
  wrapped by a key-encryption key (KEK) from the keyring. Rotation re-wraps
  DEKs only; destroying a DEK (crypto-shredding) makes its data unreadable,
  in backups too.
* Identifiers are found through blind indexes: HMAC-SHA256 of the normalized
  value under a separate index key, so the database can match without
  holding plaintext.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cdp.config import ConfigError, Settings

NONCE_BYTES = 12
BLIND_INDEX_BYTES = 16  # 128 bits: collision-free in practice, half the index size


class DecryptionError(Exception):
    """Ciphertext was tampered with, moved, or its key was destroyed."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ConfigError(f"keyring: {what} is not valid base64") from None
    if len(value) != 32:
        raise ConfigError(f"keyring: {what} must be 32 bytes (base64 of 32 random bytes)")
    return value


@dataclass
class Keyring:
    """Key material that never goes into the database."""

    keks: dict[str, bytes]
    active_kek_id: str
    index_key: bytes
    hash_key: bytes  # keys content hashes, so equal records are detectable but not guessable
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @classmethod
    def generate(cls) -> "Keyring":
        kek_id = _new_kek_id()
        return cls(
            keks={kek_id: secrets.token_bytes(32)},
            active_kek_id=kek_id,
            index_key=secrets.token_bytes(32),
            hash_key=secrets.token_bytes(32),
        )

    # -- persistence -------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "keks": {kid: _b64(k) for kid, k in self.keks.items()},
                "active_kek": self.active_kek_id,
                "index_key": _b64(self.index_key),
                "hash_key": _b64(self.hash_key),
                "signing_key": _b64(self.signing_key),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> "Keyring":
        try:
            data = json.loads(text)
            keks = {kid: _unb64(k, f"kek {kid}") for kid, k in data["keks"].items()}
            active = data["active_kek"]
            ring = cls(
                keks=keks,
                active_kek_id=active,
                index_key=_unb64(data["index_key"], "index_key"),
                hash_key=_unb64(data["hash_key"], "hash_key"),
                signing_key=_unb64(data["signing_key"], "signing_key"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError("keyring is malformed (expected keks, active_kek, index_key, hash_key, signing_key)") from None
        if active not in keks:
            raise ConfigError("keyring: active_kek names a key that is not in keks")
        return ring

    def save(self, path: Path) -> None:
        """Write atomically, readable by the owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, settings: Settings) -> "Keyring":
        if settings.keyring_json:
            return cls.from_json(settings.keyring_json)
        if not settings.keys_file.exists():
            raise ConfigError(f"no key material: run `cdp init` (creates {settings.keys_file}) or set CDP_KEYRING")
        mode = settings.keys_file.stat().st_mode & 0o077
        if mode:
            raise ConfigError(f"{settings.keys_file} is readable by others: run chmod 600 on it")
        return cls.from_json(settings.keys_file.read_text())

    @classmethod
    def load_or_create(cls, settings: Settings) -> "Keyring":
        if settings.keyring_json or settings.keys_file.exists():
            return cls.load(settings)
        ring = cls.generate()
        ring.save(settings.keys_file)
        return ring

    def add_kek(self) -> str:
        kek_id = _new_kek_id()
        self.keks[kek_id] = secrets.token_bytes(32)
        self.active_kek_id = kek_id
        return kek_id

    # -- envelope encryption -----------------------------------------------
    def wrap(self, key_id: str, dek: bytes) -> tuple[str, bytes]:
        kek_id = self.active_kek_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = nonce + AESGCM(self.keks[kek_id]).encrypt(nonce, dek, _dek_aad(key_id))
        return kek_id, wrapped

    def unwrap(self, key_id: str, kek_id: str, wrapped: bytes) -> bytes:
        kek = self.keks.get(kek_id)
        if kek is None:
            raise DecryptionError(f"data key {key_id} is wrapped by unknown KEK {kek_id}")
        try:
            return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _dek_aad(key_id))
        except InvalidTag:
            raise DecryptionError(f"data key {key_id} failed authentication") from None

    # -- blind indexes and keyed hashes ------------------------------------
    def blind_index(self, kind: str, normalized_value: str) -> bytes:
        msg = f"{kind}\x1f{normalized_value}".encode()
        return _hmac_sha256(self.index_key, msg)[:BLIND_INDEX_BYTES]

    def keyed_hash(self, *parts: str) -> bytes:
        msg = "\x1f".join(parts).encode()
        return _hmac_sha256(self.hash_key, msg)


@lru_cache(maxsize=16)
def _keyed_sha256(key: bytes):
    return hmac.new(key, digestmod=hashlib.sha256)


def _hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256, from a copy of the key's prepared state: ingest computes
    about fifteen a record, and the key schedule was a third of each."""
    h = _keyed_sha256(key).copy()
    h.update(msg)
    return h.digest()


def _new_kek_id() -> str:
    return datetime.now(timezone.utc).strftime("kek-%Y%m%dT%H%M%S-") + secrets.token_hex(3)


def _dek_aad(key_id: str) -> bytes:
    return f"cdp:dek:{key_id}".encode()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def field_aad(table: str, row_id: str, field_name: str) -> bytes:
    return f"{table}\x1f{row_id}\x1f{field_name}".encode()


def encrypt_field(dek: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, aad)


def decrypt_field(dek: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(dek).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)
    except InvalidTag:
        raise DecryptionError("ciphertext failed authentication (tampered, moved or wrong key)") from None


def encrypt_json(dek: bytes, value, table: str, row_id: str, field_name: str) -> bytes:
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    return encrypt_field(dek, data, field_aad(table, row_id, field_name))


def decrypt_json(dek: bytes, ciphertext: bytes, table: str, row_id: str, field_name: str):
    return json.loads(decrypt_field(dek, ciphertext, field_aad(table, row_id, field_name)))
