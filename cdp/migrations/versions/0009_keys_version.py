"""source_records.keys_version: which release's identifier rows a record has;
rebuild_keys: a batch rebuild's ranked keys

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing records get 0 (unknown): the next `cdp identity rekey` or rebuild re-derives them.
    op.add_column("source_records", sa.Column("keys_version", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "rebuild_keys",
        sa.Column("run", sa.String(length=36), nullable=False),
        sa.Column("blind_index", sa.LargeBinary(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("strong", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("run", "blind_index", "n", name=op.f("pk_rebuild_keys")),
    )
    op.create_index("ix_rebuild_keys_run_record", "rebuild_keys", ["run", "record_id"])


def downgrade() -> None:
    op.drop_table("rebuild_keys")
    with op.batch_alter_table("source_records") as batch:
        batch.drop_column("keys_version")
