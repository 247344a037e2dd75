"""Visitors: what audiences read without the state (the latest visit's page views, landing
page, referrer, source and campaign; the cart's newest line and the first sign-up), filled
in from the stored states.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = (
    ("visit_page_views", sa.Integer, dict(nullable=False, server_default="0")),
    ("previous_seen", sa.DateTime, dict(nullable=True)),
    ("landing_page", sa.String(512), dict(nullable=False, server_default="")),
    ("referrer_domain", sa.String(255), dict(nullable=False, server_default="")),
    ("source_name", sa.String(128), dict(nullable=False, server_default="")),
    ("utm_campaign", sa.String(128), dict(nullable=False, server_default="")),
    ("cart_at", sa.DateTime, dict(nullable=True)),
    ("signed_up_at", sa.DateTime, dict(nullable=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        for name, type_, options in COLUMNS:
            batch.add_column(sa.Column(name, type_, **options))
    # The states stored before this revision have no cart lines and no sign-up: they are
    # made again from the events (cart adds, removals, purchases, sign-ups and logins).
    from server.store.sql import rebuild_visitor_states

    rebuild_visitor_states(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        for name, _, _ in reversed(COLUMNS):
            batch.drop_column(name)
