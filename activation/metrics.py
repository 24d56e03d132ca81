"""Per-profile metrics as derived traits (the `profile_metrics` table) and
company-level indicators. Formulas: docs/metrics.md.

Two passes, both bounded:
* per profile, in chunks of ids: SQL aggregates of purchase events, plus the
  encrypted attributes of survey and complaint events decrypted chunk by
  chunk (keys preloaded per chunk, forgotten after it);
* across the base, in SQL only: RFM quintiles (NTILE) and LTV (which needs
  the base's average customer lifetime: running totals in `metrics_totals`,
  adjusted by each recompute, recounted by the base-wide pass).
Recomputed for the profiles touched by resolution (identity/resolve.py:
first pass and their LTV) and for everyone by `cdp metrics refresh` (both).
"""
from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable

from sqlalchemy import Float, Numeric, case, cast, delete, exists, func, select, text, update
from sqlalchemy.orm import Session

from activation.models import MetricsTotals, ProfileMetrics
from cdp import crypto
from cdp.config import ConfigError
from cdp.models import Event, Profile, SourceRecord, utcnow
from cdp.store import KeyStore, Runtime, among, insert_rows

log = logging.getLogger(__name__)

PURCHASE = "purchase"
SURVEY_TYPES = ("nps_response", "survey_response", "csat_response", "ces_response")
COMPLAINT = "complaint"
CHUNK = 500
METRICS_LOCK_ID = 0x6D657472  # "metr"
CENT = Decimal("0.01")
YES = {"true", "sim", "yes", "s", "y", "1"}
NO = {"false", "nao", "não", "no", "n", "0"}


def churn_days_setting(environ=None) -> int:
    """CDP_CHURN_DAYS: a customer with no purchase in this many days is churned (default 180)."""
    raw = (environ if environ is not None else os.environ).get("CDP_CHURN_DAYS", "180")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError("CDP_CHURN_DAYS must be a whole number of days") from None
    if value < 1:
        raise ConfigError("CDP_CHURN_DAYS must be at least 1")
    return value


def _money(value) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _int_in(value, low: int, high: int) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _yes_no(value) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().casefold() if value is not None else ""
    return True if text in YES else False if text in NO else None


def holdout_bucket(profile_id: str) -> int:
    """0-99, stable per subject: the first 8 bytes of SHA-256 of the profile id, mod 100."""
    return int.from_bytes(hashlib.sha256(f"holdout:{profile_id}".encode()).digest()[:8], "big") % 100


def nps_class(score: int | None) -> str | None:
    if score is None:
        return None
    return "promoter" if score >= 9 else "neutral" if score >= 7 else "detractor"


# -- per-profile pass ------------------------------------------------------------------------

def recompute(session: Session, keys: KeyStore, profile_ids: Iterable[str], now: datetime | None = None,
              churn_days: int | None = None) -> int:
    """Recompute the per-profile metrics of these profiles (rows of profiles
    no longer active are dropped). Returns rows written."""
    now = now or utcnow()
    churn_days = churn_days or churn_days_setting()
    ids = list(dict.fromkeys(profile_ids))
    written = 0
    _lock(session)
    pm = ProfileMetrics.__table__
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        active = list(session.scalars(select(Profile.id).where(among(session, Profile.id, chunk), Profile.status == "active")))
        before = session.execute(select(func.count(), func.coalesce(func.sum(pm.c.lifetime_days), 0))
                                 .where(among(session, pm.c.profile_id, chunk), pm.c.purchase_count > 0)).one()
        session.execute(delete(pm).where(among(session, pm.c.profile_id, chunk)))
        rows = {pid: _empty(pid, now) for pid in active}
        if active:
            purchases = session.execute(
                select(Event.profile_id, func.count(), func.sum(Event.amount), func.min(Event.occurred_at),
                       func.max(Event.occurred_at))
                .where(among(session, Event.profile_id, active), Event.type == PURCHASE).group_by(Event.profile_id))
            for pid, count, total, first, last in purchases:
                _purchases(rows[pid], count, total, first, last, now, churn_days)
            _attributes(session, keys, active, rows)
            keys.forget()  # bounded: keys of one chunk at a time
        buyers = [r["lifetime_days"] for r in rows.values() if r["purchase_count"] > 0]
        _add_to_totals(session, len(buyers) - before[0], sum(buyers) - int(before[1]))
        if rows:
            # LTV with the base's average lifetime including this chunk, as the
            # rows are written (not written, then updated); in one COPY on
            # PostgreSQL (the ORM would split rows by which columns are None).
            years = average_lifetime_years(session)
            for row in rows.values():
                row["ltv"] = ltv(row["average_order_value"], row["purchase_frequency"], years)
            insert_rows(session, pm, list(rows.values()))
            written += len(rows)
    return written


def ltv(average_order_value: Decimal | None, purchase_frequency: float | None, lifetime_years: float) -> Decimal | None:
    """Average order value × purchases a year × the base's average lifetime in
    years (None without purchases), as `update_ltv`'s SQL computes it: a
    float product, then numeric(14, 2) — PostgreSQL keeps 15 significant
    digits of a float and rounds half away from zero."""
    if average_order_value is None or purchase_frequency is None:
        return None
    product = float(average_order_value) * purchase_frequency * lifetime_years
    return Decimal(f"{product:.15g}").quantize(CENT, rounding=ROUND_HALF_UP)


def _add_to_totals(session: Session, purchasers: int, lifetime_days: int) -> None:
    if purchasers or lifetime_days:
        t = MetricsTotals.__table__
        session.execute(update(t).where(t.c.id == 1).values(purchasers=t.c.purchasers + purchasers,
                                                            lifetime_days=t.c.lifetime_days + lifetime_days))


def _recount_totals(session: Session) -> None:
    """Totals from the table itself (the base-wide pass; also heals any drift)."""
    pm, t = ProfileMetrics.__table__, MetricsTotals.__table__
    purchasers, days = session.execute(select(func.count(), func.coalesce(func.sum(pm.c.lifetime_days), 0))
                                       .where(pm.c.purchase_count > 0)).one()
    session.execute(update(t).where(t.c.id == 1).values(purchasers=purchasers, lifetime_days=days))


def _lock(session: Session) -> None:
    # Two workers recomputing the same profile would collide on its row (delete + insert):
    # on PostgreSQL they take turns; SQLite serializes writers already.
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": METRICS_LOCK_ID})


def _empty(pid: str, now: datetime) -> dict:
    row = {c.name: None for c in ProfileMetrics.__table__.columns}
    row.update(profile_id=pid, computed_at=now, holdout_bucket=holdout_bucket(pid), purchase_count=0, monetary_total=Decimal("0.00"), complaints=0,
               complaints_unanswered=0, complaints_answered=0, complaints_resolved=0, complaint_rating_sum=0,
               complaint_rating_count=0, would_do_business_yes=0, would_do_business_answers=0)
    return row


def _purchases(row: dict, count: int, total, first: datetime, last: datetime, now: datetime, churn_days: int):
    total = _money(total or 0)
    lifetime = (last - first).days
    recency = max((now - last).days, 0)
    row.update(
        purchase_count=count, monetary_total=total, first_purchase_at=first, last_purchase_at=last,
        recency_days=recency, lifetime_days=lifetime, average_order_value=_money(total / count),
        # Purchases per year over the observed span; a span under a year counts as one year.
        purchase_frequency=round(count * 365 / max(lifetime, 365), 6),
        churned=recency >= churn_days,
    )


def _attributes(session: Session, keys: KeyStore, active: list[str], rows: dict) -> None:
    """Decrypt survey and complaint attributes of these profiles (one chunk)."""
    events = session.execute(
        select(Event.id, Event.profile_id, Event.type, Event.occurred_at, Event.attributes_ct, SourceRecord.key_id)
        .join(SourceRecord, SourceRecord.id == Event.record_id)
        .where(among(session, Event.profile_id, active), Event.type.in_(SURVEY_TYPES + (COMPLAINT,)))
        .order_by(Event.occurred_at, Event.id)).all()
    keys.preload([e.key_id for e in events])
    for e in events:
        if e.attributes_ct is None:
            continue
        try:
            attrs = crypto.decrypt_json(keys.get(e.key_id), e.attributes_ct, "events", e.id, "attributes")
        except crypto.DecryptionError:
            continue  # a shredded subject: nothing to count
        row = rows[e.profile_id]
        if e.type == COMPLAINT:
            _complaint(row, attrs, e.occurred_at)
            continue
        # In time order, so the last answer of each kind wins.
        for name, low, high in (("nps", 0, 10), ("csat", 1, 5), ("ces", 1, 5)):
            score = _int_in(attrs.get(name), low, high) if name in attrs else None
            if score is not None:
                row[f"{name}_score"] = score
    for row in rows.values():
        row["nps_class"] = nps_class(row["nps_score"])


def _complaint(row: dict, attrs: dict, at: datetime) -> None:
    row["complaints"] += 1
    status = str(attrs.get("status") or "").strip().casefold()
    if status == "nao_respondida":
        row["complaints_unanswered"] += 1
    elif status in ("respondida", "resolvida"):
        row["complaints_answered"] += 1
        if status == "resolvida":
            row["complaints_resolved"] += 1
    rating = _int_in(attrs.get("rating"), 0, 10) if "rating" in attrs else None
    if rating is not None:
        row["complaint_rating_sum"] += rating
        row["complaint_rating_count"] += 1
    again = _yes_no(attrs.get("would_do_business_again"))
    if again is not None:
        row["would_do_business_answers"] += 1
        row["would_do_business_yes"] += int(again)
    row["last_complaint_at"] = at


# -- base-wide pass ---------------------------------------------------------------------------

def refresh_scores(session: Session) -> None:
    """RFM quintiles (NTILE over the purchasing base) and LTV, in SQL; rows of
    profiles that were merged or erased are dropped."""
    pm = ProfileMetrics.__table__
    p = Profile.__table__
    _lock(session)
    session.execute(delete(pm).where(pm.c.profile_id.in_(select(p.c.id).where(p.c.status != "active"))))
    ranked = select(
        pm.c.profile_id,
        # Ties broken by profile id, so scores are deterministic.
        func.ntile(5).over(order_by=(pm.c.last_purchase_at, pm.c.profile_id)).label("r"),
        func.ntile(5).over(order_by=(pm.c.purchase_count, pm.c.profile_id)).label("f"),
        func.ntile(5).over(order_by=(pm.c.monetary_total, pm.c.profile_id)).label("m"),
    ).where(pm.c.purchase_count > 0).subquery()
    session.execute(update(pm).where(pm.c.profile_id == ranked.c.profile_id)
                    .values(r_score=ranked.c.r, f_score=ranked.c.f, m_score=ranked.c.m))
    session.execute(update(pm).where(pm.c.purchase_count == 0)
                    .values(r_score=None, f_score=None, m_score=None, ltv=None))
    _recount_totals(session)
    update_ltv(session)


def update_ltv(session: Session) -> None:
    """Every buyer's LTV with the base's current average lifetime (the
    base-wide pass; a recompute writes its rows' LTV with `ltv`)."""
    pm = ProfileMetrics.__table__
    lifetime_years = average_lifetime_years(session)
    session.execute(update(pm).where(pm.c.purchase_count > 0).values(
        ltv=cast(cast(pm.c.average_order_value, Float) * pm.c.purchase_frequency * lifetime_years, Numeric(14, 2))))


def average_lifetime_years(session: Session) -> float:
    """Average customer lifetime of the base, in years (365 days): the mean
    of lifetime_days over profiles with at least one purchase (from the
    running totals: one row, not a scan of the base)."""
    totals = session.get(MetricsTotals, 1, populate_existing=True)
    return totals.lifetime_days / totals.purchasers / 365 if totals and totals.purchasers else 0.0


# -- entry points -----------------------------------------------------------------------------

def refresh_profiles(runtime: Runtime, profile_ids: Iterable[str], churn_days: int | None = None) -> int:
    """Incremental recompute for touched profiles (rows of merged ones dropped), with
    their LTV. RFM quintiles rank the whole base, so they are left to the base-wide
    pass of `cdp metrics refresh` (seconds at 100k profiles: too much per ingest batch)."""
    ids = list(dict.fromkeys(i for i in profile_ids if i))
    if not ids:
        return 0
    written = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        with runtime.session() as session:
            written += recompute(session, runtime.keys(session), chunk, churn_days=churn_days)
    log.info("metrics refreshed profiles=%d", written)
    return written


def refresh_all(runtime: Runtime, batch_size: int = 1000, progress=None, churn_days: int | None = None,
                now: datetime | None = None) -> int:
    """Every active profile, in keyset batches (one transaction each), then the base-wide pass."""
    churn_days = churn_days or churn_days_setting()
    now = now or utcnow()
    after = ""
    written = 0
    while True:
        with runtime.session() as session:
            ids = list(session.scalars(select(Profile.id).where(Profile.status == "active", Profile.id > after)
                                       .order_by(Profile.id).limit(batch_size)))
            if not ids:
                break
            written += recompute(session, runtime.keys(session), ids, now=now, churn_days=churn_days)
        after = ids[-1]
        if progress:
            progress(len(ids))
    with runtime.session() as session:
        refresh_scores(session)
    return written


def count_active(runtime: Runtime) -> int:
    with runtime.session() as session:
        return session.scalar(select(func.count()).select_from(Profile).where(Profile.status == "active"))


# -- company indicators -----------------------------------------------------------------------

def _pct(part, whole) -> float | None:
    return round(100 * float(part) / float(whole), 2) if whole else None


def retention(session: Session, start: datetime, end: datetime, churn_days: int | None = None) -> dict:
    """Customers active at `start` (a purchase in the churn_days before it)
    and how many of them bought again in [start, end]."""
    churn_days = churn_days or churn_days_setting()
    e2 = Event.__table__.alias("later")
    active = (select(Event.profile_id).join(Profile, Profile.id == Event.profile_id)
              .where(Profile.status == "active", Event.type == PURCHASE,
                     Event.occurred_at >= start - timedelta(days=churn_days), Event.occurred_at < start)
              .distinct().subquery())
    base = session.scalar(select(func.count()).select_from(active))
    kept = session.scalar(select(func.count()).select_from(active).where(exists(
        select(e2.c.id).where(e2.c.profile_id == active.c.profile_id, e2.c.type == PURCHASE,
                              e2.c.occurred_at >= start, e2.c.occurred_at <= end))))
    return {"customers_at_start": base, "retained": kept, "retention_rate": _pct(kept, base),
            "churn_rate": _pct(base - kept, base)}


def company_metrics(session: Session, start: datetime | None = None, end: datetime | None = None,
                    churn_days: int | None = None) -> dict:
    """Company indicators from profile_metrics (and events for retention)."""
    pm = ProfileMetrics.__table__
    row = session.execute(select(
        func.count(pm.c.nps_score), func.sum(case((pm.c.nps_score >= 9, 1), else_=0)),
        func.sum(case((pm.c.nps_score <= 6, 1), else_=0)),
        func.count(pm.c.csat_score), func.sum(case((pm.c.csat_score >= 4, 1), else_=0)),
        func.avg(pm.c.ces_score),
        func.sum(pm.c.complaints), func.sum(pm.c.complaints_answered), func.sum(pm.c.complaints_resolved),
        func.sum(pm.c.complaint_rating_sum), func.sum(pm.c.complaint_rating_count),
        func.sum(pm.c.would_do_business_yes), func.sum(pm.c.would_do_business_answers),
        func.count().filter(pm.c.purchase_count > 0), func.count().filter(pm.c.churned.is_(True)),
    )).one()
    (nps_n, promoters, detractors, csat_n, satisfied, ces_avg, complaints, answered, resolved, rating_sum,
     rating_n, again_yes, again_n, customers, churned) = row
    out = {
        "nps": round(100 * (int(promoters or 0) - int(detractors or 0)) / nps_n, 2) if nps_n else None,
        "nps_respondents": nps_n,
        "csat": _pct(satisfied or 0, csat_n), "csat_respondents": csat_n,
        "ces": round(float(ces_avg), 2) if ces_avg is not None else None,
        "complaints": int(complaints or 0),
        "complaints_answered_pct": _pct(answered or 0, complaints or 0),
        "complaints_resolved_pct": _pct(resolved or 0, complaints or 0),
        "complaint_rating_avg": round(float(rating_sum) / rating_n, 2) if rating_n else None,
        "would_do_business_again_pct": _pct(again_yes or 0, again_n or 0),
        "customers": customers, "churned_customers": churned, "churned_pct": _pct(churned, customers),
        "average_lifetime_years": round(average_lifetime_years(session), 4),
    }
    if start is not None and end is not None:
        out["period"] = {"from": start.isoformat(), "to": end.isoformat(),
                         **retention(session, start, end, churn_days)}
    return out
