"""Telling the other systems (Art. 18 §6): every source the subject's
records came from and every recipient their data went to is asked to
repeat a deletion or correction, and each one's status is recorded:
done, failed (retried), or manual — a task a person confirms when the
system has no API for it. A request never completes while one is open.

Sources are the configured rows of `cdp.models.Source` with their connector
(`on_subject_request`); recipients come from the disclosure log. The
activation feature registers how to build a destination connector with
`register_destination_resolver`.
"""
from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.connectors import ActionResult, ConnectorError, Subject, manual_result
from cdp.disclosures import Recipient, recipients_for
from cdp.models import Source, utcnow
from cdp.store import KeyStore
from consent.dsr.execute import CORRECTION_SOURCE, RetryLater, StepContext, package_of, step
from consent.dsr.models import DsrSystem

log = logging.getLogger(__name__)

INTERNAL_SOURCES = {CORRECTION_SOURCE}
DESTINATION_RESOLVERS: list[Callable[[Session, KeyStore, Recipient], object | None]] = []

RECIPIENT_INSTRUCTION = {
    "delete": ("Avise este destinatário para eliminar os dados do titular (LGPD, art. 18, §6º) e registre a "
               "confirmação. / Tell this recipient to delete the subject's data (LGPD Art. 18 §6) and record it."),
    "correct": ("Avise este destinatário para corrigir os dados do titular (LGPD, art. 18, §6º) e registre a "
                "confirmação. / Tell this recipient to correct the subject's data (LGPD Art. 18 §6) and record it."),
    "block": ("Avise este destinatário para bloquear os dados do titular (LGPD, art. 18, §6º) e registre a "
              "confirmação. / Tell this recipient to block the subject's data (LGPD Art. 18 §6) and record it."),
}


def register_destination_resolver(fn: Callable[[Session, KeyStore, Recipient], object | None]) -> None:
    """fn(session, keys, recipient) -> a DestinationConnector for that
    recipient, or None when it does not know it."""
    if fn not in DESTINATION_RESOLVERS:
        DESTINATION_RESOLVERS.append(fn)


def source_connector(session: Session, keys: KeyStore, source: Source):
    """The connector of a configured source (`cdp sources add`), or None."""
    from cdp.plugins import source_types

    cls = source_types().get(source.plugin)
    if cls is None or getattr(source, "config", None) is None:
        return None  # records pushed to the API, or loaded from a file once: nobody to ask but a person
    config = dict(source.config)
    secrets_ct = getattr(source, "secrets_ct", None)
    if secrets_ct:
        config.update(crypto.decrypt_json(keys.get(source.secrets_key_id), secrets_ct, "sources", source.name,
                                          "secrets"))
    return cls(config, source=source.name)


def _action(req_type: str) -> str:
    return {"correction": "correct", "blocking": "block"}.get(req_type, "delete")


def _ask(connector, action: str, subject: Subject) -> ActionResult:
    if action == "block":
        return ActionResult("manual", RECIPIENT_INSTRUCTION["block"])
    result = connector.on_subject_request(action, subject)
    if not isinstance(result, ActionResult):
        return ActionResult("failed", "connector returned no ActionResult")
    return result


@step("propagate")
def _propagate(ctx: StepContext) -> dict:
    package = package_of(ctx)
    action = _action(ctx.req.type)
    identifiers = package.get("identifiers", {})
    targets: list[tuple[str, str, Callable[[], ActionResult]]] = []

    for name, info in sorted(package.get("sources", {}).items()):
        if name in INTERNAL_SOURCES:
            continue
        subject = Subject(external_ids=list(info.get("external_ids", [])), identifiers=identifiers,
                          changes=package.get("changes", {}))

        def call(name=name, subject=subject) -> ActionResult:
            if action == "block":
                return ActionResult("done", "bloqueio é interno; a fonte não precisa agir / blocking is internal")
            source = ctx.session.get(Source, name)
            connector = source_connector(ctx.session, ctx.keys, source) if source else None
            return _ask(connector, action, subject) if connector is not None else manual_result(action)

        targets.append((f"source:{name}", "source", call))

    for recipient in recipients_for(ctx.session, package.get("profiles", ctx.lineage)):
        subject = Subject(external_ids=list(package.get("profiles", [])), identifiers=identifiers,
                          changes=package.get("changes", {}))

        def call(recipient=recipient, subject=subject) -> ActionResult:
            for resolve in DESTINATION_RESOLVERS:
                connector = resolve(ctx.session, ctx.keys, recipient)
                if connector is not None:
                    return _ask(connector, action, subject)
            return ActionResult("manual", RECIPIENT_INSTRUCTION[action])

        kind = "destination" if recipient.type == "destination" else "recipient"
        targets.append((f"{kind}:{recipient.type}:{recipient.id}", kind, call))

    existing = {s.system: s for s in ctx.session.scalars(select(DsrSystem).where(DsrSystem.request_id == ctx.req.id))}
    failed = 0
    for system, kind, call in targets:
        row = existing.get(system)
        if row is None:
            row = DsrSystem(request_id=ctx.req.id, system=system, kind=kind, action=action, status="pending",
                            attempts=0)
            ctx.session.add(row)
        if row.status in ("done", "manual"):
            continue  # answered already (manual tasks wait for a person)
        row.attempts += 1
        try:
            result = call()
        except ConnectorError as exc:
            result = ActionResult("failed", str(exc)[:500])
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the others
            result = ActionResult("failed", type(exc).__name__)
        row.status = "manual" if result.status in ("manual", "not_supported") else result.status
        row.detail = (result.detail or "")[:500] or None
        row.updated_at = utcnow()
        if row.status == "failed":
            failed += 1
        log.info("dsr request=%s system=%s action=%s status=%s", ctx.req.id, system, action, row.status)
    if failed:
        raise RetryLater(f"{failed} system(s) failed")
    return {"systems": len(targets)}
