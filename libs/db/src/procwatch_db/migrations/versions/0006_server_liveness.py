"""servers: liveness (last_seen_at, offline deadline, settings); alerts: server-level rows

Issue 15. servers gains
- last_seen_at: broker time of the newest authenticated agent message (ingest writes it);
- offline_deadline_at = last_seen_at + offline_after_s (kept by whoever writes either), found by
  the partial index ix_servers_offline_due: the alerter's job reads only servers that are due;
- offline_since: the last_seen_at at which the alerter declared the server offline (NULL while it
  is not), so the job fires once per episode and knows recovery (last_seen_at > offline_since);
- offline_after_s (30 by default, 1..86400 here; the API allows 30..86400) and alert_on_offline.
alerts gains server-level rows: watched_process_id NULL (server_offline), with the hostname at
firing time (a deleted server's "resolved" event still names it), one open episode per server
(uq_alerts_open_server_episode) and the history index of GET /servers/{id}/alerts.

Revision ID: 0006_server_liveness
Revises: 0005_plan_max_servers
Create Date: 2026-12-01 13:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_server_liveness"
down_revision = "0005_plan_max_servers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("servers", sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("servers", sa.Column("offline_deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("servers", sa.Column("offline_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("servers", sa.Column("offline_after_s", sa.Integer(), nullable=False, server_default="30"))
    op.add_column("servers", sa.Column("alert_on_offline", sa.Boolean(), nullable=False, server_default="true"))
    op.create_check_constraint("ck_servers_offline_after_s", "servers", "offline_after_s between 1 and 86400")
    op.create_index("ix_servers_offline_due", "servers", ["offline_deadline_at"],
                    postgresql_where=sa.text("offline_since IS NULL AND alert_on_offline"))
    op.create_index("ix_servers_offline_declared", "servers", ["id"],
                    postgresql_where=sa.text("offline_since IS NOT NULL"))

    op.alter_column("alerts", "watched_process_id", nullable=True)
    op.add_column("alerts", sa.Column("hostname", sa.String(255), nullable=True))
    op.create_index("uq_alerts_open_server_episode", "alerts", ["server_id", "type"], unique=True,
                    postgresql_where=sa.text("resolved_at IS NULL AND watched_process_id IS NULL"))
    op.create_index("ix_alerts_server_newest", "alerts", ["server_id", "id"],
                    postgresql_where=sa.text("watched_process_id IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_alerts_server_newest", table_name="alerts")
    op.drop_index("uq_alerts_open_server_episode", table_name="alerts")
    op.execute("delete from alerts where watched_process_id is null")
    op.drop_column("alerts", "hostname")
    op.alter_column("alerts", "watched_process_id", nullable=False)
    op.drop_index("ix_servers_offline_declared", table_name="servers")
    op.drop_index("ix_servers_offline_due", table_name="servers")
    op.drop_constraint("ck_servers_offline_after_s", "servers")
    for column in ("alert_on_offline", "offline_after_s", "offline_since", "offline_deadline_at", "last_seen_at"):
        op.drop_column("servers", column)
