"""source_records.keys_version: which release's identifier rows a record has

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


def downgrade() -> None:
    with op.batch_alter_table("source_records") as batch:
        batch.drop_column("keys_version")
