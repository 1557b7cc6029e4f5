"""plans.max_servers: how many servers a user of the plan may have

The per-user server limit, editable in the plans table like the per-server
process limit. Seeded per plan: hobby 5, pro 25, team 100, scale 500 (a frozen
copy of procwatch_db.tables.PLANS at the time of this migration). Plans added
by an operator since get 25 and can be edited.

Revision ID: 0005_plan_max_servers
Revises: 0004_sample_id_blocks
Create Date: 2026-12-01 12:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_plan_max_servers"
down_revision = "0004_sample_id_blocks"
branch_labels = None
depends_on = None

SEEDED = {"hobby": 5, "pro": 25, "team": 100, "scale": 500}


def upgrade() -> None:
    op.add_column("plans", sa.Column("max_servers", sa.Integer(), nullable=False, server_default="25"))
    for name, max_servers in SEEDED.items():
        op.execute(sa.text("update plans set max_servers = :n where name = :name").bindparams(n=max_servers, name=name))
    # Like max_processes_per_server: a new plan states its limit.
    op.alter_column("plans", "max_servers", server_default=None)


def downgrade() -> None:
    op.drop_column("plans", "max_servers")
