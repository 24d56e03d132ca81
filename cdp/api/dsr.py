"""Data-subject requests, legal holds, processing records and incidents
over HTTP. Thin views: every rule lives in consent.* service functions.

Public (no API key; rate-limited per IP and per identifier):
  POST /api/v1/dsr                       open a request (same answer for everyone)
  POST /api/v1/dsr/{id}/verify           the one-time code
  GET  /api/v1/dsr/{id}                  status (header X-DSR-Token)
  GET  /api/v1/dsr/{id}/download         signed, expiring link to the report
Staff (scope `privacy`): everything under /api/v1/dsr/requests, /api/v1/privacy, /api/v1/incidents.
"""
from __future__ import annotations

from datetime import timedelta

from flask import Response, after_this_request, current_app, g, request
from flask.views import MethodView
from flask_smorest import abort

from cdp.api import CdpBlueprint as Blueprint, require_scope
from consent.dsr import schemas as s
from consent.dsr.ratelimit import RateLimited, RequestLimiter

blp = Blueprint("privacy", __name__, url_prefix="/api/v1",
                description="LGPD: data-subject requests, legal holds, processing records, incidents")

OPENED_MESSAGE = ("Pedido recebido. Se os dados informados corresponderem a um cadastro, enviaremos um código de "
                  "verificação ao contato registrado; nada será liberado ou apagado sem ele.")
OPENED_MESSAGE_EN = ("Request received. If the details match our records, a verification code will be sent to the "
                     "contact on file; nothing is released or erased without it.")


def _runtime():
    return current_app.extensions["cdp"]


def _limiter() -> RequestLimiter:
    app = current_app
    if "cdp_dsr_limiter" not in app.extensions:
        runtime = _runtime()
        app.extensions["cdp_dsr_limiter"] = RequestLimiter(runtime.settings, runtime.keyring)
    return app.extensions["cdp_dsr_limiter"]


def _actor() -> str:
    return f"api:{g.api_key_name}"


def _call(fn, *args, **kwargs):
    """Run a service function; its errors become problem+json naming the field."""
    from consent.dsr.service import DsrError, InvalidState, RequestNotFound
    from consent.incidents import IncidentError, IncidentNotFound

    try:
        return fn(*args, **kwargs)
    except InvalidState as exc:
        abort(409, message=str(exc), field=exc.field)
    except (DsrError, IncidentError) as exc:
        abort(422, message=str(exc), field=exc.field)
    except RequestNotFound:
        abort(404, message="No such request or wrong token")
    except IncidentNotFound:
        abort(404, message="No such incident")


def _rate_limited(exc: RateLimited):
    @after_this_request
    def retry_after(response):
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    abort(429, message=str(exc), field=exc.field)


# -- public -----------------------------------------------------------------------------------------

@blp.route("/dsr")
class OpenRequest(MethodView):
    @blp.doc(security=[])
    @blp.arguments(s.DsrOpenIn)
    @blp.response(202, s.DsrOpenedOut)
    def post(self, body):
        """Open a data-subject request (LGPD Art. 18). The answer is the same
        whether or not we hold data on the person: a code goes to the contact
        on file, and nothing happens until it comes back."""
        from consent.dsr.jobs import submit_dispatch
        from consent.dsr.service import normalize_identifiers, open_request

        runtime = _runtime()
        identifiers = _call(normalize_identifiers, body["identifiers"])
        try:
            _limiter().opening(request.remote_addr or "", identifiers)
        except RateLimited as exc:
            _rate_limited(exc)
        opened = _call(open_request, runtime, type=body["type"], identifiers=body["identifiers"],
                       language=body["language"], details=body["details"])
        if runtime.settings.redis_url:
            submit_dispatch(runtime, opened.request_id)
        else:
            # In-process: after the response has gone, so its timing never depends on the person.
            @after_this_request
            def dispatch_later(response):
                response.call_on_close(lambda: submit_dispatch(runtime, opened.request_id))
                return response
        return {"request_id": opened.request_id, "token": opened.token, "status": opened.status,
                "message": OPENED_MESSAGE_EN if body["language"] == "en" else OPENED_MESSAGE}


@blp.route("/dsr/<request_id>/verify")
class VerifyRequest(MethodView):
    @blp.doc(security=[])
    @blp.arguments(s.DsrVerifyIn)
    @blp.response(200, s.DsrVerifyOut)
    def post(self, body, request_id):
        """Enter the one-time code (single use, 15 minutes, 5 attempts)."""
        from consent.dsr.service import verify_code

        try:
            _limiter().verifying(request.remote_addr or "")
        except RateLimited as exc:
            _rate_limited(exc)
        result = _call(verify_code, _runtime(), request_id, body["token"], body["code"])
        return {"verified": result.verified, "status": result.status, "attempts_left": result.attempts_left}


@blp.route("/dsr/<request_id>")
class RequestStatus(MethodView):
    @blp.doc(security=[], parameters=[{"in": "header", "name": "X-DSR-Token", "required": True,
                                       "schema": {"type": "string"}}])
    @blp.response(200)
    def get(self, request_id):
        """The request as the requester sees it (status, denial reason, download links)."""
        from consent.dsr.service import subject_status

        return _call(subject_status, _runtime(), request_id, request.headers.get("X-DSR-Token", ""))


@blp.route("/dsr/<request_id>/download")
class Download(MethodView):
    @blp.doc(security=[])
    @blp.arguments(s.DsrDownloadArgs, location="query")
    def get(self, args, request_id):
        """The report behind a signed link (expires; valid for this request only)."""
        from consent.dsr.report import LinkInvalid, download

        try:
            content_type, body, filename = download(_runtime(), request_id, args["token"], args["format"])
        except LinkInvalid as exc:
            abort(403, message=f"token: {exc}", field="token")
        disposition = "inline" if args["format"] == "html" else "attachment"
        return Response(body, content_type=content_type, headers={
            "Content-Disposition": f'{disposition}; filename="{filename}"', "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer"})


# -- staff: requests -----------------------------------------------------------------------------------

@blp.route("/dsr/requests")
class StaffRequests(MethodView):
    @require_scope("privacy")
    @blp.arguments(s.DsrListArgs, location="query")
    @blp.response(200, s.DsrRequestListOut)
    def get(self, args):
        """Requests, oldest deadline first (filters: status, type, overdue, due within N days)."""
        from consent.dsr.deadlines import end_of_day, local_date
        from consent.dsr.service import list_requests
        from cdp.models import utcnow

        due_before = None
        if "due_within_days" in args:
            due_before = end_of_day(local_date(utcnow()) + timedelta(days=args["due_within_days"]))
        return {"requests": _call(list_requests, _runtime(), status=args.get("status"), type=args.get("type"),
                                  overdue=args.get("overdue"), due_before=due_before, limit=args["limit"],
                                  offset=args["offset"])}

    @require_scope("privacy")
    @blp.arguments(s.DsrStaffOpenIn)
    @blp.response(201, s.DsrRequestOut)
    def post(self, body):
        """Open a request on a subject's behalf (phone, letter, counter); with
        profile_ids and verification_note the identity is recorded as verified by staff."""
        from consent.dsr.service import get_request, open_request, verify_by_staff

        runtime = _runtime()
        opened = _call(open_request, runtime, type=body["type"], identifiers=body["identifiers"],
                       language=body["language"], details=body["details"], actor=_actor(), channel="staff")
        if "profile_ids" in body:
            return _call(verify_by_staff, runtime, opened.request_id, actor=_actor(), profile_ids=body["profile_ids"],
                         note=body.get("verification_note", ""), contact=body.get("contact"))
        return get_request(runtime, opened.request_id)


@blp.route("/dsr/requests/<request_id>")
class StaffRequest(MethodView):
    @require_scope("privacy")
    @blp.response(200, s.DsrRequestOut)
    def get(self, request_id):
        """Steps, systems and the audit trail; ?personal=1 adds what the requester typed (audited)."""
        from consent.dsr.service import get_request

        personal = request.args.get("personal") in ("1", "true")
        return _call(get_request, _runtime(), request_id, include_personal=personal, actor=_actor())


def _action(name, schema, fn_name, **fixed):
    """POST /dsr/requests/<id>/<name>: one staff action = one service function."""

    class Action(MethodView):
        @require_scope("privacy")
        @blp.arguments(schema)
        @blp.response(200, s.DsrRequestOut)
        def post(self, body, request_id):
            from consent.dsr import service

            return _call(getattr(service, fn_name), _runtime(), request_id, actor=_actor(), **fixed, **body)

    Action.__name__ = f"Staff{name.title().replace('-', '')}"
    Action.post.__doc__ = getattr(__import__("consent.dsr.service", fromlist=[fn_name]), fn_name).__doc__
    blp.route(f"/dsr/requests/<request_id>/{name}")(Action)


class DsrEmptyIn(s.Strict):
    pass


_action("verify", s.DsrStaffVerifyIn, "verify_by_staff")
_action("execute", DsrEmptyIn, "execute")
_action("deny", s.DsrDenyIn, "deny")
_action("extend", s.DsrExtendIn, "extend")
_action("pause", s.DsrReasonIn, "pause")
_action("resume", s.DsrOptionalReasonIn, "resume")
_action("respond", s.DsrRespondIn, "respond")


@blp.route("/dsr/requests/<request_id>/systems")
class ConfirmSystem(MethodView):
    @require_scope("privacy")
    @blp.arguments(s.DsrConfirmSystemIn)
    @blp.response(200, s.DsrRequestOut)
    def post(self, body, request_id):
        """A person confirms a manual task in a source or destination system."""
        from consent.dsr.service import confirm_system

        return _call(confirm_system, _runtime(), request_id, body["system"], actor=_actor(), status=body["status"],
                     note=body.get("note"))


@blp.route("/dsr/outbox")
class Outbox(MethodView):
    @require_scope("privacy")
    @blp.response(200)
    def get(self):
        """Messages waiting to be sent by hand (no SMTP / SMS configured); they hold personal data."""
        from consent import notify

        runtime = _runtime()
        with runtime.session() as session:
            return {"messages": notify.outbox(session, runtime.keys(session), request.args.get("request_id"))}


# -- staff: legal holds, processing records --------------------------------------------------------

@blp.route("/privacy/legal-holds")
class LegalHolds(MethodView):
    @require_scope("privacy")
    @blp.response(200)
    def get(self):
        """Data kept by legal obligation (erasure keeps it, blocked)."""
        from consent.erasure import list_legal_holds

        return {"legal_holds": list_legal_holds(_runtime())}

    @require_scope("privacy")
    @blp.arguments(s.LegalHoldIn)
    @blp.response(201)
    def post(self, body):
        from consent.erasure import add_legal_hold

        return _call(add_legal_hold, _runtime(), actor=_actor(), **body)


@blp.route("/privacy/processing-records")
class ProcessingRecords(MethodView):
    @require_scope("privacy")
    @blp.arguments(s.DsrFormatArgs, location="query")
    def get(self, args):
        """Records of processing operations (Art. 37): recipients, purposes, fields, counts."""
        from cdp.disclosures import processing_records

        runtime = _runtime()
        with runtime.session() as session:
            body = processing_records(session, args["format"])
        return Response(body, content_type="text/csv; charset=utf-8" if args["format"] == "csv"
                        else "application/json")


# -- staff: incidents --------------------------------------------------------------------------------

@blp.route("/incidents")
class Incidents(MethodView):
    @require_scope("privacy")
    @blp.response(200)
    def get(self):
        from consent.incidents import list_incidents

        return {"incidents": list_incidents(_runtime(), request.args.get("status"))}

    @require_scope("privacy")
    @blp.arguments(s.IncidentIn)
    @blp.response(201)
    def post(self, body):
        """Register an incident; the notification deadline is counted in Brazilian business days."""
        from consent.incidents import create_incident

        return _call(create_incident, _runtime(), actor=_actor(), **body)


@blp.route("/incidents/<incident_id>")
class IncidentItem(MethodView):
    @require_scope("privacy")
    @blp.response(200)
    def get(self, incident_id):
        from consent.incidents import get_incident

        return _call(get_incident, _runtime(), incident_id)

    @require_scope("privacy")
    @blp.arguments(s.IncidentUpdateIn)
    @blp.response(200)
    def patch(self, body, incident_id):
        from consent.incidents import update_incident

        return _call(update_incident, _runtime(), incident_id, actor=_actor(), **body)


@blp.route("/incidents/<incident_id>/affected")
class IncidentAffected(MethodView):
    @require_scope("privacy")
    @blp.arguments(s.IncidentAffectedIn)
    @blp.response(200)
    def post(self, body, incident_id):
        """Find affected subjects in the disclosure log (and report downloads) within a window."""
        from consent.incidents import find_affected

        recipients = [(r["type"], r["id"]) for r in body.pop("recipients")]
        return _call(find_affected, _runtime(), incident_id, actor=_actor(), recipients=recipients, **body)


@blp.route("/incidents/<incident_id>/decision")
class IncidentDecision(MethodView):
    @require_scope("privacy")
    @blp.arguments(s.IncidentDecisionIn)
    @blp.response(200)
    def post(self, body, incident_id):
        from consent.incidents import decide

        return _call(decide, _runtime(), incident_id, actor=_actor(), **body)


@blp.route("/incidents/<incident_id>/notified")
class IncidentNotified(MethodView):
    @require_scope("privacy")
    @blp.arguments(s.IncidentNotifiedIn)
    @blp.response(200)
    def post(self, body, incident_id):
        from consent.incidents import record_notification

        return _call(record_notification, _runtime(), incident_id, actor=_actor(), **body)


@blp.route("/incidents/<incident_id>/export")
class IncidentExport(MethodView):
    @require_scope("privacy")
    @blp.arguments(s.DsrFormatArgs, location="query")
    def get(self, args, incident_id):
        """The incident as the ANPD communication needs it (JSON or CSV)."""
        from consent.incidents import export_incident

        body = _call(export_incident, _runtime(), incident_id, args["format"])
        return Response(body, content_type="text/csv; charset=utf-8" if args["format"] == "csv"
                        else "application/json")
