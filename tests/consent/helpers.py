"""Consent test helpers: profiles, ledger events, the gate, and tampering
with the ledger the way a database administrator could (raw SQL, after
dropping the append-only triggers)."""
from __future__ import annotations

from sqlalchemy import select, text

from cdp.models import Profile, new_id, utcnow
from consent import ledger

NOTICE = "aviso-2026-01"


def new_profile(session, keys, status: str = "active", merged_into: str | None = None) -> str:
    key_id, _ = keys.create()
    session.flush()
    profile = Profile(id=new_id(), key_id=key_id, provenance={}, record_count=0, status=status,
                      merged_into=merged_into, created_at=utcnow())
    session.add(profile)
    session.flush()
    return profile.id


def grant(rt, pid, purpose="email_marketing", action="granted", notice=NOTICE, **kw):
    evidence = {"channel": "web_form", "notice_version": notice, "ip": "200.160.2.3",
                "user_agent": "Mozilla/5.0 (Teste)"}
    evidence.update(kw.pop("evidence", {}))
    with rt.session() as session:
        entry, _ = ledger.record(session, rt.keys(session), pid, purpose, action, method="api",
                                 collector="api:test", evidence=evidence, **kw)
        return entry.seq


def allowed(rt, pids, purpose="email_marketing") -> set[str]:
    with rt.session() as session:
        return ledger.allowed(session, pids, purpose)


def sql_allowed(rt, purpose="email_marketing") -> set[str]:
    with rt.session() as session:
        return set(session.scalars(select(Profile.id).where(ledger.allowed_clause(purpose))))


def drop_guard(rt) -> None:
    """What a DBA can do: remove the append-only triggers."""
    with rt.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER consent_ledger_append_only ON consent_ledger"))
        else:
            conn.execute(text("DROP TRIGGER consent_ledger_no_update"))
            conn.execute(text("DROP TRIGGER consent_ledger_no_delete"))


def raw(rt, sql: str, **params) -> None:
    with rt.engine.begin() as conn:
        conn.execute(text(sql), params)


def verify(rt, use_keyring: bool = True, checkpoint=None) -> dict:
    with rt.session() as session:
        return ledger.verify(session, rt.keyring if use_keyring else None, checkpoint)
