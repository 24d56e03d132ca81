"""DPO console: server-rendered pages at /console/ for staff (admin, dpo,
analyst) over the DSR, consent-ledger and disclosure services.

Sessions are Flask's signed cookie (secret derived from the keyring); every
POST carries a per-session CSRF token; logins are rate limited per client
and per account; analysts see everything but act on nothing (403). Texts
come from cdp/console/messages.py (pt-BR first, English available)."""
from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from functools import wraps
from urllib.parse import urlencode

from flask import (Blueprint, Flask, Response, abort, current_app, flash, g, redirect, render_template, request,
                   session, url_for)
from werkzeug.exceptions import BadRequest, HTTPException

from cdp.console import messages
from cdp.console.models import ACTING_ROLES

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static", static_url_path="/static")

PUBLIC_ENDPOINTS = {"console.login", "console.static", "console.set_language"}
LOGIN_PER_CLIENT = "20/minute;100/hour"
LOGIN_FAILURES_PER_ACCOUNT = "5/15minutes"
DUE_SOON = timedelta(days=3)
REPORT_TYPES = ("access", "portability", "sharing_info", "confirmation", "consent_info")


class Invalid(BadRequest):
    """400 with a message already in the reader's language (a named field)."""

    def __init__(self, message: str):
        super().__init__(description=message)
        self.console_message = message


def init_console(app: Flask) -> None:
    """Session secret from the keyring, the login limiter, the blueprint."""
    from limits.storage import MemoryStorage, storage_from_string
    from limits.strategies import MovingWindowRateLimiter

    runtime = app.extensions["cdp"]
    if not app.secret_key:
        app.secret_key = runtime.keyring.keyed_hash("console-session")
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(hours=8))
    storage = storage_from_string(runtime.settings.redis_url) if runtime.settings.redis_url else MemoryStorage()
    app.extensions["cdp_console_limiter"] = MovingWindowRateLimiter(storage)
    app.register_blueprint(bp)


def _runtime():
    return current_app.extensions["cdp"]


def _lang() -> str:
    lang = session.get("lang")
    return lang if lang in messages.LANGUAGES else messages.DEFAULT


def _t(key: str, **kwargs) -> str:
    return messages.text(key, _lang(), **kwargs)


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@bp.context_processor
def _context():
    from consent.dsr import catalog

    return {"t": _t, "lang": _lang(), "csrf_token": _csrf_token, "staff": g.get("staff"),
            "type_label": lambda name: catalog.type_label(name, _lang()),
            "status_label": lambda s: _t(f"status_{s}") if f"status_{s}" in messages.MESSAGES else s,
            "can_act": bool(g.get("staff") and g.staff["role"] in ACTING_ROLES)}


@bp.before_request
def _guard():
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            abort(400, description="csrf_failed")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    from cdp.console.staff import get_staff

    staff_id = session.get("staff_id")
    g.staff = get_staff(_runtime(), staff_id) if staff_id else None
    if g.staff is None:
        session.pop("staff_id", None)
        flash(_t("login_required"))
        return redirect(url_for("console.login", next=request.full_path if request.method == "GET" else None))
    return None


@bp.after_request
def _no_store(response: Response) -> Response:
    # Pages show request and consent data: never cached, never framed.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
    return response


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    key = {403: "forbidden", 404: "not_found", 429: "too_many_attempts"}.get(error.code, "bad_request")
    if error.description in messages.MESSAGES:
        key = error.description
    message = getattr(error, "console_message", None) or _t(key)
    return render_template("console/error.html", message=message, code=error.code), error.code


def acting(fn):
    """Only admin and dpo act on requests; analysts get a 403."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        if g.staff["role"] not in ACTING_ROLES:
            abort(403, description="forbidden")
        return fn(*args, **kwargs)

    return wrapper


def _actor() -> str:
    return f"staff:{g.staff['id']}"


def _safe_next(target: str | None) -> str:
    # Only a path inside the console: never an open redirect.
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.queue")


# -- auth ------------------------------------------------------------------------------------------

def _limit_keys(email: str) -> tuple[str, str]:
    keyring = _runtime().keyring
    client = keyring.keyed_hash("console-login-ip", request.remote_addr or "-").hex()[:32]
    account = keyring.keyed_hash("console-login-account", email.strip().lower()).hex()[:32]
    return client, account


@bp.route("/login", methods=["GET", "POST"])
def login():
    from limits import parse_many

    from cdp.console.staff import authenticate

    if request.method == "GET":
        return render_template("console/login.html", next=request.args.get("next"))
    limiter = current_app.extensions["cdp_console_limiter"]
    email = request.form.get("email", "")
    client, account = _limit_keys(email)
    per_client = parse_many(LOGIN_PER_CLIENT)
    per_account = parse_many(LOGIN_FAILURES_PER_ACCOUNT)
    if (not all(limiter.hit(item, "console-login", client) for item in per_client)
            or not all(limiter.test(item, "console-login-fail", account) for item in per_account)):
        return render_template("console/login.html", error=_t("too_many_attempts"), next=None), 429
    user = authenticate(_runtime(), email, request.form.get("password", ""))
    if user is None:
        for item in per_account:
            limiter.hit(item, "console-login-fail", account)
        return render_template("console/login.html", error=_t("login_failed"), next=None), 401
    lang = _lang()
    session.clear()  # a fresh session (and CSRF token) per login
    session.permanent = True
    session.update(staff_id=user["id"], lang=lang, csrf=secrets.token_urlsafe(32))
    return redirect(_safe_next(request.form.get("next")), 303)


@bp.post("/logout")
def logout():
    lang = _lang()
    session.clear()
    session["lang"] = lang
    return redirect(url_for("console.login"), 303)


@bp.get("/lang/<code>")
def set_language(code):
    # Only the display language changes: a GET link is enough (no state of record).
    if code not in messages.LANGUAGES:
        abort(404)
    session["lang"] = code
    return redirect(_safe_next(request.args.get("next")) if session.get("staff_id") else url_for("console.login"))


# -- DSR queue and request detail --------------------------------------------------------------------

@bp.get("/")
def index():
    return redirect(url_for("console.queue"))


def _parse_when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@bp.get("/requests")
def queue():
    from consent.dsr import catalog
    from consent.dsr.service import DsrError, list_requests

    status = request.args.get("status") or None
    type_ = request.args.get("type") or None
    try:
        rows = list_requests(_runtime(), status=status, type=type_, limit=500)
    except DsrError as exc:
        raise Invalid(messages.field_error(exc.field, _lang()))
    now = datetime.now(timezone.utc)
    for row in rows:
        due = _parse_when(row["due_at"])
        row["due_soon"] = (not row["overdue"] and row["status"] in catalog.OPEN_STATUSES and not row["paused"]
                           and due is not None and due - now <= DUE_SOON)
    return render_template("console/queue.html", rows=rows, statuses=catalog.STATUSES,
                           types=list(catalog.REQUEST_TYPES), status=status, type=type_)


def _load_request(request_id: str) -> dict:
    from consent.dsr.service import RequestNotFound, get_request

    try:
        uuid.UUID(request_id)
        return get_request(_runtime(), request_id)
    except (ValueError, RequestNotFound):
        abort(404)


def _render_request(request_id: str, status: int = 200, error: str | None = None):
    from consent.dsr import catalog

    req = _load_request(request_id)
    reasons = [(code, catalog.denial_text(code, _lang())) for code in catalog.DENIAL_REASONS]
    return render_template("console/request.html", req=req, error=error, reasons=reasons,
                           report=req["status"] == catalog.COMPLETED and req["type"] in REPORT_TYPES), status


@bp.get("/requests/<request_id>")
def request_detail(request_id):
    return _render_request(request_id)


def _action(request_id: str, fn, *args, **kwargs):
    """Run one service action; bad input re-renders the page with a 400 (409 for a wrong state)."""
    from consent.dsr.service import DsrError, InvalidState, RequestNotFound

    _load_request(request_id)
    try:
        fn(_runtime(), request_id, *args, **kwargs)
    except InvalidState as exc:
        return _render_request(request_id, 409, messages.field_error(exc.field, _lang(), state=True))
    except DsrError as exc:
        return _render_request(request_id, 400, messages.field_error(exc.field, _lang()))
    except RequestNotFound:
        abort(404)
    flash(_t("done"))
    return redirect(url_for("console.request_detail", request_id=request_id), 303)


@bp.post("/requests/<request_id>/verify-code")
@acting
def verify_code(request_id):
    from consent.dsr.service import verify_code as verify

    code = request.form.get("code", "").strip()
    if not code.isdigit():
        return _render_request(request_id, 400, messages.field_error("code", _lang()))
    _load_request(request_id)
    result = verify(_runtime(), request_id, None, code, actor=_actor())
    if not result.verified:
        return _render_request(request_id, 400, _t("code_wrong", left=result.attempts_left))
    flash(_t("verified_ok"))
    return redirect(url_for("console.request_detail", request_id=request_id), 303)


@bp.post("/requests/<request_id>/verify-staff")
@acting
def verify_staff(request_id):
    from consent.dsr.service import verify_by_staff

    profile_ids = [p.strip() for p in request.form.get("profile_ids", "").split(",") if p.strip()]
    return _action(request_id, verify_by_staff, actor=_actor(), profile_ids=profile_ids,
                   note=request.form.get("note", ""))


@bp.post("/requests/<request_id>/execute")
@acting
def execute(request_id):
    from consent.dsr.service import execute as run

    return _action(request_id, run, actor=_actor())


@bp.post("/requests/<request_id>/deny")
@acting
def deny(request_id):
    from consent.dsr.service import deny as close

    return _action(request_id, close, actor=_actor(), reason_code=request.form.get("reason_code", ""),
                   reason_text=request.form.get("reason_text") or None)


@bp.post("/requests/<request_id>/extend")
@acting
def extend(request_id):
    from consent.dsr.service import extend as push

    try:
        days = int(request.form.get("days", ""))
    except ValueError:
        return _render_request(request_id, 400, messages.field_error("days", _lang()))
    return _action(request_id, push, actor=_actor(), reason=request.form.get("reason", ""), days=days)


@bp.post("/requests/<request_id>/confirm-system")
@acting
def confirm_system(request_id):
    """A person confirms a manual task in a source or destination system (Art. 18 §6)."""
    from consent.dsr.service import confirm_system as confirm

    return _action(request_id, confirm, request.form.get("system", ""), actor=_actor(),
                   status=request.form.get("status", "done"), note=request.form.get("note") or None)


@bp.get("/requests/<request_id>/download")
@acting
def download(request_id):
    """The access report through the same signed link the subject gets
    (relative, so it works behind any host name); the download is audited."""
    from consent.dsr.report import FORMATS, make_download_token

    fmt = request.args.get("format", "html")
    if fmt not in FORMATS:
        raise Invalid(messages.field_error("format", _lang()))
    req = _load_request(request_id)
    if req["status"] != "completed" or req["type"] not in REPORT_TYPES:
        abort(404)
    token = make_download_token(_runtime().keyring, request_id, fmt)
    return redirect(f"/api/v1/dsr/{request_id}/download?" + urlencode({"format": fmt, "token": token}), 303)


# -- subject view -----------------------------------------------------------------------------------

@bp.get("/subjects")
def subject():
    from sqlalchemy import select

    from cdp.disclosures import disclosures_for
    from cdp.models import Profile, SourceRecord
    from consent import ledger
    from consent.subjects import lineage

    profile_id = (request.args.get("profile_id") or "").strip()
    if not profile_id:
        return render_template("console/subject.html", profile_id=None)
    try:
        uuid.UUID(profile_id)
    except ValueError:
        raise Invalid(messages.field_error("profile_id", _lang()))
    runtime = _runtime()
    with runtime.session() as session:
        if session.get(Profile, profile_id) is None:
            abort(404)
        members = lineage(session, profile_id)
        # Consent evidence and record payloads stay encrypted here: metadata only.
        history = ledger.history(session, runtime.keys(session), profile_id, include_evidence=False)
        states = ledger.states(session, profile_id)
        by_source: dict[str, list[dict]] = {}
        for rec in session.scalars(select(SourceRecord).where(SourceRecord.profile_id.in_(members))
                                   .order_by(SourceRecord.source, SourceRecord.observed_at)):
            by_source.setdefault(rec.source, []).append(
                {"id": rec.id, "version": rec.version, "status": rec.status,
                 "observed_at": rec.observed_at.isoformat(timespec="seconds")})
        shared = disclosures_for(session, members)
    return render_template("console/subject.html", profile_id=profile_id, history=history, states=states,
                           by_source=by_source, disclosures=shared)


# -- purposes, ledger, records of processing ------------------------------------------------------

@bp.get("/purposes")
def purposes():
    from consent.purposes import list_purposes, purpose_dict

    with _runtime().session() as session:
        rows = [purpose_dict(session, p) for p in list_purposes(session)]
    return render_template("console/purposes.html", rows=rows)


@bp.get("/portfolios")
def portfolios():
    """Read-only: every portfolio with its manager and latest snapshot (docs/segments.md#portfolios)."""
    from activation.portfolios import overview

    with _runtime().session() as session:
        rows = overview(session)
    return render_template("console/portfolios.html", rows=rows)


@bp.route("/ledger", methods=["GET", "POST"])
def ledger_status():
    """GET shows the page; POST runs the full chain verification (read-only: every role)."""
    from consent import ledger

    result = None
    if request.method == "POST":
        runtime = _runtime()
        with runtime.session() as session:
            result = ledger.verify(session, runtime.keyring)
    return render_template("console/ledger.html", result=result)


@bp.get("/records")
def records():
    return render_template("console/records.html")


@bp.get("/records/processing.<fmt>")
def records_download(fmt):
    from cdp.disclosures import processing_records

    if fmt not in ("json", "csv"):
        abort(404)
    with _runtime().session() as session:
        body = processing_records(session, fmt)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return Response(body, content_type=content_type,
                    headers={"Content-Disposition": f'attachment; filename="registro-operacoes-art37.{fmt}"'})
