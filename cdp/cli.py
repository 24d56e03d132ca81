"""The `cdp` command. Errors a user can fix print one line and exit 2."""
from __future__ import annotations

import csv
import json
import logging
import sys

import click
from tqdm import tqdm

from sqlalchemy.exc import OperationalError, ProgrammingError

from cdp.config import ConfigError, Settings
from cdp.connectors import ConnectorError
from cdp.crypto import DecryptionError, Keyring


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _settings() -> Settings:
    return Settings.from_env()


def _runtime():
    from cdp.store import Runtime

    settings = _settings()
    return Runtime(settings, Keyring.load(settings))


def _progress(total: int | None, desc: str, unit: str = "rec"):
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.3,
                disable=None if sys.stderr.isatty() else False)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (never personal data).")
def cli(verbose: bool):
    """Privacy-first customer data platform."""
    from cdp.store import tune_gc

    tune_gc()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


# -- set-up -----------------------------------------------------------------------

@cli.command()
def init():
    """Create key material (if absent) and bring the database schema up to date."""
    from cdp import migrate

    settings = _settings()
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    existed = settings.keyring_json is not None or settings.keys_file.exists()
    ring = Keyring.load_or_create(settings)
    migrate.upgrade(settings)
    where = "CDP_KEYRING" if settings.keyring_json else settings.keys_file
    click.echo(f"keys: {'using' if existed else 'created'} {where}")
    click.echo(f"database: {_redact(settings.database_url)} at {migrate.current(settings)}")
    from cdp.store import Runtime
    from consent.purposes import seed_defaults

    with Runtime(settings, ring).session() as session:
        click.echo(f"purposes: {seed_defaults(session)} default(s) added")


@cli.group()
def db():
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision):
    """Apply migrations up to REVISION (default: head)."""
    from cdp import migrate

    settings = _settings()
    migrate.upgrade(settings, revision)
    click.echo(f"database at {migrate.current(settings)}")


@db.command("current")
def db_current():
    from cdp import migrate

    click.echo(migrate.current(_settings()) or "empty")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- ingestion ---------------------------------------------------------------------

@cli.group()
def ingest():
    """Load records from files (ERP exports, spreadsheets)."""


@ingest.command("csv")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--mapping", "mapping", required=True, type=click.Path(dir_okay=False), help="YAML mapping file.")
@click.option("--batch-size", default=500, show_default=True)
@click.option("--no-resolve", is_flag=True, help="Store only; resolve later (`cdp resolve`, or `cdp identity rebuild` for a backfill).")
def ingest_csv(path, mapping, batch_size, no_resolve):
    """Ingest a CSV file through a column mapping."""
    _ingest_file({"path": path, "mapping": mapping}, batch_size, resolve=not no_resolve)


@ingest.command("jsonl")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--mapping", type=click.Path(dir_okay=False), help="YAML mapping (omit for the common record model).")
@click.option("--source", help="Source name when records do not carry one.")
@click.option("--batch-size", default=500, show_default=True)
@click.option("--no-resolve", is_flag=True, help="Store only; resolve later (`cdp resolve`, or `cdp identity rebuild` for a backfill).")
def ingest_jsonl(path, mapping, source, batch_size, no_resolve):
    """Ingest JSON lines (the common record model, or mapped)."""
    config = {"path": path}
    if mapping:
        config["mapping"] = mapping
    if source:
        config["source"] = source
    _ingest_file(config, batch_size, resolve=not no_resolve)


def _ingest_file(config: dict, batch_size: int, resolve: bool = True) -> None:
    from plugins.file_source import FileSource

    runtime = _runtime()
    connector = FileSource(config)
    connector.check()
    totals = ingest_connector(runtime, connector, batch_size, resolve=resolve)
    click.echo(json.dumps(totals))
    if totals["rejected"]:
        click.echo(f"{totals['rejected']} record(s) rejected; see the errors above", err=True)


def ingest_connector(runtime, connector, batch_size: int = 500, bar=None, quiet: bool = False,
                     resolve: bool = True) -> dict:
    """Read a connector to the end, storing and resolving batch by batch."""
    from cdp.ingest import ingest_batch

    totals = {"accepted": 0, "updated": 0, "duplicate": 0, "rejected": 0}
    own_bar = bar is None
    bar = bar or _progress(connector.count() if hasattr(connector, "count") else None, "ingest")
    try:
        for batch in connector.read(batch_size=batch_size):
            source = getattr(connector, "source_name", None)
            groups: dict[str, list] = {}
            for rec in batch.records:
                groups.setdefault(source or rec.get("source") or "", []).append(rec)
            for name, records in groups.items():
                if not name:
                    totals["rejected"] += len(records)
                    if not quiet:
                        click.echo("rejected: source: records carry no source; pass --source", err=True)
                    continue
                summary = ingest_batch(runtime, name, records, plugin=connector.name, resolve=resolve,
                                       custom_kinds=getattr(connector, "custom_kinds", None),
                                       trust=getattr(connector, "trust", None))
                for k, v in summary.counts().items():
                    totals[k] = totals.get(k, 0) + v  # "suppressed" appears only when it happens
                if not quiet:
                    for r in summary.results:
                        if r.status == "rejected":
                            click.echo(f"rejected: record {r.index + 1} of batch: {_fmt_errors(r.errors)}", err=True)
            for where, errors in batch.errors:
                totals["rejected"] += 1
                if not quiet:
                    click.echo(f"rejected: {where}: {_fmt_errors(errors)}", err=True)
            bar.update(len(batch.records) + len(batch.errors))
    finally:
        if own_bar:
            bar.close()
    return totals


def _fmt_errors(errors: dict) -> str:
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())


@cli.command()
def resolve():
    """Resolve records still pending (e.g. after a crash or with no worker)."""
    from identity.resolve import pending_record_ids, resolve_records

    runtime = _runtime()
    ids = pending_record_ids(runtime)
    with _progress(len(ids), "resolve") as bar:
        decisions = resolve_records(runtime, ids, progress=bar.update)
    click.echo(f"resolved {len(decisions)} record(s)")


@cli.command()
@click.option("--output", "-o", type=click.File("w"), default="-", help="CSV file (default: stdout).")
def links(output):
    """Print source,external_id,profile_id for every source record (CSV)."""
    from cdp.links import iter_links

    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(["source", "external_id", "profile_id"])
    for source, external_id, profile_id in iter_links(_runtime()):
        writer.writerow([source, external_id, profile_id or ""])


# -- profiles -------------------------------------------------------------------------

@cli.group()
def profiles():
    """Inspect, split and un-merge profiles."""


@profiles.command("show")
@click.argument("profile_id")
def profiles_show(profile_id):
    from cdp.models import Profile
    from cdp.profiles import merge_history, profile_view

    runtime = _runtime()
    with runtime.session() as session:
        profile = session.get(Profile, profile_id)
        if profile is None:
            raise UserError(f"no profile {profile_id}")
        view = profile_view(session, runtime.keys(session), profile)
        view["merges"] = merge_history(session, profile_id)
    click.echo(json.dumps(view, indent=2, ensure_ascii=False))


@profiles.command("split")
@click.argument("profile_id")
@click.option("--records", required=True, help="Comma-separated record ids to move to a new profile.")
def profiles_split(profile_id, records):
    """Move records out of a profile into a new one (never re-merged automatically)."""
    from identity.resolve import Resolver

    runtime = _runtime()
    with runtime.session() as session:
        resolver = Resolver(session, runtime.keys(session), runtime.settings)
        try:
            new = resolver.split(profile_id, [r.strip() for r in records.split(",") if r.strip()], actor="cli")
        except (LookupError, ValueError) as exc:
            raise UserError(str(exc)) from None
        click.echo(new.id)


@profiles.command("undo-merge")
@click.argument("merge_id", type=int)
def profiles_undo_merge(merge_id):
    """Undo a merge (see `cdp profiles show` for merge ids)."""
    from identity.resolve import Resolver

    runtime = _runtime()
    with runtime.session() as session:
        resolver = Resolver(session, runtime.keys(session), runtime.settings)
        try:
            restored = resolver.undo_merge(merge_id, actor="cli")
        except (LookupError, ValueError) as exc:
            raise UserError(str(exc)) from None
        click.echo(restored.id)


# -- keys -------------------------------------------------------------------------------

@cli.group()
def keys():
    """Key-encryption keys: rotate and retire."""


@keys.command("rotate")
@click.option("--batch-size", default=1000, show_default=True)
def keys_rotate(batch_size):
    """Add a new KEK and re-wrap every data key under it (data is not decrypted)."""
    from sqlalchemy import func, select

    from cdp.models import DataKey
    from cdp.store import Runtime, rotate_keys

    settings = _settings()
    if settings.keyring_json:
        raise UserError("keys come from CDP_KEYRING; rotate with a keys file (CDP_KEYS_FILE) instead")
    ring = Keyring.load(settings)
    new_id = ring.add_kek()
    ring.save(settings.keys_file)  # saved first: a crash mid-way leaves both KEKs usable
    runtime = Runtime(settings, ring)
    with runtime.session() as session:
        total = session.scalar(select(func.count()).select_from(DataKey).where(DataKey.wrapped.is_not(None)))
    with _progress(total, "re-wrap", "key") as bar:
        done = rotate_keys(runtime, batch_size, progress=bar.update)
    click.echo(f"active KEK {new_id}; re-wrapped {done} data key(s). Run `cdp keys retire` to drop old KEKs.")


@keys.command("retire")
def keys_retire():
    """Remove KEKs that no data key uses any more."""
    from cdp.store import Runtime, keks_in_use

    settings = _settings()
    ring = Keyring.load(settings)
    used = keks_in_use(Runtime(settings, ring))
    removable = [k for k in ring.keks if k not in used and k != ring.active_kek_id]
    for k in removable:
        del ring.keks[k]
    ring.save(settings.keys_file)
    click.echo(f"retired {len(removable)} KEK(s); {len(ring.keks)} left")


# -- API keys -----------------------------------------------------------------------------

@cli.group()
def apikey():
    """API keys for downstream tools and integrators."""


@apikey.command("create")
@click.option("--name", required=True)
@click.option("--scopes", required=True, help="Comma-separated scopes, e.g. ingest, profiles:read, segments:read, portfolios:read, admin.")
def apikey_create(name, scopes):
    from cdp.auth import create_api_key

    runtime = _runtime()
    with runtime.session() as session:
        try:
            key, token = create_api_key(session, name, [s.strip() for s in scopes.split(",") if s.strip()])
        except ValueError as exc:
            raise UserError(f"--scopes: {exc}") from None
    click.echo(token)
    click.echo("store it now: it is not shown again", err=True)


@apikey.command("list")
def apikey_list():
    from sqlalchemy import select

    from cdp.models import ApiKey

    runtime = _runtime()
    with runtime.session() as session:
        for k in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = "revoked" if k.revoked_at else "active"
            click.echo(f"{k.prefix}\t{k.name}\t{','.join(k.scopes)}\t{state}")


@apikey.command("revoke")
@click.argument("prefix")
def apikey_revoke(prefix):
    from sqlalchemy import select

    from cdp.models import ApiKey, utcnow

    runtime = _runtime()
    with runtime.session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if key is None:
            raise UserError(f"no API key with prefix {prefix}")
        key.revoked_at = utcnow()
    click.echo(f"revoked {prefix}")


# -- plugins, worker, server ---------------------------------------------------------------

@cli.group()
def plugins():
    """Connector plugins: the installed ones, and new connector packages."""


@plugins.command("list")
def plugins_list():
    """Each plugin: name, distribution and version, hooks implemented, types provided (and problems)."""
    from cdp.hookspecs import HOOKSPEC_VERSION
    from cdp.plugins import describe, destination_types, source_types

    for p in describe():
        types = ",".join(p["source_types"] + p["destination_types"]) or "-"
        line = f"{p['name']}\t{p['distribution']} {p['version']}\t{','.join(p['hooks']) or '-'}\t{types}"
        click.echo(line + (f"\tPROBLEM: {'; '.join(p['problems'])}" if p["problems"] else ""))
    click.echo(f"source types: {', '.join(sorted(source_types()))}")
    click.echo(f"destination types: {', '.join(sorted(destination_types())) or '-'}")
    click.echo(f"hookspec version: {HOOKSPEC_VERSION}")


@cli.command()
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--fork/--no-fork", default=True, show_default=True,
              help="Run each job in a forked process (isolation) or in the worker itself (warm caches, faster).")
def worker(burst, fork):
    """Run an rq worker (needs REDIS_URL)."""
    from cdp.jobs import run_worker

    run_worker(_runtime(), burst=burst, fork=fork)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(host, port):
    """Serve the API (for production, use a WSGI server on wsgi:app)."""
    _serve(host, port)


def _serve(host: str, port: int) -> None:
    from werkzeug.serving import WSGIRequestHandler, run_simple

    from cdp import create_app

    class QuerylessLog(WSGIRequestHandler):
        # Lookups carry identifiers in the query string: keep them out of the access log.
        def log_request(self, code="-", size="-"):
            self.log("info", '"%s %s" %s %s', self.command, self.path.split("?", 1)[0], code, size)

    run_simple(host, port, create_app(), threaded=True, request_handler=QuerylessLog)


@cli.command()
@click.option("--people", default=1000, show_default=True, help="How many people to generate.")
@click.option("--seed", default=42, show_default=True)
@click.option("--no-serve", is_flag=True, help="Do everything but serve; exit when done.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def demo(people, seed, no_serve, host, port):
    """Generate Brazilian demo data, ingest it, resolve identities, then serve the API."""
    from cdp.demo.run import run_demo

    summary = run_demo(_settings(), people=people, seed=seed)
    for line in summary.lines():
        click.echo(line)
    if no_serve:
        return
    base = f"http://{host}:{port}"
    click.echo(f"\nAPI:      {base}/api/v1/")
    click.echo(f"Docs:     {base}/docs  (OpenAPI: {base}/openapi.json)")
    click.echo(f"API key:  {summary.api_key}")
    click.echo(f"Console:  {base}/console/  (DPO: {summary.console_login[0]} / {summary.console_login[1]})")
    click.echo(f"Try:      curl -H 'Authorization: Bearer {summary.api_key}' {base}/api/v1/profiles/{summary.sample_profile}")
    click.echo("Ctrl-C stops the server.")
    _serve(host, port)


from consent.cli import COMMANDS as _consent_commands  # noqa: E402 - purposes, ledger, consent

for _command in _consent_commands:
    cli.add_command(_command)

from cdp.sources_cli import plugin_new, sources  # noqa: E402 - configured sources, connector scaffold

cli.add_command(sources)
plugins.add_command(plugin_new)
cli.add_command(plugins, "plugin")  # `cdp plugin new NAME` reads naturally too

from consent.dsr.cli import dsr as _dsr, incidents as _incidents  # noqa: E402 - data-subject requests, incidents

cli.add_command(_dsr)
cli.add_command(_incidents)

from cdp.console.staff import staff as _staff  # noqa: E402 - DPO console accounts

cli.add_command(_staff)

from identity.cli import identity as _identity  # noqa: E402 - train, evaluate, rebuild, review, explain

cli.add_command(_identity)

from activation.cli import metrics as _metrics, segments as _segments  # noqa: E402 - docs/metrics.md, docs/segments.md

cli.add_command(_metrics)
cli.add_command(_segments)

from activation.portfolio_cli import portfolios as _portfolios  # noqa: E402 - docs/segments.md#portfolios

cli.add_command(_portfolios)

from activation.activations_cli import activations as _activations, destinations as _destinations  # noqa: E402

for _group in (_destinations, _activations):
    cli.add_command(_group)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigError, ConnectorError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except DecryptionError as exc:
        click.echo(f"error: {exc} (is this the right keyring?)", err=True)
        sys.exit(2)
    except (OperationalError, ProgrammingError) as exc:
        reason = type(getattr(exc, "orig", exc)).__name__
        click.echo(f"error: database not reachable or not initialised ({reason}): check DATABASE_URL and run `cdp init`",
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
