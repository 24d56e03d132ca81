"""probabilistic identity resolution, review queue

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Candidate lookups ask for many blind indexes of any kind at once.
    op.drop_index("ix_identifiers_lookup", table_name="identifiers")
    op.create_index("ix_identifiers_blind_index", "identifiers", ["blind_index", "kind"])
    with op.batch_alter_table("source_records") as batch:
        batch.add_column(sa.Column("link_details", sa.JSON(), nullable=True))
    op.create_table(
        "match_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_models")),
    )
    op.create_index(op.f("ix_match_models_active"), "match_models", ["active"])
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("other_record_id", sa.String(length=36), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["record_id"], ["source_records.id"], ondelete="CASCADE",
                                name=op.f("fk_review_items_record_id_source_records")),
        sa.ForeignKeyConstraint(["other_record_id"], ["source_records.id"], ondelete="CASCADE",
                                name=op.f("fk_review_items_other_record_id_source_records")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint("record_id", "other_record_id", name=op.f("uq_review_items_record_id_other_record_id")),
    )
    op.create_index(op.f("ix_review_items_record_id"), "review_items", ["record_id"])
    op.create_index(op.f("ix_review_items_other_record_id"), "review_items", ["other_record_id"])
    op.create_index(op.f("ix_review_items_status"), "review_items", ["status"])
    op.create_table(
        "labelled_pairs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("record_a", sa.String(length=36), nullable=False),
        sa.Column("record_b", sa.String(length=36), nullable=False),
        sa.Column("is_match", sa.Boolean(), nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["record_a"], ["source_records.id"], ondelete="CASCADE",
                                name=op.f("fk_labelled_pairs_record_a_source_records")),
        sa.ForeignKeyConstraint(["record_b"], ["source_records.id"], ondelete="CASCADE",
                                name=op.f("fk_labelled_pairs_record_b_source_records")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labelled_pairs")),
        sa.UniqueConstraint("record_a", "record_b", name=op.f("uq_labelled_pairs_record_a_record_b")),
    )
    op.create_index(op.f("ix_labelled_pairs_record_a"), "labelled_pairs", ["record_a"])
    op.create_index(op.f("ix_labelled_pairs_record_b"), "labelled_pairs", ["record_b"])


    op.create_table(
        "rebuild_edges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run", sa.String(length=36), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("record_order", sa.DateTime(timezone=True), nullable=False),
        sa.Column("other_id", sa.String(length=36), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("review", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rebuild_edges")),
    )
    op.create_index("ix_rebuild_edges_run_order", "rebuild_edges", ["run", "record_order", "record_id"])


def downgrade() -> None:
    op.drop_index("ix_identifiers_blind_index", table_name="identifiers")
    op.create_index("ix_identifiers_lookup", "identifiers", ["kind", "blind_index"])
    op.drop_table("rebuild_edges")
    op.drop_table("labelled_pairs")
    op.drop_table("review_items")
    op.drop_table("match_models")
    with op.batch_alter_table("source_records") as batch:
        batch.drop_column("link_details")
