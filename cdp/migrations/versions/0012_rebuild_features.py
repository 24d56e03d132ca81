"""rebuild_features: a batch rebuild's encrypted copy of each record's
matching features, derived once per run instead of once per slice that
compares the record.

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rebuild_features",
        sa.Column("run", sa.String(length=36), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("features_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("run", "record_id", name=op.f("pk_rebuild_features")),
    )


def downgrade() -> None:
    op.drop_table("rebuild_features")
