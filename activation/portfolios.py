"""Customer portfolios (docs/segments.md, "Portfolios"): groups of customers
with one responsible manager (a console staff user), their members by hand
or from a segment, and daily snapshots of size, LTV, churn and NPS.

* `manual` portfolios: members added/removed by hand, with history; a
  customer is in at most one manual portfolio at a time (one account
  manager per customer; a partial unique index backs it). Adding someone
  held by another manual portfolio is a PortfolioConflict (409) naming the
  profile ids and their portfolio: move them with an explicit remove first.
* `segment` portfolios: members are the segment's current materialized
  members (segment_members), so they follow every segment refresh; they may
  overlap with other portfolios (a rule says who, not who owns the account).

Snapshots are one aggregate query over membership joined to profile_metrics
for every portfolio at once; nothing loads profiles into Python.
"""
from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import and_, case, delete, func, insert, select, text, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from activation import keyset
from activation.errors import FieldError
from activation.models import ProfileMetrics, Segment, SegmentMember
from activation.portfolio_models import Portfolio, PortfolioManager, PortfolioMember, PortfolioSnapshot
from cdp.console.models import StaffUser
from cdp.models import Profile, utcnow
from cdp.store import Runtime

log = logging.getLogger(__name__)

MAX_IDS = 1000  # profile ids per add/remove call
SNAPSHOT_LOCK_ID = 0x706F7274  # "port"
CENT = Decimal("0.01")
# Columns of profile_metrics a member listing shows (numbers only, never personal data).
MEMBER_METRICS = ("purchase_count", "monetary_total", "average_order_value", "recency_days", "ltv", "r_score",
                  "f_score", "m_score", "churned", "nps_score", "nps_class", "csat_score", "complaints")


class PortfolioError(FieldError):
    """Bad input naming the field (422 / exit 2); messages hold no personal data."""


class PortfolioConflict(PortfolioError):
    """The request contradicts current state (409): a taken name, a customer
    already in another manual portfolio, hand edits to a rule-based one."""

    status = 409

    def __init__(self, field: str, message: str, conflicts: dict[str, int] | None = None):
        super().__init__(field, message)
        self.conflicts = conflicts or {}


class PortfolioNotFound(PortfolioError):
    status = 404


# -- portfolios and managers ------------------------------------------------------------------

def get_portfolio(session: Session, portfolio_id: int) -> Portfolio:
    portfolio = session.get(Portfolio, portfolio_id) if 0 < portfolio_id < 2**31 else None
    if portfolio is None:
        raise PortfolioNotFound("portfolio", "not found")
    return portfolio


def _check_manager(session: Session, manager_id) -> str:
    if not isinstance(manager_id, str) or len(manager_id) > 36 or session.scalar(
            select(StaffUser.id).where(StaffUser.id == manager_id, StaffUser.active.is_(True))) is None:
        raise PortfolioError("manager_id", "not an active staff user (cdp staff add)")
    return manager_id


def create_portfolio(session: Session, name: str, manager_id: str, description: str | None = None,
                     segment_id: int | None = None, actor: str = "system") -> Portfolio:
    """A manual portfolio, or a rule-based one when segment_id is given."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise PortfolioError("name", "must have 1 to 100 characters")
    if description is not None and len(description) > 500:
        raise PortfolioError("description", "at most 500 characters")
    _check_manager(session, manager_id)
    if segment_id is not None and (not 0 < segment_id < 2**31 or session.get(Segment, segment_id) is None):
        raise PortfolioError("segment_id", "no such segment")
    if session.scalar(select(Portfolio.id).where(Portfolio.name == name)) is not None:
        raise PortfolioConflict("name", "a portfolio with this name exists")
    now = utcnow()
    portfolio = Portfolio(name=name, description=description, kind="segment" if segment_id else "manual",
                          segment_id=segment_id, manager_id=manager_id, created_at=now, updated_at=now)
    session.add(portfolio)
    try:
        session.flush()
    except IntegrityError:
        raise PortfolioConflict("name", "a portfolio with this name exists") from None
    session.add(PortfolioManager(portfolio_id=portfolio.id, manager_id=manager_id, assigned_at=now, assigned_by=actor))
    session.flush()
    return portfolio


def update_portfolio(session: Session, portfolio: Portfolio, name: str | None = None,
                     description: str | None = None) -> Portfolio:
    if name is not None:
        name = name.strip()
        if not name or len(name) > 100:
            raise PortfolioError("name", "must have 1 to 100 characters")
        if name != portfolio.name and session.scalar(select(Portfolio.id).where(Portfolio.name == name)) is not None:
            raise PortfolioConflict("name", "a portfolio with this name exists")
        portfolio.name = name
    if description is not None:
        if len(description) > 500:
            raise PortfolioError("description", "at most 500 characters")
        portfolio.description = description
    portfolio.updated_at = utcnow()
    session.flush()
    return portfolio


def assign_manager(session: Session, portfolio: Portfolio, manager_id: str, actor: str = "system",
                   now: datetime | None = None) -> Portfolio:
    """Hand the portfolio to another manager; the history keeps who had it when."""
    _check_manager(session, manager_id)
    if manager_id == portfolio.manager_id:
        return portfolio
    now = now or utcnow()
    session.execute(update(PortfolioManager).where(PortfolioManager.portfolio_id == portfolio.id,
                                                   PortfolioManager.unassigned_at.is_(None))
                    .values(unassigned_at=now))
    session.add(PortfolioManager(portfolio_id=portfolio.id, manager_id=manager_id, assigned_at=now,
                                 assigned_by=actor))
    portfolio.manager_id, portfolio.updated_at = manager_id, now
    session.flush()
    return portfolio


def manager_history(session: Session, portfolio_id: int) -> list[dict]:
    return [{"manager_id": m.manager_id, "assigned_at": m.assigned_at.isoformat(),
             "unassigned_at": m.unassigned_at.isoformat() if m.unassigned_at else None,
             "assigned_by": m.assigned_by}
            for m in session.scalars(select(PortfolioManager).where(PortfolioManager.portfolio_id == portfolio_id)
                                     .order_by(PortfolioManager.assigned_at, PortfolioManager.id))]


# -- membership -------------------------------------------------------------------------------

def members_select():
    """(portfolio_id, profile_id) of every portfolio's current members, active profiles only:
    hand-assigned rows plus the current members of the segment of each rule-based portfolio."""
    pm, sm, pf, p = PortfolioMember.__table__, SegmentMember.__table__, Portfolio.__table__, Profile.__table__
    manual = select(pm.c.portfolio_id, pm.c.profile_id).where(pm.c.removed_at.is_(None))
    ruled = (select(pf.c.id.label("portfolio_id"), sm.c.profile_id)
             .join(sm, and_(sm.c.segment_id == pf.c.segment_id, sm.c.exited_at.is_(None)))
             .where(pf.c.kind == "segment"))
    both = union_all(manual, ruled).subquery("portfolio_membership")
    return (select(both.c.portfolio_id, both.c.profile_id)
            .join(p, and_(p.c.id == both.c.profile_id, p.c.status == "active")))


def _portfolio_members(portfolio: Portfolio):
    """SELECT profile_id of this portfolio's current members (active profiles)."""
    p = Profile.__table__
    if portfolio.kind == "segment":
        sm = SegmentMember.__table__
        return (select(sm.c.profile_id.label("profile_id")).join(p, and_(p.c.id == sm.c.profile_id,
                                                                          p.c.status == "active"))
                .where(sm.c.segment_id == portfolio.segment_id, sm.c.exited_at.is_(None)))
    pm = PortfolioMember.__table__
    return (select(pm.c.profile_id.label("profile_id")).join(p, and_(p.c.id == pm.c.profile_id,
                                                                      p.c.status == "active"))
            .where(pm.c.portfolio_id == portfolio.id, pm.c.removed_at.is_(None)))


def member_count(session: Session, portfolio: Portfolio) -> int:
    return session.scalar(select(func.count()).select_from(_portfolio_members(portfolio).subquery()))


def _clean_ids(profile_ids) -> list[str]:
    if not isinstance(profile_ids, (list, tuple)) or not profile_ids or len(profile_ids) > MAX_IDS:
        raise PortfolioError("profile_ids", f"must be a list of 1 to {MAX_IDS} profile ids")
    if not all(isinstance(i, str) and 0 < len(i) <= 36 for i in profile_ids):
        raise PortfolioError("profile_ids", "each must be a profile id (a string of up to 36 characters)")
    return list(dict.fromkeys(profile_ids))


def _hand_only(portfolio: Portfolio) -> None:
    if portfolio.kind != "manual":
        raise PortfolioConflict("kind", "members of a rule-based portfolio follow its segment; "
                                        "edit the segment's rules instead")


def add_members(session: Session, portfolio: Portfolio, profile_ids, actor: str = "system") -> dict:
    """Add customers by hand. Unknown or inactive profiles are a 422 naming
    `profile_ids`; customers of another manual portfolio a 409 (nothing added)."""
    _hand_only(portfolio)
    ids = _clean_ids(profile_ids)
    found = set(session.scalars(select(Profile.id).where(Profile.id.in_(ids), Profile.status == "active")))
    unknown = [i for i in ids if i not in found]
    if unknown:
        raise PortfolioError("profile_ids", f"not active profiles: {', '.join(unknown[:20])}"
                                            + (" …" if len(unknown) > 20 else ""))
    pm = PortfolioMember.__table__
    held = dict(session.execute(select(pm.c.profile_id, pm.c.portfolio_id)
                                .where(pm.c.profile_id.in_(ids), pm.c.removed_at.is_(None))).all())
    elsewhere = {pid: other for pid, other in held.items() if other != portfolio.id}
    if elsewhere:
        raise _conflict(elsewhere)
    new = [i for i in ids if i not in held]
    if new:
        now = utcnow()
        try:
            with session.begin_nested():  # a concurrent add of the same customer hits the unique index
                session.execute(insert(pm), [{"portfolio_id": portfolio.id, "profile_id": i, "added_at": now,
                                              "added_by": actor} for i in new])
        except IntegrityError:
            taken = dict(session.execute(select(pm.c.profile_id, pm.c.portfolio_id).where(
                pm.c.profile_id.in_(new), pm.c.removed_at.is_(None))).all())
            raise _conflict({k: v for k, v in taken.items() if v != portfolio.id} or {i: -1 for i in new}) from None
    return {"added": len(new), "already_members": len(ids) - len(new)}


def _conflict(elsewhere: dict[str, int]) -> PortfolioConflict:
    listed = ", ".join(f"{pid} (portfolio {other})" for pid, other in list(elsewhere.items())[:20])
    return PortfolioConflict("profile_ids", "already in another portfolio (one manual portfolio per customer; "
                                            f"remove them there first): {listed}", elsewhere)


def remove_members(session: Session, portfolio: Portfolio, profile_ids, actor: str = "system") -> dict:
    _hand_only(portfolio)
    ids = _clean_ids(profile_ids)
    pm = PortfolioMember.__table__
    current = pm.c.portfolio_id == portfolio.id, pm.c.removed_at.is_(None), pm.c.profile_id.in_(ids)
    removed = session.scalar(select(func.count()).select_from(pm).where(*current))
    session.execute(update(pm).where(*current).values(removed_at=utcnow(), removed_by=actor))
    return {"removed": removed, "not_members": len(ids) - removed}


def encode_cursor(portfolio_id: int, profile_id: str) -> str:
    return keyset.encode_cursor("p", portfolio_id, profile_id)


def decode_cursor(portfolio_id: int, cursor: str | None) -> str | None:
    try:
        return keyset.decode_cursor("p", portfolio_id, cursor)
    except ValueError:
        raise PortfolioError("cursor", "not a cursor of this portfolio") from None


def members_page(session: Session, portfolio: Portfolio, after: str | None = None,
                 limit: int = 100) -> tuple[list[dict], str | None]:
    """One keyset page (profile-id order) of members: ids and metrics, no personal data."""
    members = _portfolio_members(portfolio).subquery()
    m = ProfileMetrics.__table__
    query = (select(members.c.profile_id, *(m.c[c] for c in MEMBER_METRICS))
             .outerjoin(m, m.c.profile_id == members.c.profile_id).order_by(members.c.profile_id))
    if after:
        query = query.where(members.c.profile_id > after)
    rows = session.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    items = [{k: _plain(v) for k, v in row._mapping.items()} for row in rows[:limit]]
    return items, (encode_cursor(portfolio.id, items[-1]["profile_id"]) if more else None)


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    return value.isoformat() if hasattr(value, "isoformat") else value


# -- snapshots --------------------------------------------------------------------------------

def _money(value) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def take_snapshots(session: Session, as_of: date | None = None, portfolio_ids: list[int] | None = None) -> int:
    """Snapshot every portfolio (or these) for the day `as_of` (today, UTC): one
    aggregate query grouped by portfolio. Idempotent per day: a second run on
    the same day replaces that day's rows. Returns snapshots written."""
    as_of = as_of or utcnow().date()
    if session.bind.dialect.name == "postgresql":  # two runners of the same day take turns
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SNAPSHOT_LOCK_ID})
    portfolios = select(Portfolio.id, Portfolio.manager_id)
    if portfolio_ids is not None:
        portfolios = portfolios.where(Portfolio.id.in_(portfolio_ids))
    managers = dict(session.execute(portfolios).all())
    if not managers:
        return 0
    members = members_select().subquery()
    m = ProfileMetrics.__table__
    query = (select(members.c.portfolio_id, func.count(), func.count().filter(m.c.purchase_count > 0),
                    func.sum(m.c.ltv), func.count(m.c.ltv), func.count().filter(m.c.churned.is_(True)),
                    func.count(m.c.churned), func.count(m.c.nps_score),
                    func.sum(case((m.c.nps_score >= 9, 1), else_=0)),
                    func.sum(case((m.c.nps_score <= 6, 1), else_=0)))
             .select_from(members).outerjoin(m, m.c.profile_id == members.c.profile_id)
             .where(members.c.portfolio_id.in_(list(managers))).group_by(members.c.portfolio_id))
    stats = {row[0]: row[1:] for row in session.execute(query)}
    now = utcnow()
    rows = []
    for pid, manager in managers.items():
        size, customers, ltv_sum, ltv_n, churned, flagged, nps_n, promoters, detractors = (
            stats.get(pid) or (0, 0, None, 0, 0, 0, 0, 0, 0))
        promoters, detractors = int(promoters or 0), int(detractors or 0)
        total = _money(ltv_sum or 0)
        rows.append({"portfolio_id": pid, "as_of": as_of, "taken_at": now, "manager_id": manager, "size": size,
                     "customers": customers, "total_ltv": total,
                     # from the cent-exact total: float sums (SQLite) must not move the rounding
                     "avg_ltv": _money(total / ltv_n) if ltv_n else None,
                     "churned": churned, "churn_rate": _pct(churned, flagged),
                     "nps_respondents": nps_n, "promoters": promoters, "detractors": detractors,
                     "nps": _pct(promoters - detractors, nps_n)})
    session.execute(delete(PortfolioSnapshot).where(PortfolioSnapshot.as_of == as_of,
                                                    PortfolioSnapshot.portfolio_id.in_(list(managers))))
    session.execute(insert(PortfolioSnapshot), rows)
    log.info("portfolio snapshots as_of=%s portfolios=%d", as_of.isoformat(), len(rows))
    return len(rows)


def snapshot_dict(s: PortfolioSnapshot) -> dict:
    return {"as_of": s.as_of.isoformat(), "taken_at": s.taken_at.isoformat(), "manager_id": s.manager_id,
            "size": s.size, "customers": s.customers, "total_ltv": str(s.total_ltv),
            "avg_ltv": str(s.avg_ltv) if s.avg_ltv is not None else None, "churned": s.churned,
            "churn_rate": s.churn_rate, "nps_respondents": s.nps_respondents, "promoters": s.promoters,
            "detractors": s.detractors, "nps": s.nps}


def history(session: Session, portfolio_id: int, start: date | None = None, end: date | None = None) -> list[dict]:
    query = select(PortfolioSnapshot).where(PortfolioSnapshot.portfolio_id == portfolio_id)
    if start:
        query = query.where(PortfolioSnapshot.as_of >= start)
    if end:
        query = query.where(PortfolioSnapshot.as_of <= end)
    return [snapshot_dict(s) for s in session.scalars(query.order_by(PortfolioSnapshot.as_of))]


def latest_snapshot(session: Session, portfolio_id: int) -> dict | None:
    s = session.scalar(select(PortfolioSnapshot).where(PortfolioSnapshot.portfolio_id == portfolio_id)
                       .order_by(PortfolioSnapshot.as_of.desc()).limit(1))
    return snapshot_dict(s) if s else None


def portfolio_dict(session: Session, portfolio: Portfolio, with_history: bool = False) -> dict:
    out = {"id": portfolio.id, "name": portfolio.name, "description": portfolio.description, "kind": portfolio.kind,
           "segment_id": portfolio.segment_id, "manager_id": portfolio.manager_id,
           "created_at": portfolio.created_at.isoformat(), "updated_at": portfolio.updated_at.isoformat(),
           "members": member_count(session, portfolio), "latest_snapshot": latest_snapshot(session, portfolio.id)}
    if with_history:
        out["managers"] = manager_history(session, portfolio.id)
    return out


def overview(session: Session) -> list[dict]:
    """Every portfolio with its manager and latest snapshot (console, `cdp portfolios list`)."""
    return [portfolio_dict(session, p) for p in session.scalars(select(Portfolio).order_by(Portfolio.name))]


# -- entry points for jobs ----------------------------------------------------------------------

def snapshot_all(runtime: Runtime, as_of: date | None = None) -> dict:
    with runtime.session() as session:
        written = take_snapshots(session, as_of)
    return {"snapshots": written, "as_of": (as_of or utcnow().date()).isoformat()}


def snapshot_job(as_of: str | None = None) -> dict:
    """rq job: the payload is at most a date (never personal data)."""
    from cdp.jobs import _worker_runtime

    return snapshot_all(_worker_runtime(), date.fromisoformat(as_of) if as_of else None)


def submit_snapshot(runtime: Runtime) -> dict:
    """Snapshot now (no Redis) or queue it; returns the counts or the job id.
    The day is fixed at submission, so a job run after midnight files under the right day."""
    today = utcnow().date()
    if not runtime.settings.redis_url:
        return snapshot_all(runtime, today)
    from cdp.jobs import queue

    job = queue(runtime).enqueue(snapshot_job, today.isoformat(), description="portfolio snapshots",
                                 job_timeout=1800)
    return {"job_id": job.id}

