"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 07:53:26.897875
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('msg_id', sa.String(length=200), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_outbox_events_unpublished', 'outbox_events', ['id'], unique=False, postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('plans',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('max_processes_per_server', sa.Integer(), nullable=False),
    sa.Column('retention_days', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    # Plans are a table so operators can edit limits without a deploy.
    op.bulk_insert(
        sa.table("plans", sa.column("name"), sa.column("max_processes_per_server"), sa.column("retention_days")),
        [
            {"name": "hobby", "max_processes_per_server": 3, "retention_days": 1},
            {"name": "pro", "max_processes_per_server": 10, "retention_days": 7},
            {"name": "team", "max_processes_per_server": 25, "retention_days": 30},
            {"name": "scale", "max_processes_per_server": 50, "retention_days": 90},
        ],
    )
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('plan', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['plan'], ['plans.name'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_api_tokens_user_id'), 'api_tokens', ['user_id'], unique=False)
    op.create_table('servers',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('last_agent_version', sa.String(length=64), nullable=True),
    sa.Column('agent_key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_servers_user_id'), 'servers', ['user_id'], unique=False)
    op.create_table('watched_processes',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('server_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('process_name', sa.String(length=100), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('alert_on_down', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('alert_on_restart', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('alert_on_cpu', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('alert_on_memory', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('cpu_threshold_pct', sa.Float(), server_default=sa.text('50'), nullable=False),
    sa.Column('memory_threshold_pct', sa.Float(), server_default=sa.text('25'), nullable=False),
    sa.Column('last_count', sa.Integer(), nullable=True),
    sa.Column('last_cpu_pct', sa.Float(), nullable=True),
    sa.Column('last_memory_pct', sa.Float(), nullable=True),
    sa.Column('last_sample_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_oldest_start_unix', sa.BigInteger(), nullable=True),
    sa.Column('alerted_state', sa.String(length=32), nullable=True),
    sa.Column('samples_total', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('server_id', 'process_name', name='uq_watched_processes_server_name')
    )
    op.create_table('alerts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('watched_process_id', sa.BigInteger(), nullable=False),
    sa.Column('server_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolve_reason', sa.String(length=64), nullable=True),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['watched_process_id'], ['watched_processes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id')
    )
    op.create_index('ix_alerts_process_newest', 'alerts', ['watched_process_id', 'id'], unique=False)
    op.create_index('uq_alerts_open_episode', 'alerts', ['watched_process_id', 'type'], unique=True, postgresql_where=sa.text("resolved_at IS NULL AND type <> 'process_restarted'"))
    op.create_table('process_samples',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('watched_process_id', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('cpu_pct', sa.Float(), nullable=False),
    sa.Column('memory_pct', sa.Float(), nullable=False),
    sa.Column('oldest_start_unix', sa.BigInteger(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['watched_process_id'], ['watched_processes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('watched_process_id', 'recorded_at', name='uq_process_samples_process_time')
    )


def downgrade() -> None:
    op.drop_table('process_samples')
    op.drop_index('uq_alerts_open_episode', table_name='alerts', postgresql_where=sa.text("resolved_at IS NULL AND type <> 'process_restarted'"))
    op.drop_index('ix_alerts_process_newest', table_name='alerts')
    op.drop_table('alerts')
    op.drop_table('watched_processes')
    op.drop_index(op.f('ix_servers_user_id'), table_name='servers')
    op.drop_table('servers')
    op.drop_index(op.f('ix_api_tokens_user_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('plans')
    op.drop_index('ix_outbox_events_unpublished', table_name='outbox_events', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox_events')
