"""`cdp destinations ...` and `cdp activations ...` (docs/activation.md)."""
from __future__ import annotations

import json
import sys

import click

from activation.errors import user_error
from cdp.sources_cli import UserError, _parse_pairs, _progress, _read_config_file, _runtime


@click.group()
def destinations():
    """Configured destinations (webhook, e-mail list, … see `cdp plugins list`)."""


@destinations.command("add")
@click.argument("name")
@click.option("--type", "type_name", required=True, help="Destination type (see `cdp plugins list`).")
@click.option("--config", "pairs", multiple=True, metavar="KEY=VALUE", help="A configuration value (repeatable).")
@click.option("--config-file", type=click.Path(dir_okay=False), help="YAML or JSON file with the configuration "
              "(prefer it for secrets: command lines end up in shell history).")
def destinations_add(name, type_name, pairs, config_file):
    """Configure a destination: validated by the connector's schema; secrets stored encrypted."""
    from activation.destinations import ActivationError, add_destination
    from cdp.connectors import ConnectorError, secret_fields
    from cdp.plugins import destination_type

    config = _read_config_file(config_file) if config_file else {}
    config.update(_parse_pairs(pairs))
    if sys.stdin.isatty():
        try:  # ask for missing secrets rather than have them typed on the command line
            cls = destination_type(type_name)
            schema = cls.config_schema()
            for field_name in sorted(secret_fields(cls.config_schema)):
                if field_name not in config and schema.fields[field_name].required:
                    config[field_name] = click.prompt(field_name, hide_input=True)
        except ConnectorError:
            pass  # add_destination names the unknown type
    runtime = _runtime()
    try:
        with runtime.session() as session:
            dest = add_destination(session, runtime.keys(session), name, type_name, config)
            click.echo(f"destination {dest.name} ({dest.type}) added, id {dest.id}")
    except ActivationError as exc:
        raise user_error(exc) from None


@destinations.command("list")
def destinations_list():
    """Destinations with their plain configuration and the names of the secrets set (never values)."""
    from activation.destinations import destination_dict, list_destinations

    runtime = _runtime()
    with runtime.session() as session:
        keys = runtime.keys(session)
        click.echo(json.dumps([destination_dict(session, keys, d) for d in list_destinations(session)], indent=2,
                              ensure_ascii=False))


@click.group()
def activations():
    """Activations: a segment kept in step with a destination, through the consent gate."""


@activations.command("add")
@click.argument("name")
@click.option("--segment", required=True, help="Segment id or name.")
@click.option("--destination", required=True, help="Destination id or name.")
@click.option("--purpose", required=True, help="Consent purpose every subject sent must allow.")
@click.option("--fields", "fields_", required=True, help="Comma-separated fields to send (profile_id always).")
@click.option("--holdout", "holdout_pct", default=0, show_default=True, type=click.IntRange(0, 50),
              help="% of members kept out as this activation's control group.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--every", help="Schedule: minutes, or e.g. 30m, 2h, 1d.")
@click.option("--cron", help='Schedule: cron expression in UTC, e.g. "0 3 * * *".')
def activations_add(name, segment, destination, purpose, fields_, holdout_pct, batch_size, every, cron):
    """Activate a segment to a destination."""
    from activation.destinations import ActivationError
    from activation.runs import activation_dict, create_activation
    from cdp.connectors import ConnectorError
    from cdp.sources import parse_every

    if every and cron:
        raise UserError("--every and --cron: choose one")
    try:
        schedule = {"every_minutes": parse_every(every)} if every else {"cron": cron} if cron else None
    except ConnectorError as exc:
        raise UserError(str(exc)) from None
    runtime = _runtime()
    try:
        with runtime.session() as session:
            act = create_activation(session, name, segment, destination, purpose,
                                    [f.strip() for f in fields_.split(",") if f.strip()], holdout_pct, batch_size,
                                    schedule, actor="cli")
    except ActivationError as exc:
        raise user_error(exc) from None
    _arm_if_queued(runtime, act.id)
    with runtime.session() as session:
        click.echo(json.dumps(activation_dict(session, session.get(type(act), act.id)), indent=2))


def _arm_if_queued(runtime, activation_id: int) -> None:
    from activation.runs import arm

    if runtime.settings.redis_url:
        arm(runtime, activation_id)


@activations.command("list")
def activations_list():
    """Activations and how many subjects each destination has."""
    from sqlalchemy import select

    from activation.run_models import Activation
    from activation.runs import activation_dict

    runtime = _runtime()
    with runtime.session() as session:
        click.echo(json.dumps([activation_dict(session, a) for a in session.scalars(
            select(Activation).order_by(Activation.id))], indent=2))


@activations.command("run")
@click.argument("activation")
@click.option("--here", is_flag=True, help="Run in this process even when REDIS_URL is set.")
def activations_run(activation, here):
    """Send what changed since the last run (an rq job when REDIS_URL is set)."""
    from activation.destinations import ActivationError
    from activation.runs import find_activation, submit_run

    runtime = _runtime()
    try:
        with runtime.session() as session:
            activation = find_activation(session, activation).name  # before the progress bar shows
        if runtime.settings.redis_url and not here:
            out = submit_run(runtime, activation)
            click.echo(f"queued activation run {out['run_id']} (job {out['job_id']}); `cdp worker` runs it")
            return
        with _progress(None, f"activation {activation}", unit="subject") as bar:
            out = submit_run(runtime, activation, progress=bar.update, here=True)
    except ActivationError as exc:
        raise user_error(exc) from None
    click.echo(json.dumps(out, indent=2))
    if out["status"] == "failed":
        sys.exit(1)  # some delivery is in the failure registry (`cdp activations failures`)


@activations.command("pause")
@click.argument("activation")
def activations_pause(activation):
    """Stop adding subjects (runs still send removals: revocations and segment exits)."""
    _set_active(activation, False)


@activations.command("resume")
@click.argument("activation")
def activations_resume(activation):
    """Add subjects again from the next run."""
    _set_active(activation, True)


def _set_active(activation: str, active: bool) -> None:
    from activation.destinations import ActivationError
    from activation.runs import set_active

    try:
        out = set_active(_runtime(), activation, active)
    except ActivationError as exc:
        raise user_error(exc) from None
    click.echo(json.dumps(out, indent=2))


@activations.command("run-due")
def activations_run_due():
    """Run every scheduled activation that is due (for the system cron when REDIS_URL is not set)."""
    from activation.runs import due_activations, submit_run

    runtime = _runtime()
    out = []
    for activation_id in due_activations(runtime):
        run = submit_run(runtime, activation_id, trigger="schedule")
        out.append({"activation_id": activation_id, "run_id": run.get("run_id", run.get("id")),
                    "status": run["status"]})
    click.echo(json.dumps(out, indent=2))


@activations.command("runs")
@click.argument("activation")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
def activations_runs(activation, limit):
    """Runs of an activation, newest first, with their counts."""
    from activation.destinations import ActivationError
    from activation.runs import find_activation, list_runs

    runtime = _runtime()
    with runtime.session() as session:
        try:
            act = find_activation(session, activation)
        except ActivationError as exc:
            raise user_error(exc) from None
        click.echo(json.dumps(list_runs(session, act.id, limit), indent=2))


@activations.command("failures")
@click.option("--activation", help="Only this activation (id or name).")
def activations_failures(activation):
    """The failure registry: deliveries that failed after retries, with the reason."""
    from activation.destinations import ActivationError
    from activation.runs import failures, find_activation

    runtime = _runtime()
    with runtime.session() as session:
        try:
            act_id = find_activation(session, activation).id if activation else None
        except ActivationError as exc:
            raise user_error(exc) from None
        click.echo(json.dumps(failures(session, act_id), indent=2))


@activations.command("discard")
@click.argument("delivery_ids", nargs=-1, required=True, type=click.IntRange(1, 2**31 - 1))
def activations_discard(delivery_ids):
    """Take failed deliveries out of the registry unsent; the next run plans their subjects again."""
    from activation.destinations import ActivationError
    from activation.runs import discard

    try:
        out = discard(_runtime(), list(delivery_ids))
    except ActivationError as exc:
        raise user_error(exc) from None
    click.echo(json.dumps(out, indent=2))


@activations.command("retry")
@click.argument("delivery_ids", nargs=-1, type=click.IntRange(1, 2**31 - 1))
@click.option("--activation", help="Every failed delivery of this activation (id or name).")
@click.option("--due", is_flag=True, help="Only those whose suggested retry time has come.")
@click.option("--here", is_flag=True, help="Run in this process even when REDIS_URL is set.")
def activations_retry(delivery_ids, activation, due, here):
    """Re-drive failed deliveries with their original idempotency keys (all failed ones without arguments)."""
    from activation.destinations import ActivationError
    from activation.runs import find_activation, retry

    runtime = _runtime()
    try:
        act_id = None
        if activation:
            with runtime.session() as session:
                act_id = find_activation(session, activation).id
        with _progress(None, "retry", unit="subject") as bar:
            out = retry(runtime, list(delivery_ids) or None, act_id, due, progress=bar.update, here=here)
    except ActivationError as exc:
        raise user_error(exc) from None
    click.echo(json.dumps(out, indent=2))
    if any(isinstance(d, dict) and d["status"] == "failed" for d in out["deliveries"]):
        sys.exit(1)
