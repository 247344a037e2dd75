"""Visitors: the shared measurement id of visitors without a profile (":anonymous") has no
row; the one earlier versions made for it goes (its events stay).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    visitors = sa.table("visitors", sa.column("visitor_id", sa.String))
    op.execute(sa.delete(visitors).where(visitors.c.visitor_id == ":anonymous"))


def downgrade() -> None:
    pass  # earlier versions make the row again with the next batch that needs it
