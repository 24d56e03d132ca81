"""source_records.features_ct: each record's matching features, encrypted
with the record's own data key, so resolution reads ~200 bytes instead of
decrypting and normalizing the payload of every candidate its cache lacks.
Records stored before it have none and are read from their payloads.

Revision ID: 0013
Revises: 0012
"""
from alembic import op
import sqlalchemy as sa

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("source_records", sa.Column("features_ct", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source_records") as batch:
        batch.drop_column("features_ct")
