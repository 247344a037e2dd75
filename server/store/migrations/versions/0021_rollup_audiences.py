"""Rollups: a carts counter (add to cart, in all and credited to what was clicked before it
within the click window), for the dashboard's funnel; the audience dimension needs no column
(docs/measurement.md#rollups).

Revision ID: 0021
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollups") as batch:
        batch.add_column(sa.Column("carts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rollups") as batch:
        batch.drop_column("carts")
