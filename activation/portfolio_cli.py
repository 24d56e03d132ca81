"""`cdp portfolios ...` (docs/segments.md, "Portfolios")."""
from __future__ import annotations

import json

import click

from activation.errors import user_error


def _runtime():
    from cdp.cli import _runtime

    return _runtime()


def _get(session, portfolio_id: int):
    from activation.portfolios import PortfolioError, get_portfolio
    from cdp.cli import UserError

    try:
        return get_portfolio(session, portfolio_id)
    except PortfolioError:
        raise UserError(f"no portfolio {portfolio_id}") from None


@click.group()
def portfolios():
    """Customer portfolios: a manager (staff user), members by hand or from a segment, daily snapshots."""


@portfolios.command("create")
@click.argument("name")
@click.option("--manager", "manager_id", required=True, help="Staff user id of the responsible manager.")
@click.option("--segment", "segment_id", type=int, help="Rule-based: members follow this segment.")
@click.option("--description")
def portfolios_create(name, manager_id, segment_id, description):
    """Create a portfolio (hand-kept unless --segment)."""
    from activation.portfolios import PortfolioError, create_portfolio, portfolio_dict

    runtime = _runtime()
    with runtime.session() as session:
        try:
            portfolio = create_portfolio(session, name, manager_id, description, segment_id, actor="cli")
        except PortfolioError as exc:
            raise user_error(exc) from None
        click.echo(json.dumps(portfolio_dict(session, portfolio, with_history=True), indent=2))


@portfolios.command("list")
def portfolios_list():
    """Portfolios with manager, members and latest snapshot."""
    from activation.portfolios import overview

    runtime = _runtime()
    with runtime.session() as session:
        click.echo(json.dumps(overview(session), indent=2))


@portfolios.command("show")
@click.argument("portfolio_id", type=int)
@click.option("--history", "with_snapshots", is_flag=True, help="Include every snapshot (time series).")
def portfolios_show(portfolio_id, with_snapshots):
    """One portfolio with its manager history (and snapshots)."""
    from activation.portfolios import history, portfolio_dict

    runtime = _runtime()
    with runtime.session() as session:
        out = portfolio_dict(session, _get(session, portfolio_id), with_history=True)
        if with_snapshots:
            out["snapshots"] = history(session, portfolio_id)
    click.echo(json.dumps(out, indent=2))


@portfolios.command("assign")
@click.argument("portfolio_id", type=int)
@click.option("--manager", "manager_id", required=True, help="Staff user id of the new manager.")
def portfolios_assign(portfolio_id, manager_id):
    """Hand the portfolio to another manager (kept in the history)."""
    from activation.portfolios import PortfolioError, assign_manager, manager_history

    runtime = _runtime()
    with runtime.session() as session:
        portfolio = _get(session, portfolio_id)
        try:
            assign_manager(session, portfolio, manager_id, actor="cli")
        except PortfolioError as exc:
            raise user_error(exc) from None
        click.echo(json.dumps({"id": portfolio.id, "managers": manager_history(session, portfolio.id)}, indent=2))


def _edit(portfolio_id: int, profile_ids: tuple[str, ...], adding: bool) -> None:
    from activation.portfolios import PortfolioError, add_members, remove_members

    runtime = _runtime()
    with runtime.session() as session:
        portfolio = _get(session, portfolio_id)
        try:
            result = (add_members if adding else remove_members)(session, portfolio, list(profile_ids), actor="cli")
        except PortfolioError as exc:
            raise user_error(exc) from None
    click.echo(json.dumps(result))


@portfolios.command("add")
@click.argument("portfolio_id", type=int)
@click.argument("profile_ids", nargs=-1, required=True)
def portfolios_add(portfolio_id, profile_ids):
    """Add customers by hand (one manual portfolio per customer)."""
    _edit(portfolio_id, profile_ids, adding=True)


@portfolios.command("remove")
@click.argument("portfolio_id", type=int)
@click.argument("profile_ids", nargs=-1, required=True)
def portfolios_remove(portfolio_id, profile_ids):
    """Remove customers from a manual portfolio."""
    _edit(portfolio_id, profile_ids, adding=False)


@portfolios.command("snapshot")
def portfolios_snapshot():
    """Snapshot every portfolio for today (replaces today's; an rq job with REDIS_URL). Schedule it daily."""
    from activation.portfolios import submit_snapshot

    click.echo(json.dumps(submit_snapshot(_runtime())))
