"""`cdp identity ...`: train, evaluate, rebuild, review, explain."""
from __future__ import annotations

import json
import sys

import click
from tqdm import tqdm


def _runtime():
    from cdp.cli import _runtime

    return _runtime()


@click.group()
def identity():
    """Identity resolution: model, batch rebuild, review queue, explanations."""


@identity.command()
@click.option("--sample", default=100_000, show_default=True, help="Records sampled for training.")
def train(sample):
    """Estimate the match model from the current data (unsupervised EM; review decisions count as labels)."""
    from identity.training import train as do_train

    runtime = _runtime()
    model = do_train(runtime, sample_size=sample)
    click.echo(json.dumps({"trained_on": model.trained_on, "prior": model.prior}, indent=2))


@identity.command()
@click.option("--truth", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with source,external_id,entity_id.")
def evaluate(truth):
    """Pairwise precision, recall and F1 of the current clusters against labelled truth."""
    from cdp.cli import UserError
    from cdp.links import iter_links
    from identity.evaluate import pairwise, read_truth

    try:
        expected = read_truth(truth)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(str(exc)) from None
    predicted = {(s, e): p for s, e, p in iter_links(_runtime())}
    score = pairwise(predicted, expected)
    if score.records == 0:
        raise UserError("no record of the truth file is in the database (check source and external_id)")
    click.echo(json.dumps(score.as_dict(), indent=2))


@identity.command()
@click.option("--keep-keys", is_flag=True,
              help="Skip the key refresh (records an older release indexed are re-derived first by default).")
def rebuild(keep_keys):
    """Re-resolve every record from scratch (parallel on rq workers when REDIS_URL is set)."""
    from cdp.cli import UserError
    from sqlalchemy import func, select

    from cdp.models import SourceRecord
    from identity.rebuild import RebuildBusy, rebuild as do_rebuild

    runtime = _runtime()
    with runtime.session() as session:
        total = session.scalar(select(func.count()).select_from(SourceRecord))
    bars = {}

    def progress(phase, n):
        if phase not in bars:
            bars[phase] = tqdm(total=total, desc=phase, unit="rec", file=sys.stderr)
        bars[phase].update(n)

    try:
        stats = do_rebuild(runtime, progress=progress, rekey=not keep_keys)
    except RebuildBusy as exc:
        raise UserError(str(exc)) from None
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(json.dumps(stats, indent=2))


@identity.command()
@click.option("--all", "everything", is_flag=True, help="Every record, not only those an older release indexed.")
def rekey(everything):
    """Recompute records' blind indexes and blocking keys from their payloads
    (after an upgrade that changes them); `rebuild` does this first."""
    from identity.rebuild import ordered_ids, refresh_keys, stale_ids

    runtime = _runtime()
    ids = ordered_ids(runtime) if everything else stale_ids(runtime)
    with tqdm(total=len(ids), desc="keys", unit="rec", file=sys.stderr) as bar:
        done = refresh_keys(runtime, ids, progress=bar.update)
    click.echo(f"refreshed the keys of {done} record(s)")


@identity.group()
def review():
    """The review queue: pairs the model could not decide."""


@review.command("list")
@click.option("--status", default="pending", type=click.Choice(["pending", "match", "non_match"]))
@click.option("--limit", default=50, show_default=True)
def review_list(status, limit):
    from identity.review import list_items

    runtime = _runtime()
    with runtime.session() as session:
        total, items = list_items(session, status, limit)
    click.echo(json.dumps({"total": total, "items": items}, indent=2))


@review.command("show")
@click.argument("item_id", type=int)
def review_show(item_id):
    """An item with both records' values side by side (decrypted: staff only)."""
    from cdp.cli import UserError
    from identity.models import ReviewItem
    from identity.review import evidence_values, summary

    runtime = _runtime()
    with runtime.session() as session:
        item = session.get(ReviewItem, item_id)
        if item is None:
            raise UserError(f"no review item {item_id}")
        out = summary(session, item)
        out["values"] = evidence_values(session, runtime.keys(session), item)
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


@review.command("decide")
@click.argument("item_id", type=int)
@click.argument("decision", type=click.Choice(["match", "non_match"]))
@click.option("--actor", default="cli", show_default=True)
def review_decide(item_id, decision, actor):
    from cdp.cli import UserError
    from identity.review import decide

    runtime = _runtime()
    with runtime.session() as session:
        try:
            out = decide(session, runtime.keys(session), runtime.settings, item_id, decision, actor)
        except (LookupError, ValueError) as exc:
            raise UserError(str(exc)) from None
    click.echo(json.dumps(out, indent=2))


@identity.command()
@click.argument("profile_id")
@click.option("--language", default="pt-BR", type=click.Choice(["pt-BR", "en"]))
def explain(profile_id, language):
    """Why each record belongs to this profile (rules, per-field weights)."""
    from identity.explain import explain_profile

    runtime = _runtime()
    with runtime.session() as session:
        click.echo(json.dumps(explain_profile(session, profile_id, language), indent=2, ensure_ascii=False))
