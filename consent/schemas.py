"""Marshmallow schemas of the consent API and CLI (one validation for both)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from consent.models import ACTIONS, LEGAL_BASES, SENSITIVE_BASES
from schemas.api import _valid_unicode
from schemas.record import NAME_RE, UtcDateTime

# Non-personal labels kept in clear (channel, notice version): a short token,
# so a sloppy source cannot park an e-mail address or a sentence there.
LABEL_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
LABEL_ERROR = "Must be a short label (letters, digits, . _ : / -), up to 64 characters."


class Strict(Schema):
    class Meta:
        unknown = RAISE


def _name(**kw):
    return fields.String(validate=validate.Regexp(NAME_RE, error="Must be snake_case (a-z, 0-9, _), up to 64 characters."),
                         **kw)


class PurposeIn(Strict):
    name = _name(required=True)
    legal_basis = fields.String(required=True, validate=validate.OneOf(LEGAL_BASES),
                                metadata={"description": "LGPD Art. 7 basis (Art. 11 for sensitive purposes)"})
    sensitive = fields.Boolean(load_default=False)
    title_pt = fields.String(required=True, validate=validate.Length(min=1, max=200))
    title_en = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description_pt = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    description_en = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    retention_days = fields.Integer(required=True, strict=True, validate=validate.Range(1, 36500))
    notice_version = fields.String(required=True, validate=validate.Regexp(LABEL_RE, error=LABEL_ERROR))
    recipients = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=list,
                             validate=validate.Length(max=50))
    aliases = fields.List(_name(), load_default=list, validate=validate.Length(max=20))

    @validates_schema
    def _basis_fits(self, data, **kwargs):
        check_basis(data.get("legal_basis"), data.get("sensitive", False))


class PurposeUpdate(Strict):
    legal_basis = fields.String(validate=validate.OneOf(LEGAL_BASES))
    sensitive = fields.Boolean()
    title_pt = fields.String(validate=validate.Length(min=1, max=200))
    title_en = fields.String(validate=validate.Length(min=1, max=200))
    description_pt = fields.String(validate=validate.Length(min=1, max=4000))
    description_en = fields.String(validate=validate.Length(min=1, max=4000))
    retention_days = fields.Integer(strict=True, validate=validate.Range(1, 36500))
    notice_version = fields.String(validate=validate.Regexp(LABEL_RE, error=LABEL_ERROR))
    recipients = fields.List(fields.String(validate=validate.Length(min=1, max=200)), validate=validate.Length(max=50))
    aliases = fields.List(_name(), validate=validate.Length(max=20))
    active = fields.Boolean()
    material = fields.Boolean(load_default=False, metadata={
        "description": "Force a new purpose version (older grants stop counting) even if only the notice changed"})


def check_basis(basis: str | None, sensitive: bool) -> None:
    if basis is None:
        return
    if sensitive and basis not in SENSITIVE_BASES:
        raise ValidationError(f"A sensitive purpose (LGPD Art. 11) allows only: {', '.join(SENSITIVE_BASES)}.",
                              "legal_basis")
    if not sensitive and basis == "fraud_prevention":
        raise ValidationError("fraud_prevention is an Art. 11 basis: only for sensitive purposes.", "legal_basis")


class PurposeOut(Schema):
    name = fields.String()
    version = fields.Integer()
    legal_basis = fields.String()
    sensitive = fields.Boolean()
    title_pt = fields.String()
    title_en = fields.String()
    description_pt = fields.String()
    description_en = fields.String()
    retention_days = fields.Integer()
    notice_version = fields.String()
    notices = fields.List(fields.String(), metadata={"description": "notice versions that describe the current version"})
    recipients = fields.List(fields.String())
    aliases = fields.List(fields.String())
    active = fields.Boolean()
    requires = fields.String(metadata={"description": "grant | no_opt_out | none: what the gate needs"})
    created_at = fields.String()
    updated_at = fields.String()


class PurposeListOut(Schema):
    purposes = fields.List(fields.Nested(PurposeOut))


class EvidenceIn(Strict):
    channel = fields.String(required=True, validate=validate.Regexp(LABEL_RE, error=LABEL_ERROR),
                            metadata={"description": "where the subject acted: web_form, app, call_center, checkout..."})
    notice_version = fields.String(validate=validate.Regexp(LABEL_RE, error=LABEL_ERROR),
                                   metadata={"description": "the privacy notice version shown (required for grants of consent purposes)"})
    form = fields.String(validate=validate.Length(max=200))
    ip = fields.String(validate=validate.Length(max=64), metadata={"description": "stored encrypted"})
    user_agent = fields.String(validate=validate.Length(max=1000), metadata={"description": "stored encrypted"})
    text = fields.String(validate=validate.Length(max=4000), metadata={"description": "stored encrypted"})


class ConsentIn(Strict):
    profile_id = fields.String(required=True, validate=validate.Length(equal=36))
    purpose = _name(required=True)
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    occurred_at = UtcDateTime(metadata={"description": "when the subject acted (default: now; never in the future)"})
    evidence = fields.Nested(EvidenceIn, required=True)
    idempotency_key = fields.String(validate=validate.Length(min=1, max=200),
                                    metadata={"description": "the same key twice appends once"})

    @validates_schema
    def _unicode(self, data, **kwargs):
        try:
            _valid_unicode(data.get("evidence"))
        except ValidationError:
            raise ValidationError("Text must be valid Unicode (no lone surrogates).", "evidence") from None


class EntryOut(Schema):
    seq = fields.Integer()
    id = fields.String()
    subject_id = fields.String()
    purpose = fields.String()
    purpose_version = fields.Integer()
    action = fields.String()
    legal_basis = fields.String()
    declared_basis = fields.String(allow_none=True)
    occurred_at = fields.String()
    recorded_at = fields.String()
    method = fields.String()
    channel = fields.String(allow_none=True)
    notice_version = fields.String(allow_none=True)
    collector = fields.String()
    record_id = fields.String(allow_none=True)
    hash = fields.String()
    evidence = fields.Dict(allow_none=True, metadata={"description": "decrypted personal evidence (audit scope only)"})
    evidence_status = fields.String(metadata={"description": "none | available | withheld | shredded"})


class StateOut(Schema):
    purpose = fields.String()
    legal_basis = fields.String()
    requires = fields.String(metadata={"description": "grant | no_opt_out | none"})
    allowed = fields.Boolean()
    action = fields.String(allow_none=True)
    purpose_version = fields.Integer(allow_none=True)
    current_version = fields.Integer()
    occurred_at = fields.String(allow_none=True)
    seq = fields.Integer(allow_none=True)


class ConsentRecordedOut(Schema):
    entry = fields.Nested(EntryOut)
    state = fields.Nested(StateOut)
    duplicate = fields.Boolean()


class SubjectConsentsOut(Schema):
    profile_id = fields.String()
    lineage = fields.List(fields.String())
    states = fields.List(fields.Nested(StateOut))
    history = fields.List(fields.Nested(EntryOut))


class ConsentQuery(Strict):
    include_evidence = fields.Boolean(load_default=False)
    purpose = _name()


class ReceiptQuery(Strict):
    lang = fields.String(load_default="pt-BR", validate=validate.OneOf(["pt-BR", "en"]))


class ReceiptOut(Schema):
    receipt = fields.Dict()
    jws = fields.String(metadata={"description": "compact JWS (EdDSA) of the receipt; verify with receipt.publicKey"})


class VerifyOut(Schema):
    ok = fields.Boolean()
    entries = fields.Integer()
    head_seq = fields.Integer()
    head_hash = fields.String()
    first_bad_seq = fields.Integer(allow_none=True)
    reason = fields.String(allow_none=True)
    detail = fields.String(allow_none=True)
    checkpoint = fields.Dict(allow_none=True)


class CheckpointOut(Schema):
    format = fields.String()
    seq = fields.Integer()
    head_hash = fields.String()
    timestamp = fields.String()
    public_key = fields.String()
    jws = fields.String()


class CheckpointIn(Strict):
    checkpoint = fields.Dict(required=True)
