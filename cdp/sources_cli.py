"""`cdp sources ...` (configured sources) and `cdp plugins new` (connector scaffold)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cdp.connectors import ConfigInvalid, secret_fields

# cdp.cli imports this module at its end: its helpers are looked up when a command runs.


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _runtime():
    from cdp.cli import _runtime as make

    return make()


def _progress(total, desc: str, unit: str = "rec"):
    from cdp.cli import _progress as make

    return make(total, desc, unit)


@click.group()
def sources():
    """Configured sources: connectors that pull records (and receive webhooks)."""


def _parse_pairs(pairs: tuple[str, ...]) -> dict:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--config {pair.split('=')[0]!r}: expected KEY=VALUE")
        value = value.strip()
        if value[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except ValueError:
                raise UserError(f"--config {key}: value starts like JSON but is not valid JSON") from None
        config[key.strip()] = value
    return config


def _read_config_file(path: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--config-file: cannot read {path} ({type(exc).__name__})") from None
    except yaml.YAMLError:
        raise UserError(f"--config-file: {path} is not valid YAML or JSON") from None
    if not isinstance(data, dict):
        raise UserError(f"--config-file: {path} must hold a mapping of KEY: VALUE")
    return data


@sources.command("add")
@click.argument("name")
@click.option("--type", "type_name", help="Connector type (see `cdp plugins list`).")
@click.option("--config", "pairs", multiple=True, metavar="KEY=VALUE", help="A configuration value (repeatable).")
@click.option("--config-file", type=click.Path(dir_okay=False), help="YAML or JSON file with the configuration "
              "(prefer it for secrets: command lines end up in shell history).")
@click.option("--trust", type=click.IntRange(0, 100), help="Survivorship trust of this source (default 50).")
@click.option("--update", is_flag=True, help="Change an existing source (given keys replace stored ones).")
def sources_add(name, type_name, pairs, config_file, trust, update):
    """Configure a source: validated by the connector's schema; secrets stored encrypted."""
    from cdp.plugins import source_type
    from cdp.sources import add_source

    config = _read_config_file(config_file) if config_file else {}
    config.update(_parse_pairs(pairs))
    if type_name and not update and sys.stdin.isatty():
        # Ask for missing secrets rather than have them typed on the command line.
        cls = source_type(type_name)
        schema = cls.config_schema()
        for field_name in sorted(secret_fields(cls.config_schema)):
            if field_name not in config and schema.fields[field_name].required:
                config[field_name] = click.prompt(field_name, hide_input=True)
    runtime = _runtime()
    try:
        source = add_source(runtime, name, type_name, config, trust=trust, update=update)
    except ConfigInvalid as exc:
        raise UserError(str(exc)) from None
    click.echo(f"source {name} ({source.plugin}) {'updated' if update else 'added'}")


@sources.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON (non-secret configuration included).")
def sources_list(as_json):
    """Sources, their type, schedule and last sync (never secrets)."""
    from cdp.sources import describe_source, list_sources

    runtime = _runtime()
    rows = [describe_source(runtime, s) for s in list_sources(runtime)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    click.echo("NAME\tTYPE\tSCHEDULE\tLAST SYNC\tSTATUS")
    for row in rows:
        schedule = row["schedule"] or {}
        when = f"every {schedule['every_minutes']}m" if "every_minutes" in schedule else schedule.get("cron", "-")
        click.echo(f"{row['name']}\t{row['type']}\t{when}\t{row['last_sync_at'] or '-'}\t"
                   f"{row['last_sync_status'] or '-'}")


@sources.command("check")
@click.argument("name")
def sources_check(name):
    """Check the source can be read with its configuration."""
    from cdp.sources import check_source

    connector = check_source(_runtime(), name)
    click.echo(f"ok: {name} ({connector.name}) is reachable and accepts its credentials")


@sources.command("sync")
@click.argument("name")
@click.option("--stream", help="Only this stream.")
@click.option("--full", is_flag=True, help="Read from the beginning (ignore saved cursors).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--here", is_flag=True, help="Run in this process even when REDIS_URL is set.")
def sources_sync(name, stream, full, batch_size, here):
    """Pull new records from a source (an rq job when REDIS_URL is set)."""
    from cdp.sources import enqueue_sync, sync_source

    runtime = _runtime()
    if runtime.settings.redis_url and not here:
        job_id = enqueue_sync(runtime, name, stream, full)
        click.echo(f"queued sync of {name} (job {job_id}); `cdp worker` runs it")
        return
    with _progress(None, f"sync {name}") as bar:
        result = sync_source(runtime, name, stream=stream, full=full, batch_size=batch_size, progress=bar.update)
    click.echo(json.dumps({"run": result.run_id, "batches": result.batches, **result.counts}))


@sources.command("schedule")
@click.argument("name")
@click.option("--every", help="Interval: minutes, or e.g. 30m, 2h, 1d.")
@click.option("--cron", help='Cron expression in UTC, e.g. "0 3 * * *".')
@click.option("--off", is_flag=True, help="Stop syncing this source on a schedule.")
def sources_schedule(name, every, cron, off):
    """Sync a source on a schedule (rq's scheduler with REDIS_URL; else `cdp sources run-due`)."""
    from cdp.sources import parse_every, set_schedule

    if sum(bool(x) for x in (every, cron, off)) != 1:
        raise UserError("give one of --every, --cron or --off")
    runtime = _runtime()
    schedule = set_schedule(runtime, name, every_minutes=parse_every(every) if every else None, cron=cron)
    if schedule is None:
        click.echo(f"{name}: no schedule")
    else:
        how = "rq scheduler (`cdp worker`)" if runtime.settings.redis_url else "`cdp sources run-due` (system cron)"
        click.echo(f"{name}: {json.dumps(schedule)} via {how}")


@sources.command("run-due")
def sources_run_due():
    """Sync every scheduled source that is due, in this process (without Redis)."""
    from cdp.sources import SyncBusy, due_sources, sync_source

    runtime = _runtime()
    failed = 0
    for name in due_sources(runtime):
        try:
            result = sync_source(runtime, name, trigger="schedule")
            click.echo(json.dumps({"source": name, "run": result.run_id, **result.counts}))
        except SyncBusy:
            click.echo(f"{name}: a sync is already running", err=True)
        except Exception as exc:  # noqa: BLE001 - one failing source must not stop the others
            from cdp.sources import error_text

            failed += 1
            click.echo(f"{name}: failed: {error_text(exc)}", err=True)
    if failed:
        raise UserError(f"{failed} scheduled sync(s) failed")


@sources.command("runs")
@click.argument("name")
@click.option("--limit", default=10, show_default=True)
def sources_runs(name, limit):
    """Sync history of a source."""
    from cdp.sources import sync_runs

    for run in sync_runs(_runtime(), name, limit):
        counts = " ".join(f"{k}={v}" for k, v in run.counts().items())
        click.echo(f"{run.id}\t{run.trigger}\t{run.started_at.isoformat()}\t{run.status}\t{counts}\t{run.error or ''}")


# -- plugins new -----------------------------------------------------------------------------


@click.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where to create the package folder.")
def plugin_new(name, directory):
    """Create a pip-installable connector package that passes its own tests."""
    from cdp.scaffold import ScaffoldError, create

    try:
        path = create(name, Path(directory))
    except ScaffoldError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"created {path}")
    click.echo(f"next: pip install -e {path} && pytest {path}")
