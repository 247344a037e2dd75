"""A version per shop's catalog, bumped with every change, so workers keep the catalog in memory.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shop_versions",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("catalog", sa.Integer, nullable=False, server_default="0"),
    )
    op.execute("INSERT INTO shop_versions (shop, catalog) SELECT DISTINCT shop, 1 FROM items")


def downgrade() -> None:
    op.drop_table("shop_versions")
