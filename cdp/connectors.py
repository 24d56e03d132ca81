"""The connector contract: what a source or destination connector is, for
the people who write one (see docs/plugins.md for a worked example).

A **source connector** declares its configuration (a marshmallow schema whose
secret fields carry ``metadata={"secret": True}``), checks its connection,
lists its streams and reads records in the common record model
(docs/record-model.md), in batches, each with the cursor that resumes right
after it. The platform stores a batch and only then saves its cursor, so a
crash re-reads, never skips. It may also turn a webhook delivery into
records, and say what it can do about a data-subject request.

A **destination connector** (used by activation) delivers rows to a tool,
removes subjects from it, and answers data-subject requests the same way.

Errors a connector raises are :class:`ConnectorError` (or a subclass) whose
message names the connector and the problem, never a secret or a personal
value: the message is shown to operators and stored in sync history.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping

from marshmallow import Schema, ValidationError

# -- errors ---------------------------------------------------------------------------


class ConnectorError(Exception):
    """A problem the operator can fix; the message says what (no personal data, no secrets)."""


class ConfigInvalid(ConnectorError):
    """The configuration does not pass the connector's schema. `errors` maps
    each field (dotted path) to its messages."""

    def __init__(self, connector: str, errors: dict[str, list[str]]):
        self.connector = connector
        self.errors = errors
        detail = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in sorted(errors.items()))
        super().__init__(f"{connector}: invalid configuration: {detail}")


class AuthError(ConnectorError):
    """The source refused the credentials (HTTP 401/403 or equivalent)."""


class SourceUnavailable(ConnectorError):
    """The source could not be reached or kept failing after retries; trying later may work."""


class MalformedResponse(ConnectorError):
    """The source answered something that is not what its API documents."""


class WebhookError(Exception):
    """A webhook delivery is refused; `status` is the HTTP status to answer
    (401 bad signature, 400 unreadable body, 404 not accepted here...)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- values passed across the contract -------------------------------------------------


@dataclass
class Batch:
    """Records read from a source, and the cursor that resumes right after them."""

    records: list[dict]
    cursor: Any = None  # JSON-serializable, no personal data (it is stored in clear)
    # Rows the connector could not turn into records: (position, {field: [messages]}).
    errors: list[tuple[str, dict]] = field(default_factory=list)


SUBJECT_ACTIONS = ("delete", "correct")
ACTION_STATUSES = ("done", "failed", "manual", "not_supported")


@dataclass
class Subject:
    """A data subject as one source knows them: the external ids of their
    records in that source and their identifiers (normalized, as stored), and,
    for a correction, the corrected values in the common record model shape
    (``{"traits": {...}, "identifiers": {...}}``)."""

    external_ids: list[str] = field(default_factory=list)
    identifiers: dict[str, list[str]] = field(default_factory=dict)  # email, phone, cpf, cnpj, custom:<kind>
    changes: dict = field(default_factory=dict)


@dataclass
class ActionResult:
    """What a connector did about a data-subject request. `detail` is shown to
    the DPO: for "manual", the instruction in pt-BR with English after it."""

    status: str  # done | failed | manual | not_supported
    detail: str = ""

    def __post_init__(self):
        if self.status not in ACTION_STATUSES:
            raise ValueError(f"status must be one of {', '.join(ACTION_STATUSES)}")


@dataclass
class DeliveryResult:
    """What a destination accepted out of one delivery (or removal)."""

    delivered: int = 0
    failed: int = 0
    # (row index, message without personal data)
    errors: list[tuple[int, str]] = field(default_factory=list)


# -- configuration helpers -----------------------------------------------------------------


def secret_fields(schema: type[Schema] | Schema) -> set[str]:
    """Configuration keys (a field's data_key, else its name) of the fields a
    schema marks ``metadata={"secret": True}``."""
    instance = schema() if isinstance(schema, type) else schema
    return {f.data_key or name for name, f in instance.fields.items() if f.metadata.get("secret")}


def split_secrets(schema: type[Schema], config: Mapping) -> tuple[dict, dict]:
    """(plain, secrets): the platform stores the first as JSON, the second encrypted."""
    secret = secret_fields(schema)
    plain = {k: v for k, v in config.items() if k not in secret}
    return plain, {k: v for k, v in config.items() if k in secret}


def _flatten(messages, prefix: str = "") -> dict[str, list[str]]:
    from schemas.record import flatten_errors

    return flatten_errors(messages, prefix)


def redact(text: str, secrets) -> str:
    """Replace every secret value (4+ characters) in `text` with ***."""
    for value in sorted((str(s) for s in secrets if s is not None and len(str(s)) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _secret_values(schema: type[Schema], config: Mapping, loaded: bool = False) -> list[str]:
    """Secret values of a raw configuration (keys as given), or of a loaded one (attribute names)."""
    if loaded:
        names = {name for name, f in schema().fields.items() if f.metadata.get("secret")}
    else:
        names = secret_fields(schema)
    return [str(v) for k, v in (config or {}).items() if k in names and v not in (None, "")]


class _Configured:
    name: ClassVar[str]
    title: ClassVar[str] = ""
    config_schema: ClassVar[type[Schema]]

    @classmethod
    def validate_config(cls, config: Mapping) -> dict:
        """Load `config` through the schema; ConfigInvalid names each bad field."""
        try:
            return cls.config_schema().load(dict(config))
        except ValidationError as exc:
            errors = _flatten(exc.messages)
            secrets = _secret_values(cls.config_schema, config if isinstance(config, Mapping) else {})
            raise ConfigInvalid(cls.name, {k: [redact(m, secrets) for m in v] for k, v in errors.items()}) from None

    def secret_values(self) -> list[str]:
        """The secret values of this instance's configuration (to keep them out of text)."""
        return _secret_values(self.config_schema, self.config, loaded=True)

    def http_client(self, base_url: str, **options):
        """An :class:`cdp.http.HttpClient` named after this connector, which keeps
        this configuration's secrets out of its logs and error messages."""
        from cdp.http import HttpClient

        return HttpClient(self.name, base_url, secrets=self.secret_values(), **options)


MANUAL_INSTRUCTION = {
    "delete": ("Esta fonte não apaga dados pela integração: apague o titular diretamente no sistema de origem "
               "(pelos identificadores informados) e registre a conclusão. / "
               "This source cannot erase data through the integration: delete the subject in the source system "
               "itself (using the identifiers given) and record when it is done."),
    "correct": ("Esta fonte não corrige dados pela integração: corrija os dados do titular diretamente no sistema "
                "de origem e registre a conclusão. / "
                "This source cannot correct data through the integration: correct the subject's data in the source "
                "system itself and record when it is done."),
}


def manual_result(action: str) -> ActionResult:
    return ActionResult("manual", MANUAL_INSTRUCTION.get(action, MANUAL_INSTRUCTION["delete"]))


# -- sources ----------------------------------------------------------------------------------


class SourceConnector(_Configured):
    """Base class of source connectors. Subclasses set `name` (the type name,
    snake_case, e.g. "vtex"), `title` and `config_schema`, and implement
    `read`; everything else has a working default."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    config_schema: ClassVar[type[Schema]]

    #: Set by the platform on the connector of a configured source (sources.build_connector):
    #: stores changed configuration values durably. Connectors call :meth:`save_config`, not this.
    config_saver: Callable[[dict], None] | None = None

    def __init__(self, config: Mapping, *, source: str | None = None):
        """`config` is validated by `config_schema` (ConfigInvalid names the
        field); `source` is the configured source's name (records are stored
        under it), the type name when the connector is used on its own."""
        self.config = self.validate_config(config)
        self._raw_config = dict(config)
        self.source = source or self.name

    def save_config(self, changes: Mapping[str, Any]) -> None:
        """Keep configuration values the connector itself changed (a rotated
        OAuth refresh token, a new access token and its expiry): for a
        configured source they are validated and written to its stored
        configuration (secret fields encrypted) and committed *before* this
        returns, so a credential only the connector knows is never lost; if
        that fails it raises and the connector must not go on. Then this
        instance uses them. Keys and values as in the raw configuration
        (JSON: dates as ISO 8601 text)."""
        merged = {**self._raw_config, **changes}
        loaded = self.validate_config(merged)
        if self.config_saver is not None:
            self.config_saver(dict(changes))
        self.config, self._raw_config = loaded, merged

    def check(self) -> None:
        """Verify the source can be read with this configuration (a cheap
        authenticated call). Raise AuthError when the credentials are refused,
        ConnectorError for anything else, with a message naming the problem."""

    def streams(self) -> list[str]:
        """Names of the streams this source has (e.g. ["orders"])."""
        return ["default"]

    def read(self, stream: str, cursor: Any = None, batch_size: int = 500) -> Iterator[Batch]:
        """Yield batches of records of `stream` in the common record model,
        starting after `cursor` (None: from the beginning). Each batch carries
        the cursor that resumes right after it; reading again from the last
        cursor yields only what changed since."""
        raise NotImplementedError

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[dict]:
        """Turn one webhook delivery into records. Verify the signature where
        the source signs (raise WebhookError(401, ...) when it does not match);
        raise WebhookError(400, ...) for a body that cannot be read. Return []
        for deliveries that carry nothing to store (pings)."""
        raise WebhookError(404, f"{self.name}: this source type does not receive webhooks")

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        """Act on a data-subject request (`action` "delete" or "correct") in the
        source system. The default asks a person to do it ("manual")."""
        return manual_result(action)


# -- destinations ------------------------------------------------------------------------------


class DestinationConnector(_Configured):
    """Base class of destination connectors (activation: sending audiences or
    profiles to e-mail, ads or CRM tools). Subclasses set `name`, `title`,
    `config_schema` and implement `deliver` and `remove`."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    config_schema: ClassVar[type[Schema]]
    # Fields an activation to this destination must include (e.g. ("email",) for a mailing list).
    required_fields: ClassVar[tuple[str, ...]] = ()
    # The row field the tool knows a subject by; `remove` gets these values back (activation keeps
    # them encrypted under the subject's key between runs).
    ref_field: ClassVar[str] = "profile_id"

    def __init__(self, config: Mapping, *, destination: str | None = None):
        self.config = self.validate_config(config)
        self.destination = destination or self.name

    def check(self) -> None:
        """Verify the destination accepts these credentials (AuthError / ConnectorError)."""

    def deliver(self, rows: list[dict], idempotency_key: str) -> DeliveryResult:
        """Send rows (one dict per subject, fields agreed with activation). The
        same `idempotency_key` sent again must not create duplicates."""
        raise NotImplementedError

    def remove(self, subject_refs: list[str], idempotency_key: str | None = None) -> DeliveryResult:
        """Remove subjects (by the references given at delivery, `ref_field`)
        from the destination. Removing someone already gone is not an error;
        `idempotency_key` (set by activation) is the same for a retried removal;
        without one (a data-subject request), use `removal_key(subject_refs)`."""
        raise NotImplementedError

    @staticmethod
    def removal_key(subject_refs: list[str]) -> str:
        """An idempotency key for removing these references: the same set, the same key."""
        import hashlib

        return "remove-" + hashlib.sha256("\x1f".join(sorted(subject_refs)).encode()).hexdigest()[:32]

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        """Act on a data-subject request in the destination; default "manual"."""
        return manual_result(action)
