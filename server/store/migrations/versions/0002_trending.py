"""Trending scores: time-decayed popularity per item, for the whole shop and per country.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_trends",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(80), primary_key=True),
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("log_score", sa.Float, nullable=False),
    )
    op.create_index("ix_item_trends_rank", "item_trends", ["shop", "scope", "log_score"])


def downgrade() -> None:
    op.drop_table("item_trends")
