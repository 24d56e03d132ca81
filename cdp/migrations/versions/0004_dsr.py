"""data-subject requests, suppression, erasure log, outbox, legal holds, incidents, disclosure log

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _pk(table):
    return sa.PrimaryKeyConstraint("id", name=f"pk_{table}")


def upgrade() -> None:
    op.create_table(
        "dsr_requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("key_id", sa.String(36), sa.ForeignKey("data_keys.id", name="fk_dsr_requests_key_id_data_keys"),
                  nullable=True),
        sa.Column("claims_ct", sa.LargeBinary(), nullable=True),
        sa.Column("claims_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("duplicate_of", sa.String(36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("scope_note", sa.String(32), nullable=True),
        sa.Column("verified_at", TS, nullable=True),
        sa.Column("verified_by", sa.String(100), nullable=True),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("paused_at", TS, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("denial_code", sa.String(32), nullable=True),
        sa.Column("result_ct", sa.LargeBinary(), nullable=True),
        sa.Column("package_ct", sa.LargeBinary(), nullable=True),
        sa.Column("contact_ct", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("purged_at", TS, nullable=True),
        _pk("dsr_requests"),
    )
    with op.batch_alter_table("dsr_requests") as b:
        for col in ("type", "status", "claims_hash", "duplicate_of", "due_at", "created_at"):
            b.create_index(f"ix_dsr_requests_{col}", [col])

    op.create_table(
        "dsr_challenges",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(36),
                  sa.ForeignKey("dsr_requests.id", name="fk_dsr_challenges_request_id_dsr_requests"), nullable=False),
        sa.Column("contact_kind", sa.String(16), nullable=False),
        sa.Column("contact_index", sa.LargeBinary(16), nullable=False),
        sa.Column("contact_ct", sa.LargeBinary(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _pk("dsr_challenges"),
    )
    with op.batch_alter_table("dsr_challenges") as b:
        b.create_index("ix_dsr_challenges_request_id", ["request_id"])

    op.create_table(
        "dsr_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(36),
                  sa.ForeignKey("dsr_requests.id", name="fk_dsr_events_request_id_dsr_requests"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("from_status", sa.String(24), nullable=True),
        sa.Column("to_status", sa.String(24), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("note_ct", sa.LargeBinary(), nullable=True),
        _pk("dsr_events"),
    )
    with op.batch_alter_table("dsr_events") as b:
        b.create_index("ix_dsr_events_request_id", ["request_id"])
        b.create_index("ix_dsr_events_at", ["at"])

    op.create_table(
        "dsr_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(36),
                  sa.ForeignKey("dsr_requests.id", name="fk_dsr_steps_request_id_dsr_requests"), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        _pk("dsr_steps"),
        sa.UniqueConstraint("request_id", "name", name="uq_dsr_steps_request_id_name"),
    )
    with op.batch_alter_table("dsr_steps") as b:
        b.create_index("ix_dsr_steps_request_id", ["request_id"])

    op.create_table(
        "dsr_systems",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(36),
                  sa.ForeignKey("dsr_requests.id", name="fk_dsr_systems_request_id_dsr_requests"), nullable=False),
        sa.Column("system", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("confirmed_by", sa.String(100), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        _pk("dsr_systems"),
        sa.UniqueConstraint("request_id", "system", name="uq_dsr_systems_request_id_system"),
    )
    with op.batch_alter_table("dsr_systems") as b:
        b.create_index("ix_dsr_systems_request_id", ["request_id"])

    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(80), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=True),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("last_hit_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _pk("suppressions"),
        sa.UniqueConstraint("kind", "hash", name="uq_suppressions_kind_hash"),
    )
    with op.batch_alter_table("suppressions") as b:
        b.create_index("ix_suppressions_hash", ["hash"])
        b.create_index("ix_suppressions_request_id", ["request_id"])

    op.create_table(
        "erasure_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("entry", sa.JSON(), nullable=False),
        sa.Column("reapplied_at", TS, nullable=True),
        _pk("erasure_log"),
        sa.UniqueConstraint("request_id", name="uq_erasure_log_request_id"),
    )

    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(100), nullable=True),
        sa.Column("event_type", sa.String(64), nullable=True),
        sa.Column("legal_basis", sa.String(40), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        _pk("legal_holds"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("template", sa.String(40), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("key_id", sa.String(36), sa.ForeignKey("data_keys.id", name="fk_outbox_key_id_data_keys"),
                  nullable=False),
        sa.Column("recipient_ct", sa.LargeBinary(), nullable=False),
        sa.Column("subject_ct", sa.LargeBinary(), nullable=False),
        sa.Column("body_ct", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        _pk("outbox"),
    )
    with op.batch_alter_table("outbox") as b:
        b.create_index("ix_outbox_request_id", ["request_id"])
        b.create_index("ix_outbox_status", ["status"])

    op.create_table(
        "incidents",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(36), sa.ForeignKey("data_keys.id", name="fk_incidents_key_id_data_keys"),
                  nullable=False),
        sa.Column("title_ct", sa.LargeBinary(), nullable=False),
        sa.Column("description_ct", sa.LargeBinary(), nullable=True),
        sa.Column("measures_ct", sa.LargeBinary(), nullable=True),
        sa.Column("data_categories", sa.JSON(), nullable=False),
        sa.Column("risk", sa.String(16), nullable=False),
        sa.Column("data_encrypted", sa.Boolean(), nullable=False),
        sa.Column("occurred_at", TS, nullable=True),
        sa.Column("detected_at", TS, nullable=False),
        sa.Column("small_agent", sa.Boolean(), nullable=False),
        sa.Column("notification_due", sa.Date(), nullable=False),
        sa.Column("complement_due", sa.Date(), nullable=False),
        sa.Column("notify_decision", sa.String(16), nullable=False),
        sa.Column("anpd_notified_at", TS, nullable=True),
        sa.Column("subjects_notified_at", TS, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("retain_until", sa.Date(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        _pk("incidents"),
    )
    with op.batch_alter_table("incidents") as b:
        b.create_index("ix_incidents_status", ["status"])

    op.create_table(
        "incident_subjects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(36),
                  sa.ForeignKey("incidents.id", name="fk_incident_subjects_incident_id_incidents"), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("found_via", sa.String(32), nullable=False),
        _pk("incident_subjects"),
        sa.UniqueConstraint("incident_id", "profile_id", name="uq_incident_subjects_incident_id_profile_id"),
    )
    with op.batch_alter_table("incident_subjects") as b:
        b.create_index("ix_incident_subjects_incident_id", ["incident_id"])
        b.create_index("ix_incident_subjects_profile_id", ["profile_id"])

    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(36),
                  sa.ForeignKey("incidents.id", name="fk_incident_events_incident_id_incidents"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        _pk("incident_events"),
    )
    with op.batch_alter_table("incident_events") as b:
        b.create_index("ix_incident_events_incident_id", ["incident_id"])

    op.create_table(
        "disclosures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recipient_type", sa.String(16), nullable=False),
        sa.Column("recipient_id", sa.String(100), nullable=False),
        sa.Column("recipient_name", sa.String(200), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("disclosed_at", TS, nullable=False),
        _pk("disclosures"),
    )
    with op.batch_alter_table("disclosures") as b:
        b.create_index("ix_disclosures_profile_id", ["profile_id"])
        b.create_index("ix_disclosures_disclosed_at", ["disclosed_at"])
        b.create_index("ix_disclosures_recipient", ["recipient_type", "recipient_id", "disclosed_at"])
    # DPO console staff accounts (cdp/console/models.py): e-mail as a keyed hash, scrypt password hash.
    op.create_table(
        "staff_users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("email_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
        _pk("staff_users"),
        sa.UniqueConstraint("email_hash", name="uq_staff_users_email_hash"),
    )


def downgrade() -> None:
    for table in ("staff_users", "disclosures", "incident_events", "incident_subjects", "incidents", "outbox", "legal_holds",
                  "erasure_log", "suppressions", "dsr_systems", "dsr_steps", "dsr_events", "dsr_challenges",
                  "dsr_requests"):
        op.drop_table(table)
