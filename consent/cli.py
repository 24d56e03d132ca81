"""`cdp purposes`, `cdp ledger` and `cdp consent` command groups."""
from __future__ import annotations

import json
import sys

import click


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _runtime():
    from cdp.cli import _runtime as runtime

    return runtime()


def _progress(total, desc, unit="entry"):
    from cdp.cli import _progress as progress

    return progress(total, desc, unit)


def _dump(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


# -- purposes ---------------------------------------------------------------------------------

@click.group()
def purposes():
    """Purposes of processing and their legal bases (LGPD Art. 7 / 11)."""


_PURPOSE_OPTIONS = [
    click.option("--legal-basis", help="consent, legitimate_interest, contract, legal_obligation, ..."),
    click.option("--sensitive/--not-sensitive", default=None, help="Sensitive data (Art. 11)."),
    click.option("--title-pt"), click.option("--title-en"),
    click.option("--description-pt"), click.option("--description-en"),
    click.option("--retention-days", type=int),
    click.option("--notice-version", help="Privacy notice text version this purpose is described in."),
    click.option("--recipient", "recipients", multiple=True, help="A named partner the data is shared with (repeat)."),
    click.option("--alias", "aliases", multiple=True, help="Another name sources use for it (repeat)."),
]


def _purpose_options(fn):
    for option in reversed(_PURPOSE_OPTIONS):
        fn = option(fn)
    return fn


def _values(opts: dict) -> dict:
    out = {k: v for k, v in opts.items() if v is not None and k not in ("recipients", "aliases")}
    for key in ("recipients", "aliases"):
        if opts.get(key):
            out[key] = list(opts[key])
    return out


@purposes.command("add")
@click.argument("name")
@_purpose_options
def purposes_add(name, **opts):
    """Declare a purpose (a legal basis is required)."""
    from consent.purposes import PurposeError, create_purpose, purpose_dict

    values = _values(opts)
    values.setdefault("sensitive", False)
    runtime = _runtime()
    with runtime.session() as session:
        try:
            purpose = create_purpose(session, {"name": name, **values})
        except PurposeError as exc:
            raise UserError(f"--{exc.field.replace('_', '-')}: {' '.join(exc.errors[exc.field])}") from None
        _dump(purpose_dict(session, purpose))


@purposes.command("update")
@click.argument("name")
@_purpose_options
@click.option("--active/--retired", default=None, help="A retired purpose allows nobody and takes no new grants.")
@click.option("--material", is_flag=True, help="Force a new version (older grants stop counting).")
def purposes_update(name, material, active, **opts):
    """Change a purpose; changing what it is makes a new version."""
    from consent.purposes import PurposeError, purpose_dict, update_purpose

    values = _values(opts)
    if active is not None:
        values["active"] = active
    if material:
        values["material"] = True
    if not values:
        raise UserError("nothing to change: give at least one option")
    runtime = _runtime()
    with runtime.session() as session:
        try:
            purpose, new_version = update_purpose(session, name, values)
        except LookupError:
            raise UserError(f"no purpose {name}") from None
        except PurposeError as exc:
            raise UserError(f"--{exc.field.replace('_', '-')}: {' '.join(exc.errors[exc.field])}") from None
        if new_version:
            click.echo(f"{name}: new version {purpose.version}; grants of older versions no longer count", err=True)
        _dump(purpose_dict(session, purpose))


@purposes.command("list")
@click.option("--json", "as_json", is_flag=True)
def purposes_list(as_json):
    from consent.purposes import list_purposes, purpose_dict

    runtime = _runtime()
    with runtime.session() as session:
        rows = [purpose_dict(session, p) for p in list_purposes(session)]
    if as_json:
        _dump(rows)
        return
    for p in rows:
        state = "active" if p["active"] else "retired"
        click.echo(f"{p['name']}\tv{p['version']}\t{p['legal_basis']}\t{p['requires']}\t{p['notice_version']}"
                   f"\t{p['retention_days']}d\t{state}\t{p['title_pt']}")


@purposes.command("seed")
def purposes_seed():
    """Add the default purposes that are missing (also done by `cdp init`)."""
    from consent.purposes import seed_defaults

    with _runtime().session() as session:
        click.echo(f"added {seed_defaults(session)} default purpose(s)")


# -- ledger -------------------------------------------------------------------------------------

@click.group()
def ledger():
    """The append-only consent ledger: verify, checkpoint, rebuild."""


@ledger.command("verify")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(dir_okay=False, exists=True),
              help="A signed checkpoint exported earlier: the chain up to it must match.")
def ledger_verify(checkpoint_file):
    """Check every entry's hash, link and MAC; exit 1 naming the first bad entry."""
    from sqlalchemy import func, select

    from consent import ledger as ledger_mod
    from consent.models import LedgerEntry
    from consent.signing import SignatureError

    checkpoint = None
    if checkpoint_file:
        try:
            with open(checkpoint_file, encoding="utf-8") as fh:
                checkpoint = json.load(fh)
        except (OSError, ValueError):
            raise UserError(f"--checkpoint: {checkpoint_file} is not a readable JSON checkpoint") from None
    runtime = _runtime()
    with runtime.session() as session:
        total = session.scalar(select(func.count()).select_from(LedgerEntry))
        with _progress(total, "verify") as bar:
            try:
                result = ledger_mod.verify(session, runtime.keyring, checkpoint, progress=bar.update)
            except SignatureError as exc:
                raise UserError(f"--checkpoint: {exc}") from None
    if result["ok"]:
        extra = f"; matches checkpoint at {result['checkpoint']['seq']}" if result["checkpoint"] else ""
        click.echo(f"ok: {result['entries']} entries, head {result['head_seq']} {result['head_hash']}{extra}")
        return
    click.echo(f"FAILED at entry {result['first_bad_seq']}: {result['reason']}: {result['detail']}", err=True)
    sys.exit(1)


@ledger.command("checkpoint")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Where to write it (JSON).")
def ledger_checkpoint(out):
    """Export a signed checkpoint of the verified head (keep it outside the database)."""
    from consent import ledger as ledger_mod

    runtime = _runtime()
    with runtime.session() as session:
        try:
            cp = ledger_mod.checkpoint(session, runtime.keyring)
        except ledger_mod.LedgerError as exc:
            raise UserError(str(exc)) from None
    try:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(cp, fh, indent=2)
            fh.write("\n")
    except OSError as exc:
        raise UserError(f"--out: cannot write {out} ({exc.strerror})") from None
    click.echo(f"checkpoint at entry {cp['seq']} ({cp['head_hash']}) written to {out}")


@ledger.command("rebuild")
def ledger_rebuild():
    """Recompute the current consent state of every subject from the ledger."""
    from sqlalchemy import func, select

    from consent import ledger as ledger_mod
    from consent.models import LedgerEntry

    runtime = _runtime()
    with runtime.session() as session:
        total = session.scalar(select(func.count()).select_from(LedgerEntry))
        with _progress(total, "rebuild") as bar:
            n = ledger_mod.rebuild_states(session, progress=bar.update)
    click.echo(f"rebuilt {n} subject × purpose state(s)")


# -- consent ---------------------------------------------------------------------------------------

@click.group()
def consent():
    """Consent of one subject: history, receipt, backfill from records."""


def _subject_or_fail(session, profile_id):
    from consent.subjects import survivor

    subject = survivor(session, profile_id)
    if subject is None or subject.status != "active":
        raise UserError(f"no profile {profile_id}")
    return subject


@consent.command("receipt")
@click.argument("profile_id")
@click.option("--lang", type=click.Choice(["pt-BR", "en"]), default="pt-BR", show_default=True)
def consent_receipt(profile_id, lang):
    """A signed consent receipt (Kantara CR fields) for a profile."""
    from consent import ledger as ledger_mod
    from consent.receipts import build_receipt

    runtime = _runtime()
    with runtime.session() as session:
        try:
            _dump(build_receipt(session, runtime.keyring, runtime.settings, profile_id, lang))
        except ledger_mod.UnknownSubject:
            raise UserError(f"no profile {profile_id}") from None


@consent.command("history")
@click.argument("profile_id")
@click.option("--purpose")
def consent_history(profile_id, purpose):
    """Every consent event of a profile with decrypted evidence (staff only)."""
    from consent import ledger as ledger_mod

    runtime = _runtime()
    with runtime.session() as session:
        subject = _subject_or_fail(session, profile_id)
        _dump({"profile_id": subject.id, "states": ledger_mod.states(session, subject.id),
               "history": ledger_mod.history(session, runtime.keys(session), subject.id, purpose)})


@consent.command("backfill")
def consent_backfill():
    """Append consent signals of already-resolved records (idempotent)."""
    from sqlalchemy import func, select

    from cdp.models import SourceRecord
    from consent import ledger as ledger_mod

    runtime = _runtime()
    with runtime.session() as session:
        total = session.scalar(select(func.count()).select_from(SourceRecord).where(SourceRecord.profile_id.is_not(None)))
        with _progress(total, "backfill", "rec") as bar:
            added = ledger_mod.backfill(session, runtime.keys(session), progress=bar.update)
    click.echo(f"appended {added} consent event(s)")


COMMANDS = (purposes, ledger, consent)
