"""Executing a verified request: a fixed plan of steps per request type,
recorded in `dsr_steps`.

Each step's effects and its `done` mark commit in one transaction (the
request row is locked meanwhile), so a crash leaves a step either done or
not started, never half-done; running the request again skips what is done
and carries on. A step that fails is marked failed with the exception's
class name (nothing personal) and the request stays in_progress, visible to
staff, until it is re-run (`execute` / an rq retry).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.models import Profile, SourceRecord, utcnow
from cdp.store import KeyStore, Runtime
from consent.dsr import catalog
from consent.dsr.catalog import COMPLETED, DENIED, IN_PROGRESS, RECEIVED, VERIFIED
from consent.dsr.models import DsrRequest, DsrStep, DsrSystem
from consent.dsr.service import (OPEN_SYSTEM_STATUSES, InvalidState, RequestNotFound, audit, decrypt_for,
                                 encrypt_for, notify_subject, transition)

log = logging.getLogger(__name__)

ERASURE_PLAN = ["scope", "snapshot", "suppress", "shred", "purge", "extensions", "sweep", "propagate", "finish"]
PLANS: dict[str, list[str]] = {
    "confirmation": ["scope", "confirmation", "finish"],
    "access": ["scope", "report", "finish"],
    "portability": ["scope", "report", "finish"],
    "sharing_info": ["scope", "report", "finish"],
    "consent_info": ["consent_info", "finish"],
    "consent_revocation": ["scope", "revoke_consent", "finish"],
    "correction": ["scope", "correct", "propagate", "finish"],
    "blocking": ["scope", "block", "propagate", "finish"],
    "deletion": ERASURE_PLAN,
    "anonymization": ERASURE_PLAN,
    "consent_data_deletion": ["scope", "revoke_consent"] + ERASURE_PLAN[1:],
}


class StepFailed(Exception):
    """A step raised; the message names the request, the step and the exception class only."""

    def __init__(self, request_id: str, step: str, error: str):
        super().__init__(f"dsr request {request_id}: step {step} failed ({error})")
        self.request_id, self.step, self.error = request_id, step, error


class RetryLater(Exception):
    """Raised by a step that did part of its work (e.g. some systems answered,
    one failed): what it did is committed, the step is marked failed and the
    request is retried later (rq retry, or `execute`)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class WaitForPeople(Exception):
    """Some system's task is open (manual, pending or failed): the request
    stays in_progress until a person closes it."""


@dataclass
class StepContext:
    runtime: Runtime
    session: Session
    keys: KeyStore
    req: DsrRequest
    state: dict  # the merged states of the steps done before (ids only)

    @property
    def settings(self):
        return self.runtime.settings

    @property
    def lineage(self) -> list[str]:
        return list(self.state.get("lineage", []))

    @property
    def profiles(self) -> list[str]:
        return list(self.state.get("profiles", []))


STEPS: dict[str, Callable[[StepContext], dict | None]] = {}


def step(name: str):
    def register(fn):
        STEPS[name] = fn
        return fn

    return register


# -- the runner ------------------------------------------------------------------------------

def run_request(runtime: Runtime, request_id: str) -> str:
    """Run every step not done yet; returns the request's status afterwards."""
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id)
        if req is None:
            raise RequestNotFound("no such request")
        if req.status in (COMPLETED, DENIED):
            return req.status
        if req.status == RECEIVED:
            raise InvalidState("status", "identity not verified")
        if req.type == "automated_review":
            return req.status
        plan = PLANS[req.type]
        have = set(session.scalars(select(DsrStep.name).where(DsrStep.request_id == req.id)))
        for position, name in enumerate(plan):
            if name not in have:
                session.add(DsrStep(request_id=req.id, name=name, position=position, status="pending", state={}))
        if req.status == VERIFIED:
            transition(session, None, req, IN_PROGRESS, "system", "started", {"steps": plan})
    for name in plan:
        try:
            finished = _run_step(runtime, request_id, name)
        except StepFailed:
            raise
        except WaitForPeople:
            _note_waiting(runtime, request_id)
            break
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised without its text
            _mark_failed(runtime, request_id, name, exc)
            raise StepFailed(request_id, name, type(exc).__name__) from None
        if finished:
            break
    from consent import notify

    notify.deliver_pending(runtime, request_id=request_id)
    with runtime.session() as session:
        return session.get(DsrRequest, request_id).status


def _merged_state(session: Session, request_id: str) -> dict:
    state: dict = {}
    for s in session.scalars(select(DsrStep).where(DsrStep.request_id == request_id, DsrStep.status == "done")
                             .order_by(DsrStep.position)):
        state.update(s.state or {})
    return state


def _run_step(runtime: Runtime, request_id: str, name: str) -> bool:
    """Run one step in one transaction. Returns True when the request is closed."""
    partial: RetryLater | None = None
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id, with_for_update=True)  # one runner at a time per request
        row = session.scalar(select(DsrStep).where(DsrStep.request_id == request_id, DsrStep.name == name))
        if req.status != IN_PROGRESS:
            return True
        if row.status == "done":
            return False
        ctx = StepContext(runtime, session, runtime.keys(session), req, _merged_state(session, request_id))
        row.started_at = utcnow()
        row.attempts += 1
        try:
            result = STEPS[name](ctx) or {}
        except RetryLater as exc:
            partial = exc
            row.status, row.error = "failed", exc.reason[:200]
            audit(session, None, req, "system", "step_failed", detail={"step": name, "error": exc.reason[:200]})
        else:
            row.status, row.state, row.error, row.finished_at = "done", result, None, utcnow()
            if name == "scope" and not result.get("profiles"):
                # Nobody found under the verified identifiers: nothing to do but say so.
                for other in session.scalars(select(DsrStep).where(
                        DsrStep.request_id == request_id, DsrStep.status != "done", DsrStep.name != "finish")):
                    other.status, other.state, other.finished_at = "done", {"skipped": "no_data_held"}, utcnow()
        closed = req.status != IN_PROGRESS
    if partial is not None:  # what the step did is committed; the failure is reported now
        log.warning("dsr request=%s step=%s incomplete", request_id, name)
        raise StepFailed(request_id, name, partial.reason)
    return closed


def _mark_failed(runtime: Runtime, request_id: str, name: str, exc: BaseException) -> None:
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id)
        row = session.scalar(select(DsrStep).where(DsrStep.request_id == request_id, DsrStep.name == name))
        row.status, row.error = "failed", type(exc).__name__
        row.attempts += 1
        audit(session, None, req, "system", "step_failed", detail={"step": name, "error": type(exc).__name__})
    log.warning("dsr request=%s step=%s failed error=%s", request_id, name, type(exc).__name__)


def _note_waiting(runtime: Runtime, request_id: str) -> None:
    with runtime.session() as session:
        req = session.get(DsrRequest, request_id)
        if req.outcome != "awaiting_systems":
            req.outcome = "awaiting_systems"
            open_ = list(session.scalars(select(DsrSystem.system).where(
                DsrSystem.request_id == request_id, DsrSystem.status.in_(OPEN_SYSTEM_STATUSES))))
            audit(session, None, req, "system", "awaiting_systems", detail={"systems": sorted(open_)})


# -- steps shared by every type ------------------------------------------------------------------

@step("scope")
def _scope(ctx: StepContext) -> dict:
    """The verified profiles as they stand now (following merges) and their merge lineage."""
    from consent.subjects import lineage_many, survivor

    active: list[str] = []
    for pid in ctx.req.scope or []:
        profile = survivor(ctx.session, pid)
        if profile is not None and profile.status in ("active", "blocked") and profile.id not in active:
            active.append(profile.id)
    members: set[str] = set().union(*lineage_many(ctx.session, active).values())
    return {"profiles": sorted(active), "lineage": sorted(members)}


@step("finish")
def _finish(ctx: StepContext) -> dict:
    """Close the request — never while a system's task is open."""
    from consent.dsr.report import download_links

    open_ = ctx.session.scalar(select(DsrSystem.id).where(DsrSystem.request_id == ctx.req.id,
                                                          DsrSystem.status.in_(OPEN_SYSTEM_STATUSES)).limit(1))
    if open_ is not None:
        raise WaitForPeople()
    req = ctx.req
    outcome = "no_data_held" if not ctx.profiles and req.type != "consent_info" else "done"
    req.outcome = outcome
    req.package_ct = None  # what downstream systems needed is no longer kept
    transition(ctx.session, ctx.keys, req, COMPLETED, "system", "completed", {"outcome": outcome})
    if outcome == "done" and req.type in ("access", "portability", "sharing_info", "confirmation", "consent_info"):
        links = download_links(ctx.runtime, req.id)
        notify_subject(ctx.session, ctx.keys, ctx.settings, req, "report_ready", {
            "links": "\n".join(f"{fmt.upper()}: {link['url']}" for fmt, link in links.items()),
            "expires": catalog_expiry(links, req.language)})
    else:
        notify_subject(ctx.session, ctx.keys, ctx.settings, req, "completed",
                       {"summary": completion_summary(req, ctx.state, req.language)})
    return {"outcome": outcome}


def catalog_expiry(links: dict, language: str) -> str:
    from consent.dsr.deadlines import brasilia_text

    first = next(iter(links.values()))
    return brasilia_text(datetime.fromisoformat(first["expires_at"]), language)


def completion_summary(req: DsrRequest, state: dict, language: str) -> str:
    en = language == "en"
    if not state.get("profiles") and req.type != "consent_info":
        return ("We hold no personal data under the identifiers you verified." if en else
                "Não mantemos dados pessoais associados aos identificadores que você confirmou.")
    if req.type in catalog.ERASURE_TYPES:
        held = state.get("held") or []
        text = ("Your personal data was deleted from our systems and will not be collected again from our sources."
                if en else "Seus dados pessoais foram eliminados dos nossos sistemas e não serão coletados "
                           "novamente das nossas fontes.")
        if held:
            reasons = sorted({h["reason"] for h in held})
            text += ((f"\n{len(held)} record(s) are kept by legal obligation and blocked from any other use: "
                      if en else f"\n{len(held)} registro(s) são mantidos por obrigação legal e estão bloqueados "
                                 f"para qualquer outro uso: ") + "; ".join(reasons))
        return text
    if req.type == "correction":
        return ("Your data was corrected, and the systems we share it with were asked to correct it too." if en else
                "Seus dados foram corrigidos, e os sistemas com que os compartilhamos foram avisados para corrigir.")
    if req.type == "blocking":
        return ("Your data is blocked: kept, but not used for anything." if en else
                "Seus dados estão bloqueados: mantidos, mas sem qualquer uso.")
    if req.type in ("consent_revocation",):
        revoked = state.get("revoked") or []
        return ((f"Consent revoked for: {', '.join(revoked) or '-'}." if en else
                 f"Consentimento revogado para: {', '.join(revoked) or '-'}."))
    return "Done." if en else "Concluído."


# -- answers and reports ---------------------------------------------------------------------

@step("confirmation")
def _confirmation(ctx: StepContext) -> dict:
    """Art. 19 I: the simplified answer, right away: yes, since when, from where."""
    from consent.dsr.report import build_confirmation

    answer = build_confirmation(ctx.session, ctx.keys, ctx.settings, ctx.req, ctx.profiles, ctx.lineage)
    ctx.req.result_ct = encrypt_for(ctx.keys, ctx.req, "result", answer)
    return {"sections": ["confirmation"]}


@step("consent_info")
def _consent_info(ctx: StepContext) -> dict:
    from consent.dsr.report import build_consent_info

    ctx.req.result_ct = encrypt_for(ctx.keys, ctx.req, "result", build_consent_info(ctx.session, ctx.settings,
                                                                                    ctx.req))
    return {"sections": ["consent_info"]}


@step("report")
def _report(ctx: StepContext) -> dict:
    from consent.dsr.report import build_report

    sections = ("sharing",) if ctx.req.type == "sharing_info" else None
    report = build_report(ctx.session, ctx.keys, ctx.settings, ctx.req, ctx.profiles, ctx.lineage, sections)
    ctx.req.result_ct = encrypt_for(ctx.keys, ctx.req, "result", report)
    return {"sections": sorted(k for k in report if not k.startswith("_"))}


@step("revoke_consent")
def _revoke_consent(ctx: StepContext) -> dict:
    from consent.dsr.compat import revoke_all
    from consent.dsr.service import claims

    wanted = claims(ctx.keys, ctx.req).get("details", {}).get("purposes")
    revoked: set[str] = set()
    for pid in ctx.profiles:
        revoked.update(revoke_all(ctx.session, ctx.keys, pid, ctx.req.id, wanted))
    return {"revoked": sorted(revoked)}


# -- correction and blocking -------------------------------------------------------------------

CORRECTION_SOURCE = "dsr_correction"
CORRECTION_TRUST = 1000  # above any source: a later sync never silently reverts a subject's correction


@step("correct")
def _correct(ctx: StepContext) -> dict:
    """Ingest the corrected values as a record of the `dsr_correction`
    source (highest trust), attach it to each profile in scope and rebuild
    the golden record; keep what upstream systems need to correct too."""
    from cdp.ingest import Ingestor, ensure_source
    from consent.dsr.service import claims
    from identity.resolve import Resolver

    changes = claims(ctx.keys, ctx.req)["details"]["changes"]
    ensure_source(ctx.session, CORRECTION_SOURCE, plugin="dsr", trust=CORRECTION_TRUST)
    ingestor = Ingestor(ctx.session, ctx.keys, CORRECTION_SOURCE, plugin="dsr")
    resolver = Resolver(ctx.session, ctx.keys, ctx.settings)
    record_ids = []
    for pid in ctx.profiles:
        result = ingestor.ingest_many([{"external_id": f"{ctx.req.id}:{pid}", **changes}])[0]
        if result.status not in ("accepted", "updated", "duplicate"):
            raise ValueError(f"correction record {result.status}")
        record = ctx.session.get(SourceRecord, result.record_id)
        profile = ctx.session.get(Profile, pid)
        if record.profile_id != pid:
            profile.record_count = (profile.record_count or 0) + 1
        record.profile_id, record.status, record.link_rule = pid, "resolved", "dsr_correction"
        ctx.session.flush()
        resolver.rebuild_golden(profile)
        record_ids.append(record.id)
    ctx.req.package_ct = encrypt_for(ctx.keys, ctx.req, "package", subject_package(ctx, changes=changes))
    return {"correction_records": record_ids}


@step("block")
def _block(ctx: StepContext) -> dict:
    """Blocking (Art. 18 IV): data kept, processing suspended; new records
    of the subject are held back by suppression entries of mode "block"."""
    from consent import suppression

    package = subject_package(ctx)
    entries = set()
    for kind, values in package["identifiers"].items():
        for value in values:
            entries.add((kind, suppression.identifier_hash(ctx.runtime.keyring, kind, value)))
    suppression.erasure_fence(ctx.session)
    suppression.add(ctx.session, entries, ctx.req.id, mode="block")
    for pid in ctx.profiles:
        ctx.session.get(Profile, pid).status = "blocked"
    ctx.req.package_ct = encrypt_for(ctx.keys, ctx.req, "package", package)
    return {"blocked_profiles": ctx.profiles}


def subject_package(ctx: StepContext, changes: dict | None = None) -> dict:
    """What downstream systems need to find the subject: external ids per
    source and the identifiers (encrypted under the request key until the
    request closes)."""
    from cdp import crypto
    from consent.suppression import suppressible
    from identity.resolve import decrypt_payload

    records = ctx.session.scalars(select(SourceRecord).where(SourceRecord.profile_id.in_(ctx.lineage))
                                  .order_by(SourceRecord.id)).all()
    ctx.keys.preload([r.key_id for r in records])
    sources: dict[str, dict] = {}
    identifiers: dict[str, set[str]] = {}
    for r in records:
        external_id = crypto.decrypt_json(ctx.keys.get(r.key_id), r.external_id_ct, "source_records", r.id,
                                          "external_id")
        sources.setdefault(r.source, {"external_ids": []})["external_ids"].append(external_id)
        for ident in decrypt_payload(ctx.keys, r).get("identifiers", []):
            if suppressible(ident):
                identifiers.setdefault(ident["kind"], set()).add(ident["value"])
    return {"sources": sources, "identifiers": {k: sorted(v) for k, v in identifiers.items()},
            "profiles": ctx.lineage, "changes": changes or {}}


def package_of(ctx: StepContext) -> dict:
    return decrypt_for(ctx.keys, ctx.req, "package", ctx.req.package_ct) or {"sources": {}, "identifiers": {}}


# Steps that live with their concept.
import consent.erasure  # noqa: E402,F401  - registers snapshot, suppress, shred, purge, extensions, sweep
import consent.dsr.propagation  # noqa: E402,F401  - registers propagate
