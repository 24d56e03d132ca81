"""activation runs, deliveries, failure registry, destinations

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "destinations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets_key_id", sa.String(36)),
        sa.Column("secrets_ct", sa.LargeBinary()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["secrets_key_id"], ["data_keys.id"], name="fk_destinations_secrets_key_id_data_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_destinations"),
        sa.UniqueConstraint("name", name="uq_destinations_name"),
    )
    op.create_table(
        "activations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("holdout_pct", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.JSON()),
        sa.Column("schedule_job_id", sa.String(64)),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_run_at", TS),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name="fk_activations_segment_id_segments"),
        sa.ForeignKeyConstraint(["destination_id"], ["destinations.id"],
                                name="fk_activations_destination_id_destinations"),
        sa.PrimaryKeyConstraint("id", name="pk_activations"),
        sa.UniqueConstraint("name", name="uq_activations_name"),
    )
    op.create_index("ix_activations_segment_id", "activations", ["segment_id"])
    op.create_index("ix_activations_destination_id", "activations", ["destination_id"])
    op.create_table(
        "activation_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("activation_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("skipped_consent", sa.Integer(), nullable=False),
        sa.Column("held_out", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(1000)),
        sa.ForeignKeyConstraint(["activation_id"], ["activations.id"],
                                name="fk_activation_runs_activation_id_activations"),
        sa.PrimaryKeyConstraint("id", name="pk_activation_runs"),
    )
    op.create_index("ix_activation_runs_activation_id", "activation_runs", ["activation_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("activation_id", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("profile_ids", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(1000)),
        sa.Column("next_retry_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
        sa.Column("failed_at", TS),
        sa.ForeignKeyConstraint(["run_id"], ["activation_runs.id"], name="fk_deliveries_run_id_activation_runs"),
        sa.ForeignKeyConstraint(["activation_id"], ["activations.id"], name="fk_deliveries_activation_id_activations"),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("run_id", "ordinal", name="uq_deliveries_run_id_ordinal"),
        sa.UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
    )
    op.create_index("ix_deliveries_run_id", "deliveries", ["run_id"])
    op.create_index("ix_deliveries_status", "deliveries", ["status", "activation_id"])
    op.create_table(
        "activation_members",
        sa.Column("activation_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("ref_ct", sa.LargeBinary()),
        sa.Column("ref_key_id", sa.String(36)),
        sa.Column("added_at", TS),
        sa.Column("removed_at", TS),
        sa.Column("delivery_id", sa.Integer()),
        sa.ForeignKeyConstraint(["activation_id"], ["activations.id"],
                                name="fk_activation_members_activation_id_activations"),
        sa.PrimaryKeyConstraint("activation_id", "profile_id", name="pk_activation_members"),
    )


def downgrade() -> None:
    op.drop_table("activation_members")
    op.drop_table("deliveries")
    op.drop_table("activation_runs")
    op.drop_table("activations")
    op.drop_table("destinations")
