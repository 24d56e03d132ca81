"""Staff accounts: create, authenticate (service functions) and the
`cdp staff add` command."""
from __future__ import annotations

import sys

import click
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from cdp.console.models import ROLES, StaffUser
from cdp.models import utcnow
from cdp.store import Runtime

MIN_PASSWORD = 12
# A fixed hash to compare against when the e-mail is unknown, so both answers take as long.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


class StaffError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _email_hash(runtime: Runtime, email: str) -> bytes:
    return runtime.keyring.keyed_hash("staff-email", email.strip().lower())


def add_staff(runtime: Runtime, email: str, role: str, password: str) -> str:
    """Create (or reset the password and role of) a staff account; returns its id."""
    if "@" not in (email or "") or len(email) > 254:
        raise StaffError("email", "must be an e-mail address")
    if role not in ROLES:
        raise StaffError("role", f"must be one of {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD:
        raise StaffError("password", f"must have at least {MIN_PASSWORD} characters")
    digest = _email_hash(runtime, email)
    with runtime.session() as session:
        user = session.scalar(select(StaffUser).where(StaffUser.email_hash == digest))
        if user is None:
            user = StaffUser(email_hash=digest)
            session.add(user)
        user.role, user.active = role, True
        user.password_hash = generate_password_hash(password, method="scrypt")
        session.flush()
        return user.id


def authenticate(runtime: Runtime, email: str, password: str) -> dict | None:
    """{"id", "role"} for a right e-mail and password, None otherwise."""
    with runtime.session() as session:
        user = session.scalar(select(StaffUser).where(StaffUser.email_hash == _email_hash(runtime, email or "")))
        if user is None or not user.active:
            check_password_hash(_DUMMY_HASH, password or "")
            return None
        if not check_password_hash(user.password_hash, password or ""):
            return None
        user.last_login_at = utcnow()
        return {"id": user.id, "role": user.role}


def get_staff(runtime: Runtime, staff_id: str) -> dict | None:
    with runtime.session() as session:
        user = session.get(StaffUser, staff_id)
        if user is None or not user.active:
            return None
        return {"id": user.id, "role": user.role}


@click.group()
def staff():
    """DPO console staff accounts."""


@staff.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="dpo", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def staff_add(email, role, password_stdin):
    """Create a staff account (or reset its password and role)."""
    from cdp.cli import _runtime  # the same settings and keyring every command uses

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    runtime = _runtime()
    try:
        staff_id = add_staff(runtime, email, role, password)
    except StaffError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"staff user {staff_id} ({role})")
