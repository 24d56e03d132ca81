"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-30 11:08:55.042076
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_table('cannot_links',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('profile_a', sa.String(length=36), nullable=False),
    sa.Column('profile_b', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cannot_links')),
    sa.UniqueConstraint('profile_a', 'profile_b', name=op.f('uq_cannot_links_profile_a_profile_b'))
    )
    with op.batch_alter_table('cannot_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cannot_links_profile_a'), ['profile_a'], unique=False)
        batch_op.create_index(batch_op.f('ix_cannot_links_profile_b'), ['profile_b'], unique=False)

    op.create_table('data_keys',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('kek_id', sa.String(length=64), nullable=True),
    sa.Column('wrapped', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_keys'))
    )
    with op.batch_alter_table('data_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_keys_kek_id'), ['kek_id'], unique=False)

    op.create_table('identifier_kinds',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('match', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_identifier_kinds'))
    )
    op.create_table('merge_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('profile_id', sa.String(length=36), nullable=False),
    sa.Column('other_profile_id', sa.String(length=36), nullable=False),
    sa.Column('record_ids', sa.JSON(), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_merge_events'))
    )
    with op.batch_alter_table('merge_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_merge_events_other_profile_id'), ['other_profile_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_merge_events_profile_id'), ['profile_id'], unique=False)

    op.create_table('sources',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('plugin', sa.String(length=100), nullable=False),
    sa.Column('trust', sa.Integer(), nullable=False),
    sa.Column('cursor', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_sources'))
    )
    op.create_table('profiles',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('golden_ct', sa.LargeBinary(), nullable=True),
    sa.Column('provenance', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('merged_into', sa.String(length=36), nullable=True),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['data_keys.id'], name=op.f('fk_profiles_key_id_data_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_profiles'))
    )
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profiles_key_id'), ['key_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profiles_merged_into'), ['merged_into'], unique=False)
        batch_op.create_index(batch_op.f('ix_profiles_status'), ['status'], unique=False)

    op.create_table('source_records',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('external_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('external_id_ct', sa.LargeBinary(), nullable=False),
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('profile_id', sa.String(length=36), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('payload_ct', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('link_rule', sa.String(length=64), nullable=True),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['data_keys.id'], name=op.f('fk_source_records_key_id_data_keys')),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_source_records_profile_id_profiles')),
    sa.ForeignKeyConstraint(['source'], ['sources.name'], name=op.f('fk_source_records_source_sources')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source_records')),
    sa.UniqueConstraint('source', 'external_key', name=op.f('uq_source_records_source_external_key'))
    )
    with op.batch_alter_table('source_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_records_key_id'), ['key_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_source_records_profile_id'), ['profile_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_source_records_source'), ['source'], unique=False)
        batch_op.create_index(batch_op.f('ix_source_records_status'), ['status'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('profile_id', sa.String(length=36), nullable=True),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('attributes_ct', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['record_id'], ['source_records.id'], name=op.f('fk_events_record_id_source_records')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_profile_id'), ['profile_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_record_id'), ['record_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_type'), ['type'], unique=False)

    op.create_table('identifiers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('blind_index', sa.LargeBinary(length=16), nullable=False),
    sa.Column('strong', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['source_records.id'], name=op.f('fk_identifiers_record_id_source_records')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identifiers'))
    )
    with op.batch_alter_table('identifiers', schema=None) as batch_op:
        batch_op.create_index('ix_identifiers_lookup', ['kind', 'blind_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_identifiers_record_id'), ['record_id'], unique=False)

    op.create_table('record_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('payload_ct', sa.LargeBinary(), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['source_records.id'], name=op.f('fk_record_versions_record_id_source_records')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_record_versions'))
    )
    with op.batch_alter_table('record_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_record_versions_record_id'), ['record_id'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('record_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_record_versions_record_id'))

    op.drop_table('record_versions')
    with op.batch_alter_table('identifiers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identifiers_record_id'))
        batch_op.drop_index('ix_identifiers_lookup')

    op.drop_table('identifiers')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_type'))
        batch_op.drop_index(batch_op.f('ix_events_record_id'))
        batch_op.drop_index(batch_op.f('ix_events_profile_id'))

    op.drop_table('events')
    with op.batch_alter_table('source_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_records_status'))
        batch_op.drop_index(batch_op.f('ix_source_records_source'))
        batch_op.drop_index(batch_op.f('ix_source_records_profile_id'))
        batch_op.drop_index(batch_op.f('ix_source_records_key_id'))

    op.drop_table('source_records')
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profiles_status'))
        batch_op.drop_index(batch_op.f('ix_profiles_merged_into'))
        batch_op.drop_index(batch_op.f('ix_profiles_key_id'))

    op.drop_table('profiles')
    op.drop_table('sources')
    with op.batch_alter_table('merge_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_merge_events_profile_id'))
        batch_op.drop_index(batch_op.f('ix_merge_events_other_profile_id'))

    op.drop_table('merge_events')
    op.drop_table('identifier_kinds')
    with op.batch_alter_table('data_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_data_keys_kek_id'))

    op.drop_table('data_keys')
    with op.batch_alter_table('cannot_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cannot_links_profile_b'))
        batch_op.drop_index(batch_op.f('ix_cannot_links_profile_a'))

    op.drop_table('cannot_links')
    op.drop_table('api_keys')
    
