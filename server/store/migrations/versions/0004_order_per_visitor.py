"""A purchase counts once per order of each visitor: a unique index on (shop, visitor, order).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PURCHASE_WITH_ORDER = "type = 'purchase' AND order_id IS NOT NULL"


def upgrade() -> None:
    # The old check-then-insert could let two concurrent requests store the same order of
    # one visitor twice; keep the oldest of each so that the unique index can be built.
    op.execute(
        f"DELETE FROM events WHERE {PURCHASE_WITH_ORDER} AND EXISTS ("
        "SELECT 1 FROM events AS older WHERE older.shop = events.shop"
        " AND older.visitor_id = events.visitor_id AND older.order_id = events.order_id"
        " AND older.type = 'purchase' AND older.id < events.id)"
    )
    op.create_index(
        "uq_events_order",
        "events",
        ["shop", "visitor_id", "order_id"],
        unique=True,
        sqlite_where=sa.text(PURCHASE_WITH_ORDER),
        postgresql_where=sa.text(PURCHASE_WITH_ORDER),
    )


def downgrade() -> None:
    op.drop_index("uq_events_order", table_name="events")
