"""The common record model: the one shape every source yields.

Validation errors name the field (marshmallow's nested error dict), and
unknown fields are rejected, so a connector's mapping mistake is caught at
the door instead of silently dropping data.
"""
from __future__ import annotations


from datetime import datetime, timezone
from decimal import Decimal

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

NAME_RE = r"^[a-z][a-z0-9_]{0,63}$"
MAX_TEXT = 500


class StringOrList(fields.Field):
    """An identifier may have one value or several (two e-mails, two phones)."""

    default_error_messages = {"invalid": "Must be a string or a list of strings."}

    def _deserialize(self, value, attr, data, **kwargs):
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                item = str(item)  # spreadsheets turn CPFs and phones into numbers
            if not isinstance(item, str) or len(item) > 320:
                raise self.make_error("invalid")
            if item.strip():
                out.append(item)
        return out

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class UtcDateTime(fields.AwareDateTime):
    """A timestamp with a zone (UTC when none is given), returned in UTC; one
    that cannot be expressed in UTC (year 1 at +05:00) is a field error."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=timezone.utc, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise ValidationError("Date/time is out of range.") from None


MAX_AMOUNT = Decimal("999999999999.99")  # fits Numeric(14, 2)


class CustomIdentifier(fields.Field):
    """`{"customer_number": "123"}` or `{"customer_number": {"value": "123", "match": "fuzzy"}}`."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return {"value": str(value), "match": None}
        if isinstance(value, dict) and set(value) <= {"value", "match"} and isinstance(value.get("value"), (str, int)):
            match = value.get("match")
            if match not in (None, "exact", "fuzzy"):
                raise ValidationError("match must be 'exact' or 'fuzzy'.")
            return {"value": str(value["value"]), "match": match}
        raise ValidationError("Must be a string or {value, match}.")


class IdentifiersSchema(Schema):
    class Meta:
        unknown = RAISE

    email = StringOrList()
    phone = StringOrList()
    cpf = StringOrList()
    cnpj = StringOrList()
    custom = fields.Dict(
        keys=fields.String(validate=validate.Regexp(NAME_RE, error="Identifier kind must be snake_case.")),
        values=CustomIdentifier(),
    )


class TraitsSchema(Schema):
    class Meta:
        unknown = RAISE

    first_name = fields.String(validate=validate.Length(max=200))
    last_name = fields.String(validate=validate.Length(max=200))
    full_name = fields.String(validate=validate.Length(max=300))
    birth_date = fields.String(validate=validate.Length(max=40))
    gender = fields.String(validate=validate.Length(max=20))
    street = fields.String(validate=validate.Length(max=MAX_TEXT))
    street_number = fields.String(validate=validate.Length(max=40))
    complement = fields.String(validate=validate.Length(max=200))
    neighborhood = fields.String(validate=validate.Length(max=200))
    postal_code = fields.String(validate=validate.Length(max=20))
    city = fields.String(validate=validate.Length(max=200))
    state = fields.String(validate=validate.Length(max=60))
    country = fields.String(validate=validate.Length(max=60))


class EventSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.Regexp(NAME_RE, error="Event type must be snake_case."))
    occurred_at = UtcDateTime(required=True)
    id = fields.String(validate=validate.Length(max=200))
    amount = fields.Decimal(places=2, allow_nan=False, as_string=True,
                            validate=validate.Range(-MAX_AMOUNT, MAX_AMOUNT, error="Amount is out of range."))
    currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$", error="Currency must be an ISO 4217 code."))
    attributes = fields.Dict(keys=fields.String(validate=validate.Length(max=100)))


class ConsentSignalSchema(Schema):
    class Meta:
        unknown = RAISE

    purpose = fields.String(required=True, validate=validate.Regexp(NAME_RE, error="Purpose must be snake_case."))
    status = fields.String(required=True, validate=validate.OneOf(["granted", "revoked", "opted_out"]))
    legal_basis = fields.String(validate=validate.Length(max=64))
    occurred_at = UtcDateTime()
    evidence = fields.Dict(keys=fields.String(validate=validate.Length(max=100)))


class RecordSchema(Schema):
    """One source record. `source` may come from the URL or the mapping."""

    class Meta:
        unknown = RAISE

    source = fields.String(validate=validate.Regexp(NAME_RE, error="Source must be snake_case."))
    external_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    observed_at = UtcDateTime()
    identifiers = fields.Nested(IdentifiersSchema, load_default=dict)
    traits = fields.Nested(TraitsSchema, load_default=dict)
    events = fields.List(fields.Nested(EventSchema), load_default=list, validate=validate.Length(max=1000))
    consents = fields.List(fields.Nested(ConsentSignalSchema), load_default=list, validate=validate.Length(max=100))

    @validates_schema
    def _has_something(self, data, **kwargs):
        if not (data.get("identifiers") or data.get("traits") or data.get("events") or data.get("consents")):
            raise ValidationError("A record needs at least one identifier, trait, event or consent.", "identifiers")


_RECORD_SCHEMA = RecordSchema()  # schemas are reusable; building one per record is costly


def load_record(raw: dict, source: str | None = None) -> dict:
    """Validate a raw record; raises ValidationError whose messages name fields."""
    if not isinstance(raw, dict):
        raise ValidationError({"_schema": ["Record must be a JSON object."]})
    data = _RECORD_SCHEMA.load(raw)
    if source is not None:
        if data.get("source") not in (None, source):
            raise ValidationError({"source": [f"Record source does not match {source!r}."]})
        data["source"] = source
    elif not data.get("source"):
        raise ValidationError({"source": ["Missing data for required field."]})
    if not data.get("observed_at"):
        data["observed_at"] = datetime.now(timezone.utc)
    return data


def flatten_errors(messages, prefix: str = "") -> dict[str, list[str]]:
    """{'traits': {'city': ['x']}} -> {'traits.city': ['x']} for readable API errors."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "_schema"
            out.update(flatten_errors(value, name))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix or "_schema"] = list(messages)
    elif isinstance(messages, list):
        for i, m in enumerate(messages):
            out.update(flatten_errors(m, f"{prefix}[{i}]"))
    else:
        out[prefix or "_schema"] = [str(messages)]
    return out


