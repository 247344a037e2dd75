"""Coupons: pools and their rules, codes, the codes issued to visitors, and every
redemption attempt (docs/promotions.md).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

REDEEMED_ONCE = "result = 'ok' AND NOT replay"


def upgrade() -> None:
    op.create_table(
        "coupon_pools",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("min_order", sa.Float, nullable=True),
        sa.Column("starts_at", sa.DateTime, nullable=True),
        sa.Column("expires_at", sa.DateTime, nullable=True),
        sa.Column("uses_per_code", sa.Integer, nullable=False, server_default="1"),
        sa.Column("uses_per_customer", sa.Integer, nullable=True),
        sa.Column("budget", sa.Integer, nullable=True),
        sa.Column("redeemed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("categories", sa.Text, nullable=False, server_default=""),
        sa.Column("items", sa.Text, nullable=False, server_default=""),
        sa.Column("audience", sa.String(64), nullable=False, server_default=""),
        sa.Column("reveal", sa.String(8), nullable=False, server_default="shop"),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "coupon_codes",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("display", sa.String(80), nullable=False),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_uses", sa.Integer, nullable=False, server_default="1"),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_coupon_codes_unissued", "coupon_codes", ["shop", "pool", "issued_at"])
    op.create_table(
        "coupon_issues",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("visitor_id", sa.String(64), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("shop", "code", name="uq_coupon_issues_code"),
    )
    op.create_index("ix_coupon_issues_visitor", "coupon_issues", ["shop", "visitor_id"])
    op.create_table(
        "coupon_redemptions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("shop", sa.String(64), nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("pool", sa.String(64), nullable=True),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("order_value", sa.Float, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("visitor_id", sa.String(64), nullable=True),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("replay", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("discount", sa.Float, nullable=True),
        sa.Column("discount_base", sa.Float, nullable=True),
    )
    op.create_index("ix_coupon_redemptions_shop_ts", "coupon_redemptions", ["shop", "ts"])
    op.create_index("ix_coupon_redemptions_order", "coupon_redemptions", ["shop", "code", "order_id"])
    op.create_index("ix_coupon_redemptions_customer", "coupon_redemptions", ["shop", "pool", "customer_id"])
    op.create_index("ix_coupon_redemptions_visitor", "coupon_redemptions", ["shop", "visitor_id"])
    op.create_index(
        "uq_coupon_redemptions_once", "coupon_redemptions", ["shop", "code", "order_id"], unique=True,
        sqlite_where=sa.text(REDEEMED_ONCE), postgresql_where=sa.text(REDEEMED_ONCE),
    )


def downgrade() -> None:
    op.drop_table("coupon_redemptions")
    op.drop_table("coupon_issues")
    op.drop_table("coupon_codes")
    op.drop_table("coupon_pools")
