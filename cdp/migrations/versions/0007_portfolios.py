"""portfolios and managers, with history

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "portfolios",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("segment_id", sa.Integer()),
        sa.Column("manager_id", sa.String(36), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name="fk_portfolios_segment_id_segments"),
        sa.ForeignKeyConstraint(["manager_id"], ["staff_users.id"], name="fk_portfolios_manager_id_staff_users"),
        sa.PrimaryKeyConstraint("id", name="pk_portfolios"),
        sa.UniqueConstraint("name", name="uq_portfolios_name"),
    )
    op.create_index("ix_portfolios_segment_id", "portfolios", ["segment_id"])
    op.create_index("ix_portfolios_manager_id", "portfolios", ["manager_id"])
    op.create_table(
        "portfolio_managers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("manager_id", sa.String(36), nullable=False),
        sa.Column("assigned_at", TS, nullable=False),
        sa.Column("unassigned_at", TS),
        sa.Column("assigned_by", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(["portfolio_id"], ["portfolios.id"],
                                name="fk_portfolio_managers_portfolio_id_portfolios"),
        sa.ForeignKeyConstraint(["manager_id"], ["staff_users.id"],
                                name="fk_portfolio_managers_manager_id_staff_users"),
        sa.PrimaryKeyConstraint("id", name="pk_portfolio_managers"),
    )
    op.create_index("ix_portfolio_managers_portfolio_id", "portfolio_managers", ["portfolio_id"])
    op.create_index("ix_portfolio_managers_manager_id", "portfolio_managers", ["manager_id"])
    op.create_table(
        "portfolio_members",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.Column("added_by", sa.String(100), nullable=False),
        sa.Column("removed_at", TS),
        sa.Column("removed_by", sa.String(100)),
        sa.ForeignKeyConstraint(["portfolio_id"], ["portfolios.id"],
                                name="fk_portfolio_members_portfolio_id_portfolios"),
        sa.PrimaryKeyConstraint("id", name="pk_portfolio_members"),
    )
    op.create_index("ix_portfolio_members_current", "portfolio_members", ["portfolio_id", "removed_at", "profile_id"])
    op.create_index("ix_portfolio_members_profile_id", "portfolio_members", ["profile_id"])
    # One hand-assigned portfolio per customer at a time (partial index: SQLite and PostgreSQL).
    op.create_index("uq_portfolio_members_profile_current", "portfolio_members", ["profile_id"], unique=True,
                    sqlite_where=sa.text("removed_at IS NULL"), postgresql_where=sa.text("removed_at IS NULL"))
    op.create_table(
        "portfolio_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("taken_at", TS, nullable=False),
        sa.Column("manager_id", sa.String(36)),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("total_ltv", sa.Numeric(16, 2), nullable=False),
        sa.Column("avg_ltv", sa.Numeric(14, 2)),
        sa.Column("churned", sa.Integer(), nullable=False),
        sa.Column("churn_rate", sa.Float()),
        sa.Column("nps_respondents", sa.Integer(), nullable=False),
        sa.Column("promoters", sa.Integer(), nullable=False),
        sa.Column("detractors", sa.Integer(), nullable=False),
        sa.Column("nps", sa.Float()),
        sa.ForeignKeyConstraint(["portfolio_id"], ["portfolios.id"],
                                name="fk_portfolio_snapshots_portfolio_id_portfolios"),
        sa.PrimaryKeyConstraint("id", name="pk_portfolio_snapshots"),
        sa.UniqueConstraint("portfolio_id", "as_of", name="uq_portfolio_snapshots_portfolio_id_as_of"),
    )


def downgrade() -> None:
    op.drop_table("portfolio_snapshots")
    op.drop_index("uq_portfolio_members_profile_current", table_name="portfolio_members")
    op.drop_table("portfolio_members")
    op.drop_table("portfolio_managers")
    op.drop_table("portfolios")
