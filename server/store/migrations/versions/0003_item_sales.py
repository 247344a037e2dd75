"""Sales counts per item, kept with each purchase, so bestsellers need no scan of the events.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_sales",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("purchases", sa.Integer, nullable=False),
    )
    op.create_index("ix_item_sales_rank", "item_sales", ["shop", "purchases"])
    # Existing shops: count what is already there (each order line once).
    op.execute(
        "INSERT INTO item_sales (shop, item_id, purchases) "
        "SELECT shop, item_id, count(*) FROM events WHERE type = 'purchase' AND item_id IS NOT NULL "
        "GROUP BY shop, item_id"
    )


def downgrade() -> None:
    op.drop_table("item_sales")
