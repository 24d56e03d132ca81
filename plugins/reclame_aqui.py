"""Reclame Aqui complaints about the company, as `complaint` events on the
consumer's profile (the metrics feature computes reputation from them).

**The API shape here is designed, not copied**: Reclame Aqui's company API
is offered under contract and no public specification was found, so this
module assumes the plausible REST shape below. Everything that depends on it
is in :data:`STATUS`, :func:`complaints_page` and :meth:`ReclameAqui.map_complaint`,
so adjusting to the real contract touches only those.

Assumed API:
    GET {base_url}/v1/companies/{company_id}/complaints
        ?updated_since=<ISO 8601, inclusive>&page=<1..>&per_page=<1..100>
    Authorization: Bearer <api_token>
    -> {"data": [complaint, ...], "meta": {"page", "per_page", "total", "total_pages"}}
    complaint = {
      "id": "Rk9pX2b8", "title": "...", "description": "free text",
      "status": "Não respondida" | "Respondida" | "Em réplica" | "Resolvida" | "Não resolvida",
      "created_at": ISO 8601, "updated_at": ISO 8601, "city": "...", "state": "UF",
      "consumer": {"name": "...", "email": "..." | null, "phone": "..." | null},   # often partial
      "evaluation": null | {"score": 0..10 | null, "would_do_business_again": true | false | null,
                            "resolved": true | false | null, "evaluated_at": ISO 8601}
    }

Mapping: one record per complaint (``external_id`` ``complaint:<id>``, a new
version when the complaint changes) with the consumer's e-mail/phone as
identifiers, the name as ``full_name``, and one event ``complaint`` whose
attributes are ``title``, ``description``, ``status`` (``nao_respondida`` /
``respondida`` / ``resolvida``), ``updated_at``, ``rating`` (0–10),
``would_do_business_again`` (true/false/null) and ``resolved``. A rating
outside 0–10 is left out and reported as a row error.
"""
from __future__ import annotations

import unicodedata
from datetime import timezone
from typing import Any, Iterator, Mapping

from marshmallow import RAISE, Schema, fields, validate

from cdp.connectors import ActionResult, Batch, MalformedResponse, SourceConnector, Subject
from cdp.hookspecs import hookimpl
from plugins._common import PassCursor, compact, parse_date

# Reclame Aqui's status labels (accents and case folded) -> ours.
STATUS = {
    "nao respondida": "nao_respondida",
    "respondida": "respondida",
    "em replica": "respondida",        # the company answered; the consumer replied
    "nao resolvida": "respondida",     # answered, evaluated as not solved (resolved = false)
    "resolvida": "resolvida",
}


class ReclameAquiConfig(Schema):
    class Meta:
        unknown = RAISE

    company_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$"))
    api_token = fields.String(required=True, validate=validate.Length(min=8, max=500), metadata={"secret": True})
    base_url = fields.Url(load_default="https://api.reclameaqui.com.br", require_tld=False, schemes={"http", "https"})
    per_page = fields.Integer(load_default=50, validate=validate.Range(1, 100))
    start_date = fields.AwareDateTime(default_timezone=timezone.utc, load_default=None)


def complaints_path(company_id: str) -> str:
    return f"/v1/companies/{company_id}/complaints"


def total_pages(body: Any) -> int | None:
    meta = body.get("meta") if isinstance(body, dict) else None
    pages = meta.get("total_pages") if isinstance(meta, dict) else None
    return pages if isinstance(pages, int) else None


class ReclameAqui(SourceConnector):
    name = "reclame_aqui"
    title = "Reclame Aqui (complaints)"
    config_schema = ReclameAquiConfig

    def __init__(self, config: Mapping, *, source: str | None = None):
        super().__init__(config, source=source)
        self.path = complaints_path(self.config["company_id"])
        self.http = self.http_client(self.config["base_url"],
                                     headers={"Authorization": f"Bearer {self.config['api_token']}"},
                                     auth_hint="check api_token and company_id")

    def check(self) -> None:
        self.http.items_of(self.http.get_json(self.path, params={"page": 1, "per_page": 1}), "data", self.path)

    def streams(self) -> list[str]:
        return ["complaints"]

    def read(self, stream: str = "complaints", cursor: Any = None, batch_size: int = 50) -> Iterator[Batch]:
        state = PassCursor.load(cursor, self.config["start_date"])
        params = {"updated_since": state.since.isoformat()} if state.since else {}
        size = max(1, min(self.config["per_page"], batch_size))
        for page in self.http.pages_by_number(self.path, items="data", params=params, size=size,
                                              start=state.page, last_page=total_pages):
            batch = Batch(records=[])
            for row in page.items:
                if not isinstance(row, dict) or not row.get("id") or parse_date(row.get("updated_at")) is None:
                    raise MalformedResponse("reclame_aqui: malformed complaints page: an entry has no id or updated_at")
                key, when = str(row["id"]), parse_date(row["updated_at"])
                if state.already_read(key, when):
                    continue
                record, problems = self.map_complaint(row)
                batch.records.append(record)
                if problems:
                    batch.errors.append((f"complaint {key}", problems))
                state.note(key, when)
            batch.cursor = state.dump(page.next)
            yield batch

    def map_complaint(self, complaint: dict) -> tuple[dict, dict]:
        """One complaint -> (record, {field: [problems]})."""
        problems: dict = {}
        consumer = complaint.get("consumer") if isinstance(complaint.get("consumer"), dict) else {}
        evaluation = complaint.get("evaluation") if isinstance(complaint.get("evaluation"), dict) else {}
        label = _fold(complaint.get("status"))
        status = STATUS.get(label)
        if status is None:
            problems["status"] = ["unknown status (kept as outro)"]
            status = "outro"
        rating = evaluation.get("score")
        if rating is not None and not (isinstance(rating, int) and not isinstance(rating, bool) and 0 <= rating <= 10):
            problems["evaluation.score"] = ["not an integer from 0 to 10 (left out)"]
            rating = None
        again = evaluation.get("would_do_business_again")
        resolved = evaluation.get("resolved")
        if label == "nao resolvida" and resolved is None:
            resolved = False
        attributes = {
            "title": complaint.get("title"),
            "description": complaint.get("description"),
            "status": status,
            "updated_at": parse_date(complaint["updated_at"]).isoformat(),
            "rating": rating,
            "would_do_business_again": again if isinstance(again, bool) else None,
            "resolved": resolved if isinstance(resolved, bool) else None,
            "city": complaint.get("city"),
            "state": complaint.get("state"),
        }
        event = {"type": "complaint", "id": str(complaint["id"]), "attributes": attributes}
        created = parse_date(complaint.get("created_at")) or parse_date(complaint["updated_at"])
        event["occurred_at"] = created.isoformat()
        identifiers = compact({"email": consumer.get("email"), "phone": consumer.get("phone")})
        record = {"external_id": f"complaint:{complaint['id']}", "observed_at": attributes["updated_at"],
                  "events": [event]}
        if identifiers:
            record["identifiers"] = identifiers
        if isinstance(consumer.get("name"), str) and consumer["name"].strip():
            record["traits"] = {"full_name": consumer["name"].strip()}
        return record, problems

    def on_subject_request(self, action: str, subject: Subject) -> ActionResult:
        return ActionResult("manual", (
            "As reclamações são publicadas e mantidas pelo Reclame Aqui: a empresa não as apaga nem corrige. "
            "Oriente o titular a pedir a exclusão ou correção ao Reclame Aqui (canal de privacidade deles) e apague "
            "aqui os dados recebidos. / Complaints are published and kept by Reclame Aqui: the company cannot "
            "delete or correct them. Point the data subject to Reclame Aqui's privacy channel and erase the copies "
            "received here."))


def _fold(value: Any) -> str:
    text = unicodedata.normalize("NFKD", str(value or "")).encode("ascii", "ignore").decode()
    return " ".join(text.lower().replace("_", " ").split())


@hookimpl
def cdp_source_types():
    return [ReclameAqui]
