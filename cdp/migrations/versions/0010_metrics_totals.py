"""metrics_totals: running totals over profile_metrics (purchasers and the
sum of their lifetimes), so a per-profile refresh gets the base's average
customer lifetime for LTV without scanning every profile's metrics

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metrics_totals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purchasers", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_days", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics_totals")),
    )
    op.execute("INSERT INTO metrics_totals (id, purchasers, lifetime_days) "
               "SELECT 1, count(*), coalesce(sum(lifetime_days), 0) FROM profile_metrics WHERE purchase_count > 0")


def downgrade() -> None:
    op.drop_table("metrics_totals")
