"""B2B: price lists per customer group with quantity tiers, the items a group may not buy,
and the version workers reload them by (docs/b2b.md).

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "group_prices",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("customer_group", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("min_quantity", sa.Integer, primary_key=True),
        sa.Column("price", sa.Float, nullable=False),
    )
    op.create_table(
        "group_restrictions",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("customer_group", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(128), primary_key=True),
    )
    op.create_table(
        "price_list_versions",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("imported_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("price_list_versions")
    op.drop_table("group_restrictions")
    op.drop_table("group_prices")
