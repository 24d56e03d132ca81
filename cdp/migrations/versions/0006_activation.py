"""metrics, segments, portfolios, activation

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "profile_metrics",
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.Column("purchase_count", sa.Integer(), nullable=False),
        sa.Column("monetary_total", sa.Numeric(14, 2), nullable=False),
        sa.Column("first_purchase_at", TS),
        sa.Column("last_purchase_at", TS),
        sa.Column("recency_days", sa.Integer()),
        sa.Column("average_order_value", sa.Numeric(14, 2)),
        sa.Column("lifetime_days", sa.Integer()),
        sa.Column("purchase_frequency", sa.Float()),
        sa.Column("ltv", sa.Numeric(14, 2)),
        sa.Column("r_score", sa.Integer()),
        sa.Column("f_score", sa.Integer()),
        sa.Column("m_score", sa.Integer()),
        sa.Column("churned", sa.Boolean()),
        sa.Column("nps_score", sa.Integer()),
        sa.Column("nps_class", sa.String(10)),
        sa.Column("csat_score", sa.Integer()),
        sa.Column("ces_score", sa.Integer()),
        sa.Column("complaints", sa.Integer(), nullable=False),
        sa.Column("complaints_unanswered", sa.Integer(), nullable=False),
        sa.Column("complaints_answered", sa.Integer(), nullable=False),
        sa.Column("complaints_resolved", sa.Integer(), nullable=False),
        sa.Column("complaint_rating_sum", sa.Integer(), nullable=False),
        sa.Column("complaint_rating_count", sa.Integer(), nullable=False),
        sa.Column("would_do_business_yes", sa.Integer(), nullable=False),
        sa.Column("would_do_business_answers", sa.Integer(), nullable=False),
        sa.Column("last_complaint_at", TS),
        sa.Column("holdout_bucket", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("profile_id", name="pk_profile_metrics"),
    )
    op.create_index("ix_profile_metrics_purchase_count", "profile_metrics", ["purchase_count"])
    op.create_index("ix_profile_metrics_last_purchase_at", "profile_metrics", ["last_purchase_at"])
    op.create_index("ix_profile_metrics_churned", "profile_metrics", ["churned"])
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500)),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("holdout_pct", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("refreshed_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_segments"),
        sa.UniqueConstraint("name", name="uq_segments_name"),
    )
    op.create_table(
        "segment_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name="fk_segment_versions_segment_id_segments"),
        sa.PrimaryKeyConstraint("id", name="pk_segment_versions"),
        sa.UniqueConstraint("segment_id", "version", name="uq_segment_versions_segment_id_version"),
    )
    op.create_index("ix_segment_versions_segment_id", "segment_versions", ["segment_id"])
    op.create_table(
        "segment_members",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("entered_at", TS, nullable=False),
        sa.Column("exited_at", TS),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name="fk_segment_members_segment_id_segments"),
        sa.PrimaryKeyConstraint("id", name="pk_segment_members"),
    )
    op.create_index("ix_segment_members_current", "segment_members", ["segment_id", "exited_at", "profile_id"])
    op.create_index("ix_segment_members_profile_id", "segment_members", ["profile_id"])
    op.create_table(
        "api_key_access",
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name="fk_api_key_access_api_key_id_api_keys"),
        sa.PrimaryKeyConstraint("api_key_id", name="pk_api_key_access"),
    )


def downgrade() -> None:
    op.drop_table("api_key_access")
    op.drop_table("segment_members")
    op.drop_table("segment_versions")
    op.drop_table("segments")
    op.drop_table("profile_metrics")
