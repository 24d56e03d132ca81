"""The blind-index index covers the holder lookup (kind, strong, record_id
as well): resolution asks for the holders of every key of every incoming
record, and each holder cost a read of its identifier row besides the index.
A partial index of the valid CPFs by record: each chunk reads those of the
profiles it may join, and the server scanned every CPF row for them.

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

VALID_CPF = "kind = 'cpf' AND strong"  # cdp.models.VALID_CPF_SQL as of this revision


def upgrade() -> None:
    op.drop_index("ix_identifiers_blind_index", table_name="identifiers")
    op.create_index("ix_identifiers_blind_index", "identifiers", ["blind_index", "kind", "strong", "record_id"])
    op.create_index("ix_identifiers_valid_cpf", "identifiers", ["record_id", "blind_index"],
                    postgresql_where=sa.text(VALID_CPF), sqlite_where=sa.text(VALID_CPF))


def downgrade() -> None:
    op.drop_index("ix_identifiers_valid_cpf", table_name="identifiers")
    op.drop_index("ix_identifiers_blind_index", table_name="identifiers")
    op.create_index("ix_identifiers_blind_index", "identifiers", ["blind_index", "kind"])
