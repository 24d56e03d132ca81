"""`cdp dsr` and `cdp incidents`: data-subject requests and the incident
register from the command line (the same service functions as the API)."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from functools import wraps

import click


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _runtime():
    from cdp.cli import _runtime as runtime  # the same settings and keyring every command uses

    return runtime()


def _dump(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _service_errors(fn):
    """Service errors become one line and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from consent.dsr.report import LinkInvalid
        from consent.dsr.service import DsrError, RequestNotFound
        from consent.incidents import IncidentError, IncidentNotFound

        try:
            return fn(*args, **kwargs)
        except (DsrError, IncidentError, RequestNotFound, IncidentNotFound, LinkInvalid) as exc:
            raise UserError(str(exc)) from None

    return wrapper


def _actor(actor: str | None) -> str:
    import getpass

    return f"cli:{actor or getpass.getuser()}"


def _when(value: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: use ISO 8601, e.g. 2026-03-01T10:00:00-03:00") from None
    if moment.tzinfo is None:
        from consent.dsr.deadlines import BRASILIA

        moment = moment.replace(tzinfo=BRASILIA)  # a local time here means Brasília
    return moment


actor_option = click.option("--actor", help="Who acts (recorded in the audit trail; default: your user name).")


# -- cdp dsr -------------------------------------------------------------------------------------------

@click.group()
def dsr():
    """Data-subject requests (LGPD Art. 18–20)."""


@dsr.command("list")
@click.option("--status", help="received, identity_verified, in_progress, completed or denied.")
@click.option("--type", "type_", help="Request type (access, deletion...).")
@click.option("--overdue", is_flag=True, help="Only open requests past their deadline.")
@click.option("--due-within", type=int, help="Only open requests due within N days.")
@click.option("--limit", default=100, show_default=True)
@_service_errors
def dsr_list(status, type_, overdue, due_within, limit):
    """Requests, oldest deadline first (Brasília time)."""
    from consent.dsr.service import list_requests

    due_before = datetime.now().astimezone() + timedelta(days=due_within) if due_within is not None else None
    rows = list_requests(_runtime(), status=status, type=type_, overdue=overdue or None, due_before=due_before,
                         limit=limit)
    for r in rows:
        flags = ",".join(f for f, on in (("OVERDUE", r["overdue"]), ("paused", r["paused"])) if on)
        click.echo(f"{r['id']}\t{r['type']}\t{r['status']}\tdue {r['due_at']}\t{r['outcome'] or '-'}\t{flags}")
    click.echo(f"{len(rows)} request(s)", err=True)


@dsr.command("show")
@click.argument("request_id")
@click.option("--personal", is_flag=True, help="Also show what the requester typed (audited).")
@actor_option
@_service_errors
def dsr_show(request_id, personal, actor):
    """Steps, systems, audit trail of one request."""
    from consent.dsr.service import get_request

    _dump(get_request(_runtime(), request_id, include_personal=personal, actor=_actor(actor)))


@dsr.command("open")
@click.option("--type", "type_", required=True)
@click.option("--email")
@click.option("--phone")
@click.option("--cpf")
@click.option("--cnpj")
@click.option("--language", default="pt-BR", show_default=True)
@click.option("--details", help="JSON object (correction: {\"changes\": {...}}).")
@actor_option
@_service_errors
def dsr_open(type_, email, phone, cpf, cnpj, language, details, actor):
    """Open a request on a subject's behalf (then `cdp dsr verify --profiles`)."""
    from consent.dsr.service import open_request

    ids = {k: v for k, v in (("email", email), ("phone", phone), ("cpf", cpf), ("cnpj", cnpj)) if v}
    try:
        parsed = json.loads(details) if details else None
    except ValueError:
        raise UserError("--details: not valid JSON") from None
    opened = open_request(_runtime(), type=type_, identifiers=ids, language=language, details=parsed,
                          actor=_actor(actor), channel="staff")
    click.echo(opened.request_id)


@dsr.command("verify")
@click.argument("request_id")
@click.option("--code", help="The one-time code the subject received (with --token).")
@click.option("--token", help="The requester's tracking token.")
@click.option("--profiles", help="Staff verification: comma-separated profile ids (may be empty: '').")
@click.option("--note", help="Staff verification: how the identity was checked.")
@click.option("--contact-email", help="Where answers go (default: the contact on file).")
@actor_option
@_service_errors
def dsr_verify(request_id, code, token, profiles, note, contact_email, actor):
    """Verify the requester's identity: by code, or by staff (--profiles and --note)."""
    from consent.dsr import service

    runtime = _runtime()
    if code is not None:
        if not token:
            raise UserError("--token: required with --code")
        result = service.verify_code(runtime, request_id, token, code)
        click.echo(f"verified={str(result.verified).lower()} status={result.status} "
                   f"attempts_left={result.attempts_left}")
        if not result.verified:
            sys.exit(1)
        return
    if profiles is None or not note:
        raise UserError("--profiles and --note: give both (or --code and --token)")
    contact = {"channel": "email", "to": contact_email} if contact_email else None
    out = service.verify_by_staff(runtime, request_id, actor=_actor(actor),
                                  profile_ids=[p.strip() for p in profiles.split(",") if p.strip()], note=note,
                                  contact=contact)
    click.echo(f"status={out['status']} profiles={out['profiles']}")


@dsr.command("execute")
@click.argument("request_id")
@actor_option
@_service_errors
def dsr_execute(request_id, actor):
    """Run (resume, or re-run after a failure) a verified request."""
    from consent.dsr.service import execute

    out = execute(_runtime(), request_id, actor=_actor(actor))
    click.echo(f"status={out['status']} outcome={out['outcome'] or '-'} open_systems={out['open_systems']}")
    failed = [s["name"] for s in out["steps"] if s["status"] == "failed"]
    if failed:
        click.echo(f"failed step(s): {', '.join(failed)}; fix the cause and run execute again", err=True)
        sys.exit(1)


@dsr.command("deny")
@click.argument("request_id")
@click.option("--reason-code", required=True,
              help="identity_not_verified, not_controller, legal_obligation, exercise_of_rights, "
                   "manifestly_unfounded or other.")
@click.option("--reason-text", help="Explanation shown to the subject (required for not_controller and other).")
@actor_option
@_service_errors
def dsr_deny(request_id, reason_code, reason_text, actor):
    """Close a request unmet, with the reason shown to the subject (Art. 18 §4)."""
    from consent.dsr.service import deny

    click.echo(deny(_runtime(), request_id, actor=_actor(actor), reason_code=reason_code,
                    reason_text=reason_text)["status"])


@dsr.command("extend")
@click.argument("request_id")
@click.option("--days", type=int, help="Days to add to the deadline.")
@click.option("--until", help="New due date (YYYY-MM-DD, Brasília).")
@click.option("--reason", required=True)
@actor_option
@_service_errors
def dsr_extend(request_id, days, until, reason, actor):
    """Move a deadline (reason required, audited, the subject is told)."""
    from consent.dsr.service import extend

    moment = _when(until, "--until") if until else None
    click.echo(extend(_runtime(), request_id, actor=_actor(actor), reason=reason, days=days, until=moment)["due_at"])


@dsr.command("pause")
@click.argument("request_id")
@click.option("--reason", required=True)
@actor_option
@_service_errors
def dsr_pause(request_id, reason, actor):
    """Stop a request's clock (e.g. waiting on the subject)."""
    from consent.dsr.service import pause

    click.echo(pause(_runtime(), request_id, actor=_actor(actor), reason=reason)["status"])


@dsr.command("resume")
@click.argument("request_id")
@click.option("--reason")
@actor_option
@_service_errors
def dsr_resume(request_id, reason, actor):
    from consent.dsr.service import resume

    click.echo(resume(_runtime(), request_id, actor=_actor(actor), reason=reason)["due_at"])


@dsr.command("confirm")
@click.argument("request_id")
@click.argument("system")
@click.option("--failed", is_flag=True, help="Record that the system failed instead.")
@click.option("--note")
@actor_option
@_service_errors
def dsr_confirm(request_id, system, failed, note, actor):
    """Confirm a manual task in SYSTEM (e.g. source:erp) was done."""
    from consent.dsr.service import confirm_system

    out = confirm_system(_runtime(), request_id, system, actor=_actor(actor), status="failed" if failed else "done",
                         note=note)
    click.echo(f"status={out['status']} open_systems={out['open_systems']}")


@dsr.command("respond")
@click.argument("request_id")
@click.option("--message", required=True)
@actor_option
@_service_errors
def dsr_respond(request_id, message, actor):
    """Complete a request with a written answer (e.g. review of an automated decision)."""
    from consent.dsr.service import respond

    click.echo(respond(_runtime(), request_id, actor=_actor(actor), message=message)["status"])


@dsr.command("reapply-erasures")
def dsr_reapply():
    """After a database restore: erase again everyone the erasure log names."""
    from cdp.cli import _progress
    from consent.erasure import read_log, reapply_erasures

    runtime = _runtime()
    entries, _ = read_log(runtime.settings, runtime.keyring)
    with _progress(len(entries), "reapply", "erasure") as bar:
        totals = reapply_erasures(runtime, progress=bar.update)
    _dump(totals)
    if totals["refused_lines"]:
        click.echo(f"{totals['refused_lines']} log line(s) failed their signature check and were skipped", err=True)


@dsr.command("housekeeping")
@click.option("--unverified-days", default=7, show_default=True, help="Deny requests never verified after N days.")
@click.option("--retention-days", default=30, show_default=True,
              help="Shred the personal data of requests closed N days ago.")
def dsr_housekeeping(unverified_days, retention_days):
    """Expire unverified requests and shred closed requests' personal data (run daily)."""
    from consent.dsr.service import expire_unverified, purge_closed

    runtime = _runtime()
    expired = expire_unverified(runtime, timedelta(days=unverified_days))
    purged = purge_closed(runtime, timedelta(days=retention_days))
    click.echo(f"expired {expired} unverified request(s); purged {purged} closed request(s)")


@dsr.command("outbox")
@click.option("--request", "request_id")
def dsr_outbox(request_id):
    """Messages waiting to be sent by hand (they hold personal data)."""
    from consent import notify

    runtime = _runtime()
    with runtime.session() as session:
        _dump(notify.outbox(session, runtime.keys(session), request_id))


@dsr.command("deliver")
def dsr_deliver():
    """Send queued messages (SMTP when CDP_SMTP_URL is set)."""
    from consent import notify

    _dump(notify.deliver_pending(_runtime()))


@dsr.command("legal-hold")
@click.option("--source")
@click.option("--event-type")
@click.option("--legal-basis", default="legal_obligation", show_default=True)
@click.option("--reason", help="The legal rule, e.g. 'CTN art. 195: notas fiscais, 5 anos'.")
@click.option("--retention-days", type=int)
@click.option("--list", "list_", is_flag=True, help="List legal holds instead.")
@actor_option
@_service_errors
def dsr_legal_hold(source, event_type, legal_basis, reason, retention_days, list_, actor):
    """Declare data kept by legal obligation (erasure keeps it, blocked from other uses)."""
    from consent.erasure import add_legal_hold, list_legal_holds

    runtime = _runtime()
    if list_:
        _dump(list_legal_holds(runtime))
        return
    if not reason or retention_days is None:
        raise UserError("--reason and --retention-days: required")
    _dump(add_legal_hold(runtime, source=source, event_type=event_type, legal_basis=legal_basis, reason=reason,
                         retention_days=retention_days, actor=_actor(actor)))


@dsr.command("processing-records")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
def dsr_processing_records(fmt):
    """Records of processing operations (Art. 37) from the disclosure log."""
    from cdp.disclosures import processing_records

    runtime = _runtime()
    with runtime.session() as session:
        click.echo(processing_records(session, fmt), nl=False)


# -- cdp incidents -----------------------------------------------------------------------------------

@click.group()
def incidents():
    """Security incident register (Art. 48; Res. CD/ANPD 15/2024)."""


@incidents.command("create")
@click.option("--title", required=True)
@click.option("--detected-at", required=True, help="When the controller learned of it (ISO 8601).")
@click.option("--occurred-at")
@click.option("--category", "categories", multiple=True, help="Data category (repeatable).")
@click.option("--risk", default="undetermined", show_default=True)
@click.option("--encrypted", is_flag=True, help="The data was unintelligible to the attacker (Art. 48 §3).")
@click.option("--description")
@click.option("--measures")
@actor_option
@_service_errors
def incidents_create(title, detected_at, occurred_at, categories, risk, encrypted, description, measures, actor):
    from consent.incidents import create_incident

    out = create_incident(_runtime(), title=title, detected_at=_when(detected_at, "--detected-at"),
                          occurred_at=_when(occurred_at, "--occurred-at") if occurred_at else None,
                          data_categories=list(categories), risk=risk, data_encrypted=encrypted,
                          description=description, measures=measures, actor=_actor(actor))
    click.echo(f"{out['id']}\tnotify ANPD by {out['notification_due']}")


@incidents.command("list")
@click.option("--status")
def incidents_list(status):
    from consent.incidents import list_incidents

    for i in list_incidents(_runtime(), status):
        late = " OVERDUE" if i["notification_overdue"] else ""
        click.echo(f"{i['id']}\t{i['status']}\t{i['risk']}\tdue {i['notification_due']}\t"
                   f"{i['affected_subjects']} subject(s){late}")


@incidents.command("show")
@click.argument("incident_id")
@_service_errors
def incidents_show(incident_id):
    from consent.incidents import get_incident

    _dump(get_incident(_runtime(), incident_id))


@incidents.command("affected")
@click.argument("incident_id")
@click.option("--recipient", "recipients", multiple=True, help="TYPE:ID, e.g. api_key:7 or destination:crm.")
@click.option("--since")
@click.option("--until")
@click.option("--profile", "profiles", multiple=True)
@click.option("--report-downloads", is_flag=True, help="Also subjects whose reports were downloaded in the window.")
@actor_option
@_service_errors
def incidents_affected(incident_id, recipients, since, until, profiles, report_downloads, actor):
    """Find affected subjects from the disclosure log and the request audit trail."""
    from consent.incidents import find_affected

    pairs = []
    for item in recipients:
        kind, _, rid = item.partition(":")
        if not rid:
            raise UserError("--recipient: use TYPE:ID")
        pairs.append((kind, rid))
    out = find_affected(_runtime(), incident_id, actor=_actor(actor), recipients=pairs,
                        since=_when(since, "--since") if since else None,
                        until=_when(until, "--until") if until else None, profile_ids=list(profiles),
                        include_report_downloads=report_downloads)
    click.echo(f"{out['affected_subjects']} affected subject(s)")


@incidents.command("decide")
@click.argument("incident_id")
@click.option("--decision", type=click.Choice(["notify", "not_required"]), required=True)
@click.option("--reason", required=True)
@actor_option
@_service_errors
def incidents_decide(incident_id, decision, reason, actor):
    from consent.incidents import decide

    click.echo(decide(_runtime(), incident_id, actor=_actor(actor), decision=decision, reason=reason)["notify_decision"])


@incidents.command("notified")
@click.argument("incident_id")
@click.option("--anpd", is_flag=True)
@click.option("--subjects", is_flag=True)
@actor_option
@_service_errors
def incidents_notified(incident_id, anpd, subjects, actor):
    from consent.incidents import record_notification

    out = record_notification(_runtime(), incident_id, actor=_actor(actor), anpd=anpd, subjects=subjects)
    click.echo(f"anpd={out['anpd_notified_at']} subjects={out['subjects_notified_at']}")


@incidents.command("close")
@click.argument("incident_id")
@actor_option
@_service_errors
def incidents_close(incident_id, actor):
    from consent.incidents import close_incident

    click.echo(close_incident(_runtime(), incident_id, actor=_actor(actor))["status"])


@incidents.command("export")
@click.argument("incident_id")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@_service_errors
def incidents_export(incident_id, fmt):
    """The incident as the ANPD communication needs it."""
    from consent.incidents import export_incident

    click.echo(export_incident(_runtime(), incident_id, fmt), nl=False)
