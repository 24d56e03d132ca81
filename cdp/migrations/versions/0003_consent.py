"""consent ledger and purposes

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
BASES = ("consent", "legal_obligation", "public_administration", "research", "contract", "exercise_of_rights",
         "protection_of_life", "health_protection", "legitimate_interest", "credit_protection", "fraud_prevention")
ACTIONS = ("granted", "revoked", "opted_out")


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "consent_purposes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("legal_basis", sa.String(32), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("title_pt", sa.String(200), nullable=False),
        sa.Column("title_en", sa.String(200), nullable=False),
        sa.Column("description_pt", sa.Text(), nullable=False),
        sa.Column("description_en", sa.Text(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("notice_version", sa.String(64), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_consent_purposes"),
        sa.CheckConstraint(_in("legal_basis", BASES), name="ck_consent_purposes_legal_basis"),
    )
    op.create_table(
        "consent_purpose_versions",
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("notices", sa.JSON(), nullable=False),
        sa.Column("effective_from", ts, nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("purpose", "version", name="pk_consent_purpose_versions"),
        sa.ForeignKeyConstraint(["purpose"], ["consent_purposes.name"],
                                name="fk_consent_purpose_versions_purpose_consent_purposes"),
    )
    op.create_table(
        "consent_subject_keys",
        sa.Column("subject_id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("subject_id", name="pk_consent_subject_keys"),
        sa.ForeignKeyConstraint(["key_id"], ["data_keys.id"], name="fk_consent_subject_keys_key_id_data_keys"),
    )
    op.create_table(
        "consent_ledger",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
        sa.Column("subject_id", sa.String(36), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("purpose_version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("legal_basis", sa.String(32), nullable=False),
        sa.Column("declared_basis", sa.String(32), nullable=True),
        sa.Column("occurred_at", ts, nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("notice_version", sa.String(64), nullable=True),
        sa.Column("collector", sa.String(120), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=True),
        sa.Column("origin_key", sa.LargeBinary(32), nullable=True),
        sa.Column("key_id", sa.String(36), nullable=True),
        sa.Column("evidence_ct", sa.LargeBinary(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_consent_ledger"),
        sa.UniqueConstraint("id", name="uq_consent_ledger_id"),
        sa.UniqueConstraint("origin_key", name="uq_consent_ledger_origin_key"),
        sa.UniqueConstraint("hash", name="uq_consent_ledger_hash"),
        sa.ForeignKeyConstraint(["purpose"], ["consent_purposes.name"], name="fk_consent_ledger_purpose_consent_purposes"),
        sa.CheckConstraint(_in("action", ACTIONS), name="ck_consent_ledger_action"),
    )
    op.create_index("ix_consent_ledger_subject_purpose", "consent_ledger", ["subject_id", "purpose"])
    op.create_index("ix_consent_ledger_record_id", "consent_ledger", ["record_id"])
    op.create_table(
        "consent_ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consent_ledger_head"),
    )
    op.execute(sa.text("INSERT INTO consent_ledger_head (id, seq, hash, updated_at) VALUES (1, 0, :h, CURRENT_TIMESTAMP)")
               .bindparams(h=GENESIS))
    op.create_table(
        "consent_states",
        sa.Column("subject_id", sa.String(36), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("purpose_version", sa.Integer(), nullable=False),
        sa.Column("legal_basis", sa.String(32), nullable=False),
        sa.Column("occurred_at", ts, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "purpose", name="pk_consent_states"),
    )
    op.create_index("ix_consent_states_purpose", "consent_states", ["purpose"])

    # Append-only at the database too: the application never updates or
    # deletes an entry (erasure is crypto-shredding of the evidence key). A
    # DBA can drop these triggers; `cdp ledger verify` and signed checkpoints
    # catch what they then change.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION consent_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'consent_ledger is append-only'; END $$""")
        op.execute("""CREATE TRIGGER consent_ledger_append_only BEFORE UPDATE OR DELETE ON consent_ledger
                      FOR EACH ROW EXECUTE FUNCTION consent_ledger_append_only()""")
        op.execute("""CREATE TRIGGER consent_ledger_no_truncate BEFORE TRUNCATE ON consent_ledger
                      FOR EACH STATEMENT EXECUTE FUNCTION consent_ledger_append_only()""")
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"""CREATE TRIGGER consent_ledger_no_{event.lower()} BEFORE {event} ON consent_ledger
                           BEGIN SELECT RAISE(ABORT, 'consent_ledger is append-only'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS consent_ledger_no_truncate ON consent_ledger")
        op.execute("DROP TRIGGER IF EXISTS consent_ledger_append_only ON consent_ledger")
        op.execute("DROP FUNCTION IF EXISTS consent_ledger_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS consent_ledger_no_update")
        op.execute("DROP TRIGGER IF EXISTS consent_ledger_no_delete")
    op.drop_index("ix_consent_states_purpose", table_name="consent_states")
    op.drop_table("consent_states")
    op.drop_table("consent_ledger_head")
    op.drop_index("ix_consent_ledger_record_id", table_name="consent_ledger")
    op.drop_index("ix_consent_ledger_subject_purpose", table_name="consent_ledger")
    op.drop_table("consent_ledger")
    op.drop_table("consent_subject_keys")
    op.drop_table("consent_purpose_versions")
    op.drop_table("consent_purposes")
