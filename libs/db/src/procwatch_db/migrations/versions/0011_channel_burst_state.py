"""channels: the chat burst state (last message time, messages in the current burst)

Kept on the channel row, not in a notifier replica's memory: whichever replica claims a
Slack or Discord channel next paces it from where the previous one left it, so the
service's rate limit holds across replicas and restarts (procwatch_notify.digest).

Revision ID: 0011_channel_burst_state
Revises: 0010_web_sessions
Create Date: 2026-12-01 14:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_channel_burst_state"
down_revision = "0010_web_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("channels", sa.Column("paced_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("channels", sa.Column("burst_streak", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    op.drop_column("channels", "burst_streak")
    op.drop_column("channels", "paced_at")
