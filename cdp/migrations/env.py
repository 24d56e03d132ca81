"""Alembic environment: the URL comes from the app's settings, never from an ini file."""
from alembic import context
from sqlalchemy import pool

from cdp.models import Base, UTCDateTime
from cdp.store import get_engine
import cdp.sync_models  # noqa: F401,E402 - sync_runs (0002)
import consent.models  # noqa: F401,E402 - consent ledger and purposes (0003)
import consent.dsr.models, cdp.disclosures  # noqa: F401,E401,E402 - requests, suppression, incidents, disclosures (0004)
import cdp.console.models  # noqa: F401,E402 - DPO console staff accounts (0004)
import identity.models  # noqa: F401,E402 - match models, review queue (0005)
import activation.models  # noqa: F401,E402 - metrics, segments, activation (0006)
import activation.run_models  # noqa: F401,E402 - destinations, activations, runs, deliveries (0008)
import activation.portfolio_models  # noqa: F401,E402 - portfolios, managers, snapshots (0007)

config = context.config
target_metadata = Base.metadata


def render_item(type_, obj, autogen_context):
    # Migrations stay plain SQLAlchemy: UTCDateTime is DateTime in the database.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True, render_item=render_item)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = get_engine(config.get_main_option("sqlalchemy.url"))
        with engine.connect() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      render_item=render_item)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
