"""The blind-index index covers the holder lookup (kind, strong, record_id
as well): resolution asks for the holders of every key of every incoming
record, and each holder cost a read of its identifier row besides the index.

Revision ID: 0014
Revises: 0013
"""
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_identifiers_blind_index", table_name="identifiers")
    op.create_index("ix_identifiers_blind_index", "identifiers", ["blind_index", "kind", "strong", "record_id"])


def downgrade() -> None:
    op.drop_index("ix_identifiers_blind_index", table_name="identifiers")
    op.create_index("ix_identifiers_blind_index", "identifiers", ["blind_index", "kind"])
