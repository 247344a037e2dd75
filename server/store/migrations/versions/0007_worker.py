"""Background jobs: the worker's lease, and popular searches counted by the worker.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    # Empty until the worker's first run: meanwhile an empty box suggests categories.
    op.create_table(
        "popular_searches",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("rank", sa.Integer, primary_key=True),
        sa.Column("term", sa.Text, nullable=False),
        sa.Column("visitors", sa.Integer, nullable=False),
        sa.Column("computed_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("popular_searches")
    op.drop_table("worker_leases")
