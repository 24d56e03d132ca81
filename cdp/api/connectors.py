"""Configured sources over HTTP: webhook deliveries, plain HTML forms, and
a read-only view of the sources (secrets are never returned: names only).

Webhooks and forms carry no API key: the source's connector authenticates
each delivery (a signature or a shared token for webhooks; the honeypot and
the allowed origins for forms)."""
from __future__ import annotations

import html
import logging
import re

from flask import Response, current_app, redirect, request
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields

from cdp.api import CdpBlueprint as Blueprint, require_scope
from cdp.connectors import ConnectorError, WebhookError
from cdp.sources import SourceNotFound, describe_source, ingest_delivery, list_sources

log = logging.getLogger(__name__)

blp = Blueprint("connectors", __name__, url_prefix="/", description="Webhooks, forms and configured sources")

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_WEBHOOK_BYTES = 1024 * 1024
MAX_FORM_BYTES = 16 * 1024


class WebhookOut(Schema):
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(),
                         metadata={"description": "accepted / updated / duplicate / rejected"})


class SourceOut(Schema):
    name = fields.String()
    type = fields.String()
    configured = fields.Boolean()
    trust = fields.Integer()
    config = fields.Dict(metadata={"description": "Non-secret configuration"})
    secrets = fields.List(fields.String(), metadata={"description": "Names of the secrets set (never values)"})
    schedule = fields.Dict(allow_none=True)
    cursors = fields.Dict()
    last_sync_at = fields.String(allow_none=True)
    last_sync_status = fields.String(allow_none=True)


class SourceListOut(Schema):
    sources = fields.List(fields.Nested(SourceOut))


def _runtime():
    return current_app.extensions["cdp"]


@blp.route("/api/v1/webhooks/<source>")
class Webhook(MethodView):
    @blp.response(200, WebhookOut)
    @blp.doc(security=[], requestBody={"content": {"application/json": {"schema": {"type": "object"}}}})
    def post(self, source):
        """Receive a webhook delivery for a configured source.

        The source's connector verifies the delivery (401 when the signature
        or token does not match) and maps it to records, which are stored
        like any other: a repeated delivery counts as duplicate."""
        if not NAME_RE.match(source):
            abort(404, message="source: no such source")
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            abort(413, message=f"body: larger than {MAX_WEBHOOK_BYTES} bytes")
        try:
            _, summary = ingest_delivery(_runtime(), source, request.get_data(), request.headers)
        except SourceNotFound:
            abort(404, message="source: no such source")
        except WebhookError as exc:
            abort(exc.status, message=exc.message)
        except ConnectorError as exc:
            # Not configured, or the source's API failed while mapping: the sender should retry later.
            log.warning("webhook source=%s not processed: %s", source, type(exc).__name__)
            abort(503, message=f"source: {exc}")
        return {"counts": summary.counts()}


@blp.route("/forms/<source>", methods=["POST"])
@blp.doc(security=[], summary="Receive a plain HTML form (pt-BR thank-you page or redirect)",
         requestBody={"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
         responses={"200": {"description": "Thank-you page (text/html)"},
                    "303": {"description": "Redirect to the form's redirect_url"},
                    "422": {"description": "Error page (text/html) naming the fields to fix"}})
def form(source):
    if not NAME_RE.match(source):
        return _page(404, "Formulário não encontrado.", "Form not found.")
    if (request.content_length or 0) > MAX_FORM_BYTES:
        return _page(413, "O formulário enviado é grande demais.", "The form is too large.")
    runtime = _runtime()
    from cdp.models import Source

    with runtime.session() as session:
        row = session.get(Source, source)
        is_form = row is not None and row.config is not None and row.plugin == "html_form"
    if not is_form:
        return _page(404, "Formulário não encontrado.", "Form not found.")
    try:
        connector, summary = ingest_delivery(runtime, source, request.get_data(), request.headers)
    except WebhookError as exc:
        log.info("form source=%s refused status=%d", source, exc.status)
        if exc.status == 422:
            return _page(422, "Preencha ao menos um contato (e-mail ou telefone) e envie de novo.",
                         "Fill in at least one contact (e-mail or phone) and send again.")
        return _page(exc.status, "Não foi possível receber o formulário.", "The form could not be received.")
    except ConnectorError:
        return _page(503, "Não foi possível receber o formulário agora. Tente de novo em instantes.",
                     "The form could not be received right now. Please try again shortly.")
    rejected = sorted({name for r in summary.results if r.status == "rejected" for name in r.errors})
    if rejected:
        fields_text = ", ".join(rejected)
        return _page(422, f"Confira estes campos e envie de novo: {fields_text}.",
                     f"Check these fields and send again: {fields_text}.")
    if connector.redirect_url:
        return redirect(connector.redirect_url, code=303)
    return _page(200, "Obrigado! Recebemos suas informações.", "Thank you! We have received your information.")


def _page(status: int, pt_br: str, english: str) -> Response:
    title = "Obrigado" if status == 200 else "Não enviado"
    body = (f'<!doctype html><html lang="pt-BR"><head><meta charset="utf-8"><title>{title}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f'<body><main><h1>{title}</h1><p>{html.escape(pt_br)}</p>'
            f'<p lang="en">{html.escape(english)}</p></main></body></html>')
    return Response(body, status=status, mimetype="text/html")


@blp.route("/api/v1/sources")
class Sources(MethodView):
    @require_scope("admin")
    @blp.response(200, SourceListOut)
    def get(self):
        """Sources, with their non-secret configuration, schedule and last sync."""
        runtime = _runtime()
        return {"sources": [describe_source(runtime, s) for s in list_sources(runtime)]}


@blp.route("/api/v1/sources/<source>")
class SourceItem(MethodView):
    @require_scope("admin")
    @blp.response(200, SourceOut)
    def get(self, source):
        """One source (secrets are listed by name only)."""
        runtime = _runtime()
        for row in list_sources(runtime):
            if row.name == source:
                return describe_source(runtime, row)
        abort(404, message="source: no such source")
