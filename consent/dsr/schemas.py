"""Request and response schemas of the data-subject request, legal hold,
processing records and incident endpoints (validation + OpenAPI)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from consent.dsr.catalog import DENIAL_REASONS, REQUEST_TYPES, STATUSES


class Strict(Schema):
    class Meta:
        unknown = RAISE


class DsrIdentifiersIn(Strict):
    email = fields.String(validate=validate.Length(min=1, max=320))
    phone = fields.String(validate=validate.Length(min=1, max=40))
    cpf = fields.String(validate=validate.Length(min=1, max=20))
    cnpj = fields.String(validate=validate.Length(min=1, max=30))


class DsrOpenIn(Strict):
    type = fields.String(required=True, validate=validate.OneOf(list(REQUEST_TYPES)),
                         metadata={"description": "LGPD Art. 18 right (or automated_review, Art. 20)"})
    identifiers = fields.Nested(DsrIdentifiersIn, required=True)
    language = fields.String(load_default="pt-BR", validate=validate.OneOf(["pt-BR", "en"]))
    details = fields.Dict(load_default=dict, metadata={
        "description": "correction: {changes: {traits, identifiers}}; consent_revocation: {purposes: [...]}; "
                       "automated_review: {decision}; any: {message}"})


class DsrOpenedOut(Schema):
    request_id = fields.String()
    token = fields.String(metadata={"description": "Tracking token: keep it; needed to verify and follow the request"})
    status = fields.String()
    message = fields.String()


class DsrVerifyIn(Strict):
    token = fields.String(required=True, validate=validate.Length(min=1, max=200))
    code = fields.String(required=True, validate=validate.Length(min=1, max=20))


class DsrVerifyOut(Schema):
    verified = fields.Boolean()
    status = fields.String()
    attempts_left = fields.Integer()


class DsrDownloadArgs(Strict):
    format = fields.String(required=True, validate=validate.OneOf(["json", "html"]))
    token = fields.String(required=True, validate=validate.Length(min=1, max=500))


class DsrListArgs(Strict):
    status = fields.String(validate=validate.OneOf(list(STATUSES)))
    type = fields.String(validate=validate.OneOf(list(REQUEST_TYPES)))
    overdue = fields.Boolean()
    due_within_days = fields.Integer(validate=validate.Range(min=0, max=365))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class DsrStaffOpenIn(DsrOpenIn):
    profile_ids = fields.List(fields.String(validate=validate.Length(equal=36)), metadata={
        "description": "Identity already verified by staff: the subject's profiles (with verification_note)"})
    verification_note = fields.String(validate=validate.Length(min=1, max=2000))
    contact = fields.Dict()


class DsrStaffVerifyIn(Strict):
    profile_ids = fields.List(fields.String(validate=validate.Length(equal=36)), required=True)
    note = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    contact = fields.Dict()


class DsrDenyIn(Strict):
    reason_code = fields.String(required=True, validate=validate.OneOf(list(DENIAL_REASONS)))
    reason_text = fields.String(validate=validate.Length(max=2000))


class DsrExtendIn(Strict):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    days = fields.Integer(validate=validate.Range(min=1, max=365))
    until = fields.AwareDateTime()


class DsrReasonIn(Strict):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class DsrOptionalReasonIn(Strict):
    reason = fields.String(validate=validate.Length(max=2000))


class DsrRespondIn(Strict):
    message = fields.String(required=True, validate=validate.Length(min=1, max=8000))


class DsrConfirmSystemIn(Strict):
    system = fields.String(required=True, validate=validate.Length(min=1, max=120))
    status = fields.String(load_default="done", validate=validate.OneOf(["done", "failed"]))
    note = fields.String(validate=validate.Length(max=2000))


class DsrRequestOut(Schema):
    class Meta:
        unknown = RAISE

    id = fields.String()
    type = fields.String()
    article = fields.String()
    status = fields.String()
    channel = fields.String()
    language = fields.String()
    created_at = fields.String()
    due_at = fields.String()
    paused = fields.Boolean()
    overdue = fields.Boolean()
    outcome = fields.String(allow_none=True)
    denial_code = fields.String(allow_none=True)
    duplicate_of = fields.String(allow_none=True)
    verified_at = fields.String(allow_none=True)
    scope = fields.String(allow_none=True)
    profiles = fields.Integer()
    open_systems = fields.Integer()
    closed_at = fields.String(allow_none=True)
    steps = fields.List(fields.Dict())
    systems = fields.List(fields.Dict())
    audit = fields.List(fields.Dict())
    profile_ids = fields.List(fields.String())
    claims = fields.Dict()


class DsrRequestListOut(Schema):
    requests = fields.List(fields.Nested(DsrRequestOut))


class LegalHoldIn(Strict):
    source = fields.String(validate=validate.Length(min=1, max=100))
    event_type = fields.String(validate=validate.Length(min=1, max=64))
    legal_basis = fields.String(load_default="legal_obligation")
    reason = fields.String(required=True, validate=validate.Length(min=1, max=300))
    retention_days = fields.Integer(required=True, validate=validate.Range(min=1, max=36500))


class DsrFormatArgs(Strict):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))


class IncidentIn(Strict):
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    detected_at = fields.AwareDateTime(required=True)
    occurred_at = fields.AwareDateTime()
    description = fields.String(validate=validate.Length(max=20000))
    measures = fields.String(validate=validate.Length(max=20000))
    data_categories = fields.List(fields.String(), load_default=list)
    risk = fields.String(load_default="undetermined")
    data_encrypted = fields.Boolean(load_default=False)
    small_agent = fields.Boolean()


class IncidentUpdateIn(Strict):
    description = fields.String(validate=validate.Length(max=20000))
    measures = fields.String(validate=validate.Length(max=20000))
    data_categories = fields.List(fields.String())
    risk = fields.String()
    data_encrypted = fields.Boolean()
    occurred_at = fields.AwareDateTime()


class IncidentRecipientIn(Strict):
    type = fields.String(required=True, validate=validate.OneOf(["api_key", "destination"]))
    id = fields.String(required=True, validate=validate.Length(min=1, max=100))


class IncidentAffectedIn(Strict):
    recipients = fields.List(fields.Nested(IncidentRecipientIn), load_default=list)
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    profile_ids = fields.List(fields.String(validate=validate.Length(equal=36)), load_default=list)
    include_report_downloads = fields.Boolean(load_default=False)


class IncidentDecisionIn(Strict):
    decision = fields.String(required=True, validate=validate.OneOf(["notify", "not_required"]))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class IncidentNotifiedIn(Strict):
    anpd = fields.Boolean(load_default=False)
    subjects = fields.Boolean(load_default=False)
    at = fields.AwareDateTime()
