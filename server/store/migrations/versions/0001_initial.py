"""Initial schema: items, visitors, events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("category", sa.Text, nullable=False, server_default=""),
        sa.Column("brand", sa.Text, nullable=False, server_default=""),
        sa.Column("price", sa.Float, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("url", sa.Text, nullable=False, server_default=""),
        sa.Column("image_url", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", sa.Text, nullable=False, server_default=""),
        sa.Column("in_stock", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_items_shop_category", "items", ["shop", "category"])
    op.create_table(
        "visitors",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("visitor_id", sa.String(64), primary_key=True),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
        sa.Column("visits", sa.Integer, nullable=False, server_default="1"),
        sa.Column("page_views", sa.Integer, nullable=False, server_default="0"),
        sa.Column("orders", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
        sa.Column("last_order_at", sa.DateTime, nullable=True),
        sa.Column("country", sa.String(64), nullable=False, server_default=""),
        sa.Column("device_class", sa.String(16), nullable=False, server_default=""),
        sa.Column("source", sa.String(16), nullable=False, server_default=""),  # medium of this visit
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("shop", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("visitor_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("item_id", sa.String(128), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("order_id", sa.String(128), nullable=True),
        sa.Column("campaign", sa.String(128), nullable=True),
        sa.Column("props", sa.JSON, nullable=True),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("shop", "event_id", name="uq_events_shop_event_id"),
    )
    op.create_index("ix_events_visitor", "events", ["shop", "visitor_id", "ts"])
    op.create_index("ix_events_type", "events", ["shop", "type", "ts"])
    op.create_index("ix_events_item", "events", ["shop", "item_id"])
    op.create_index("ix_events_order", "events", ["shop", "order_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("visitors")
    op.drop_table("items")
