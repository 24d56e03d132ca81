"""Less work per stored and per linked record:

- `identifiers.record_id` loses its foreign key: a record has about ten
  identifier rows and the server checked each against `source_records` (a
  fifth of the cost of storing them). The rows are written only with their
  record, in its transaction, and deleted before it.
- `ix_source_records_source` is dropped: the unique (source, external_key)
  index starts with `source` and answers the same lookups.
- The status index becomes a partial index of the pending records only,
  ordered as the pending sweep reads them: every link update set a record's
  status to 'resolved' and so wrote one more entry into an index nobody asks
  for resolved records.

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

PENDING = "status = 'pending'"  # cdp.models.PENDING_SQL as of this revision
IDENTIFIERS_FK = "fk_identifiers_record_id_source_records"


def upgrade() -> None:
    with op.batch_alter_table("identifiers") as batch:  # SQLite rebuilds the table
        batch.drop_constraint(IDENTIFIERS_FK, type_="foreignkey")
    op.drop_index("ix_source_records_source", table_name="source_records")
    op.drop_index("ix_source_records_status", table_name="source_records")
    op.create_index("ix_source_records_pending", "source_records", ["received_at", "id"],
                    postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))


def downgrade() -> None:
    op.drop_index("ix_source_records_pending", table_name="source_records")
    op.create_index("ix_source_records_status", "source_records", ["status"])
    op.create_index("ix_source_records_source", "source_records", ["source"])
    with op.batch_alter_table("identifiers") as batch:
        batch.create_foreign_key(IDENTIFIERS_FK, "source_records", ["record_id"], ["id"])
