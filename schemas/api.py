"""Request and response schemas of the REST API (also its OpenAPI document)."""
from __future__ import annotations

import json

from marshmallow import RAISE, Schema, ValidationError, fields, validate


def _valid_unicode(value) -> None:
    """JSON "\\udc80" escapes decode to lone surrogates, which cannot be encoded
    (hashing, encryption, the database): a 422 naming the record, not a 500."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Text must be valid Unicode (no lone surrogates).") from None


class Strict(Schema):
    class Meta:
        unknown = RAISE


class RecordBatchIn(Strict):
    records = fields.List(
        fields.Dict(validate=_valid_unicode),
        required=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "Up to 1000 records in the common record model (see the Record schema)."},
    )


class RecordResultOut(Schema):
    index = fields.Integer()
    status = fields.String(metadata={"description": "accepted | updated | duplicate | rejected"})
    external_id = fields.String()
    record_id = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class RecordBatchOut(Schema):
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    results = fields.List(fields.Nested(RecordResultOut))
    jobs = fields.List(fields.String(), metadata={"description": "rq job ids resolving the batch (empty in-process)"})


class ProfileLookupArgs(Strict):
    email = fields.String(validate=validate.Length(min=1, max=320))
    phone = fields.String(validate=validate.Length(min=1, max=40))
    cpf = fields.String(validate=validate.Length(min=1, max=20))
    cnpj = fields.String(validate=validate.Length(min=1, max=30))


class ProfileOut(Schema):
    id = fields.String()
    status = fields.String()
    merged_into = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String(allow_none=True)
    record_count = fields.Integer()
    attributes = fields.Dict()
    provenance = fields.Dict()
    sources = fields.List(fields.Dict())
    event_counts = fields.Dict()


class ProfileListOut(Schema):
    profiles = fields.List(fields.Nested(ProfileOut))


class SplitIn(Strict):
    record_ids = fields.List(fields.String(validate=validate.Length(equal=36)), required=True,
                             validate=validate.Length(min=1, max=1000))


class MergeEventOut(Schema):
    id = fields.Integer()
    kind = fields.String()
    profile_id = fields.String()
    other_profile_id = fields.String()
    record_ids = fields.List(fields.String())
    rule = fields.String()
    details = fields.Dict()
    actor = fields.String()
    created_at = fields.String()
    undone_at = fields.String(allow_none=True)


class MergeListOut(Schema):
    merges = fields.List(fields.Nested(MergeEventOut))


class HealthOut(Schema):
    status = fields.String()
    database = fields.String()
    jobs = fields.String()
