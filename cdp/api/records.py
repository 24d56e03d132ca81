from __future__ import annotations

import re

from flask import current_app
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy.exc import IntegrityError

from cdp.api import CdpBlueprint as Blueprint, require_scope
from cdp.ingest import ingest_batch
from schemas.api import RecordBatchIn, RecordBatchOut

blp = Blueprint("records", __name__, url_prefix="/api/v1/sources", description="Ingest source records")
SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@blp.route("/<source>/records")
class SourceRecords(MethodView):
    @require_scope("ingest")
    @blp.arguments(RecordBatchIn)
    @blp.response(200, RecordBatchOut)
    @blp.alt_response(202, schema=RecordBatchOut, description="Stored; identity resolution queued on rq")
    def post(self, body, source):
        """Ingest a batch of records of one source.

        Each record gets its own result: accepted, updated (a new version),
        duplicate (same content as stored) or rejected (with field errors);
        a bad record never blocks the good ones."""
        if not SOURCE_RE.match(source):
            abort(422, message="source: must be snake_case (a-z, 0-9, _), up to 64 characters", field="source")
        runtime = current_app.extensions["cdp"]
        for attempt in range(3):
            try:
                summary = ingest_batch(runtime, source, body["records"])
                break
            except IntegrityError:
                # Lost a race with a concurrent batch (a new source, or the same external id):
                # the transaction rolled back, so store again against what the other one wrote.
                if attempt == 2:
                    abort(409, message="A concurrent request wrote the same records; retry the batch")
        payload = {
            "counts": summary.counts(),
            "results": [r.as_dict() for r in summary.results],
            "jobs": summary.job_ids,
        }
        return payload, (202 if summary.job_ids else 200)
