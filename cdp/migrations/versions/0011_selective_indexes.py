"""Indexes a planner without statistics cannot misuse: events are found by
profile and type through one composite index, and the single-column indexes
on events.type and profiles.status (a handful of values each) are dropped.
SQLite, which has no statistics unless ANALYZE runs, preferred them to a
lookup by a chunk of profile ids and scanned every purchase and every active
profile per chunk: a metrics refresh after a million-record rebuild grew
with the square of the base.

Revision ID: 0011
Revises: 0010
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_profile_type", "events", ["profile_id", "type"])
    op.drop_index("ix_events_profile_id", table_name="events")
    op.drop_index("ix_events_type", table_name="events")
    op.drop_index("ix_profiles_status", table_name="profiles")


def downgrade() -> None:
    op.create_index("ix_profiles_status", "profiles", ["status"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_profile_id", "events", ["profile_id"])
    op.drop_index("ix_events_profile_type", table_name="events")
