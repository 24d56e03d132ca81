"""PostgreSQL: source record payloads stored out of line (TOAST, without
compression: ciphertext does not compress), the small columns kept in the row.

Resolution reads source_records rows by the hundred for every chunk (the
holders of each blocking key: profile and version) and rewrites each record's
link once; with the ~1 KB payload inline, each of those reads lands on a
page holding ~4 records, and each rewrite copies the payload into a new row
version and into the WAL. Out of line, a row is ~600 bytes, the payload is
written once and read only where it is decrypted. SQLite is left as it is.

Revision ID: 0014
Revises: 0013
"""
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE source_records ALTER COLUMN payload_ct SET STORAGE EXTERNAL")
    # In the row unless it outgrows a page: read with every lookup / rewritten with every link.
    op.execute("ALTER TABLE source_records ALTER COLUMN features_ct SET STORAGE MAIN")
    op.execute("ALTER TABLE source_records ALTER COLUMN link_details SET STORAGE MAIN")
    # A row longer than this moves its largest values (the payload first) out of line.
    op.execute("ALTER TABLE source_records SET (toast_tuple_target = 1024)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE source_records RESET (toast_tuple_target)")
    op.execute("ALTER TABLE source_records ALTER COLUMN link_details SET STORAGE EXTENDED")
    op.execute("ALTER TABLE source_records ALTER COLUMN features_ct SET STORAGE EXTENDED")
    op.execute("ALTER TABLE source_records ALTER COLUMN payload_ct SET STORAGE EXTENDED")
