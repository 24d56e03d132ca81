"""Ledger keys derived from the keyring's `signing_key` (never in the database).

* Ed25519 (the signing key is the seed) signs checkpoints and consent
  receipts as compact JWS (RFC 7515, alg EdDSA per RFC 8037), so any JOSE
  library can check them with the public key alone.
* An HMAC key derived with HKDF authenticates each ledger entry's hash, so an
  entry forged by someone who can write the database (and recompute SHA-256)
  but does not hold the keyring is caught even past the last checkpoint.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cdp.crypto import Keyring


class SignatureError(ValueError):
    """A JWS is malformed or its signature does not verify."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    if not isinstance(text, str):
        raise SignatureError("expected base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise SignatureError("invalid base64url") from None


def canonical(obj) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, ASCII-only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def private_key(keyring: Keyring) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(keyring.signing_key)


def public_key_b64(keyring: Keyring) -> str:
    raw = private_key(keyring).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64url(raw)


def entry_mac_key(keyring: Keyring) -> bytes:
    return _derive_mac_key(keyring.signing_key)


@lru_cache(maxsize=4)
def _derive_mac_key(signing_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"cdp consent ledger entry mac v1").derive(signing_key)


def entry_mac(mac_key: bytes, entry_hash: str) -> str:
    return hmac.new(mac_key, entry_hash.encode(), hashlib.sha256).hexdigest()


def sign_jws(keyring: Keyring, payload: dict, typ: str) -> str:
    header = {"alg": "EdDSA", "crv": "Ed25519", "typ": typ, "kid": public_key_b64(keyring)}
    signing_input = f"{b64url(canonical(header))}.{b64url(canonical(payload))}"
    return f"{signing_input}.{b64url(private_key(keyring).sign(signing_input.encode()))}"


def verify_jws(token: str, public_key: str) -> dict:
    """The payload of a compact EdDSA JWS, once its signature checks out
    under `public_key` (base64url of the raw 32 bytes)."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise SignatureError("not a compact JWS")
    try:
        header = json.loads(unb64url(parts[0]))
        payload = json.loads(unb64url(parts[1]))
    except ValueError:
        raise SignatureError("JWS header or payload is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA" or not isinstance(payload, dict):
        raise SignatureError("JWS must be alg EdDSA with a JSON object payload")
    try:
        key = Ed25519PublicKey.from_public_bytes(unb64url(public_key))
        key.verify(unb64url(parts[2]), f"{parts[0]}.{parts[1]}".encode())
    except (InvalidSignature, ValueError):
        raise SignatureError("signature does not verify with the given public key") from None
    return payload
