"""Forgotten visitors: the hashed ids of visitors deleted at their own request, so that
what is still on its way with their old token does not make them again.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forgotten_visitors",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("visitor_hash", sa.String(64), primary_key=True),
        sa.Column("forgotten_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forgotten_visitors")
