"""`cdp metrics ...` and `cdp segments ...`."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click

from activation.errors import user_error


def _runtime():
    from cdp.cli import _runtime

    return _runtime()


def _when(value: str | None, name: str) -> datetime | None:
    from cdp.cli import UserError

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{name}: not an ISO date or date-time ({value!r})") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.group()
def metrics():
    """Per-profile metrics (RFM, LTV, churn, NPS, CSAT, CES, complaints) and company indicators."""


@metrics.command("refresh")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--churn-days", type=click.IntRange(1), help="Days without a purchase that make a churned customer "
              "(default CDP_CHURN_DAYS or 180).")
def metrics_refresh(batch_size, churn_days):
    """Recompute the metrics of every active profile, in bounded batches."""
    from activation.metrics import count_active, refresh_all
    from cdp.cli import _progress

    runtime = _runtime()
    with _progress(count_active(runtime), "metrics", unit="profile") as bar:
        done = refresh_all(runtime, batch_size=batch_size, progress=bar.update, churn_days=churn_days)
    click.echo(json.dumps({"profiles": done}))


@metrics.command("company")
@click.option("--from", "start", help="Period start (ISO) for retention and churn rates.")
@click.option("--to", "end", help="Period end (ISO).")
@click.option("--churn-days", type=click.IntRange(1))
def metrics_company(start, end, churn_days):
    """Company indicators: NPS, CSAT, CES, complaints, churn; retention over --from/--to."""
    from activation.metrics import company_metrics
    from cdp.cli import UserError

    start, end = _when(start, "--from"), _when(end, "--to")
    if (start is None) != (end is None) or (start and end < start):
        raise UserError("--from and --to go together, with --to after --from")
    runtime = _runtime()
    with runtime.session() as session:
        click.echo(json.dumps(company_metrics(session, start, end, churn_days), indent=2))


@metrics.command("show")
@click.argument("profile_id")
def metrics_show(profile_id):
    """The metrics row of one profile (numbers only)."""
    from activation.models import ProfileMetrics
    from cdp.cli import UserError

    runtime = _runtime()
    with runtime.session() as session:
        row = session.get(ProfileMetrics, profile_id)
        if row is None:
            raise UserError(f"no metrics for profile {profile_id} (run `cdp metrics refresh`)")
        out = {c.name: getattr(row, c.name) for c in ProfileMetrics.__table__.columns}
    click.echo(json.dumps(out, indent=2, default=str))


@click.group()
def segments():
    """Segments: rules over metrics and events (docs/segments.md), previews, membership."""


def _read_rules(path: str) -> dict:
    from cdp.cli import UserError

    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserError(f"--rules-file: cannot read JSON ({type(exc).__name__})") from None


@segments.command("create")
@click.argument("name")
@click.option("--rules-file", required=True, type=click.Path(dir_okay=False), help="JSON rules.")
@click.option("--description")
@click.option("--holdout", "holdout_pct", default=0, type=click.IntRange(0, 50), help="% of members held out.")
def segments_create(name, rules_file, description, holdout_pct):
    """Create a segment (version 1)."""
    from activation.segments import SegmentError, create_segment, segment_dict

    rules = _read_rules(rules_file)
    runtime = _runtime()
    with runtime.session() as session:
        try:
            segment = create_segment(session, name, rules, description, holdout_pct, actor="cli")
        except SegmentError as exc:
            raise user_error(exc) from None
        click.echo(json.dumps(segment_dict(session, segment), indent=2))


@segments.command("update")
@click.argument("segment_id", type=int)
@click.option("--rules-file", type=click.Path(dir_okay=False))
@click.option("--description")
@click.option("--holdout", "holdout_pct", type=click.IntRange(0, 50))
def segments_update(segment_id, rules_file, description, holdout_pct):
    """New rules make a new version."""
    from activation.models import Segment
    from activation.segments import SegmentError, segment_dict, update_segment
    from cdp.cli import UserError

    rules = _read_rules(rules_file) if rules_file else None
    runtime = _runtime()
    with runtime.session() as session:
        segment = session.get(Segment, segment_id)
        if segment is None:
            raise UserError(f"no segment {segment_id}")
        try:
            update_segment(session, segment, rules, description, holdout_pct, actor="cli")
        except SegmentError as exc:
            raise user_error(exc) from None
        click.echo(json.dumps(segment_dict(session, segment, with_history=True), indent=2))


@segments.command("list")
def segments_list():
    """Segments with their current version and member count."""
    from sqlalchemy import select

    from activation.models import Segment
    from activation.segments import segment_dict

    runtime = _runtime()
    with runtime.session() as session:
        click.echo(json.dumps([segment_dict(session, s) for s in session.scalars(select(Segment).order_by(Segment.id))],
                              indent=2))


@segments.command("preview")
@click.option("--rules-file", required=True, type=click.Path(dir_okay=False))
def segments_preview(rules_file):
    """Count and sample profile ids of rules (nothing saved)."""
    from activation.segments import SegmentError, preview

    rules = _read_rules(rules_file)
    runtime = _runtime()
    with runtime.session() as session:
        try:
            click.echo(json.dumps(preview(session, rules), indent=2))
        except SegmentError as exc:
            raise user_error(exc) from None


@segments.command("refresh")
@click.argument("segment_id", type=int)
def segments_refresh(segment_id):
    """Materialize membership (queued as an rq job with REDIS_URL)."""
    from activation.segments import SegmentError, submit_refresh

    try:
        click.echo(json.dumps(submit_refresh(_runtime(), segment_id)))
    except SegmentError:
        from cdp.cli import UserError

        raise UserError(f"no segment {segment_id}") from None


@segments.command("access")
@click.argument("key_prefix")
@click.option("--purpose", required=True, help="The purpose this key's recipient processes members for.")
@click.option("--fields", "fields_", required=True, help="Comma-separated fields the key may receive.")
def segments_access(key_prefix, purpose, fields_):
    """Declare an API key's purpose and allowed fields for segment members."""
    from activation.access import AccessError, set_access

    runtime = _runtime()
    with runtime.session() as session:
        try:
            access = set_access(session, key_prefix, purpose, [f.strip() for f in fields_.split(",") if f.strip()])
        except AccessError as exc:
            raise user_error(exc) from None
        click.echo(json.dumps({"key": key_prefix, "purpose": access.purpose, "fields": access.fields}))


@segments.command("export")
@click.argument("segment_id", type=int)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="File to write.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--purpose", required=True, help="The purpose of this activation (checked per subject).")
@click.option("--fields", "fields_", required=True, help="Comma-separated fields to write.")
@click.option("--name", help="Recipient name for the disclosure log (default: the file name).")
def segments_export(segment_id, out, fmt, purpose, fields_, name):
    """Export the members the consent gate allows (holdout excluded) to CSV/JSONL; logged as disclosures."""
    from activation.access import AccessError
    from activation.export import FileDestination, export_segment
    from cdp.cli import UserError, _progress
    from cdp.connectors import ConfigInvalid

    try:
        dest = FileDestination({"path": out, "format": fmt, "fields": [f.strip() for f in fields_.split(",") if f.strip()]},
                               destination=name or Path(out).name)
    except ConfigInvalid as exc:
        raise UserError(str(exc)) from None
    runtime = _runtime()
    with _progress(None, "export", unit="profile") as bar:
        try:
            total = export_segment(runtime, segment_id, purpose, dest, progress=bar.update)
        except AccessError as exc:
            raise user_error(exc) from None
    click.echo(json.dumps({"exported": total, "path": out}))
