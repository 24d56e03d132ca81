"""Configured destinations: a destination connector type (any plugin's
`cdp_destination_types`) and its configuration, secrets encrypted the way
a configured source's are (cdp.sources.seal_secrets; AAD destinations,name,secrets)."""
from __future__ import annotations

import json
from typing import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from activation.errors import FieldError
from activation.run_models import Destination
from cdp.connectors import ConfigInvalid, ConnectorError, DestinationConnector, split_secrets
from cdp.sources import NAME_RE, open_secrets, seal_secrets
from cdp.store import KeyStore


class ActivationError(FieldError):
    """Bad input or state, naming the field; the message holds no personal data or secret."""


def add_destination(session: Session, keys: KeyStore, name: str, type_name: str, config: Mapping) -> Destination:
    """Create a destination; the connector's schema validates the configuration (the error names the field)."""
    from cdp.plugins import destination_type

    if not NAME_RE.match(name or ""):
        raise ActivationError("name", "must be snake_case (a-z, 0-9, _), up to 64 characters")
    try:
        cls = destination_type(type_name)
    except ConnectorError as exc:
        raise ActivationError("type", str(exc)) from None
    if session.scalar(select(Destination.id).where(Destination.name == name)) is not None:
        raise ActivationError("name", "a destination with this name exists", 409)
    try:
        cls.validate_config(config)
        json.dumps(dict(config))
    except ConfigInvalid as exc:
        field = next(iter(sorted(exc.errors)), "")
        raise ActivationError(f"config.{field}" if field else "config", str(exc)) from None
    except (TypeError, ValueError):
        raise ActivationError("config", "values must be strings, numbers, booleans, lists or mappings") from None
    plain, secrets = split_secrets(cls.config_schema, dict(config))
    dest = Destination(name=name, type=type_name, config=plain)
    dest.secrets_key_id, dest.secrets_ct = seal_secrets(keys, None, secrets, "destinations", name)
    session.flush()  # the data key row first (no ORM relationship orders the two inserts)
    session.add(dest)
    session.flush()
    return dest


def destination_dict(session: Session, keys: KeyStore, dest: Destination) -> dict:
    """What operators and the API see: plain configuration and the *names* of the secrets set."""
    secrets = sorted(open_secrets(keys, dest.secrets_key_id, dest.secrets_ct, "destinations", dest.name))
    return {"id": dest.id, "name": dest.name, "type": dest.type, "config": dict(dest.config or {}),
            "secrets": secrets, "created_at": dest.created_at.isoformat()}


def list_destinations(session: Session) -> list[Destination]:
    return list(session.scalars(select(Destination).order_by(Destination.id)))


def find_destination(session: Session, ref: str | int) -> Destination:
    """By id or by name."""
    if isinstance(ref, int) or str(ref).isdigit():
        dest = session.get(Destination, int(ref)) if 0 < int(ref) < 2**31 else None
    else:
        dest = session.scalar(select(Destination).where(Destination.name == str(ref)))
    if dest is None:
        raise ActivationError("destination", "no such destination (cdp destinations list)", 404)
    return dest


def destination_class(dest: Destination) -> type[DestinationConnector]:
    from cdp.plugins import destination_type

    try:
        return destination_type(dest.type)
    except ConnectorError as exc:
        raise ActivationError("destination", str(exc)) from None


def build_destination(session: Session, keys: KeyStore, dest: Destination) -> DestinationConnector:
    """The connector, ready to use (secrets decrypted in memory only)."""
    config = {**(dest.config or {}),
              **open_secrets(keys, dest.secrets_key_id, dest.secrets_ct, "destinations", dest.name)}
    return destination_class(dest)(config, destination=dest.name)
