"""Coupon pools: a cap on a percentage's discount ("50% up to 500") and free shipping
("20 off and free shipping"), docs/promotions.md.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("coupon_pools") as batch:
        batch.add_column(sa.Column("max_discount", sa.Float, nullable=True))
        batch.add_column(sa.Column("free_shipping", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("coupon_pools") as batch:
        batch.drop_column("free_shipping")
        batch.drop_column("max_discount")
