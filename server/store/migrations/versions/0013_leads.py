"""Leads: e-mail sign-ups from popups (POST /v1/leads), linked to the visitor only with consent.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("shop", sa.String(64), nullable=False),
        sa.Column("visitor_id", sa.String(64), nullable=True),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("opt_in", sa.Boolean, nullable=False),
        sa.Column("birthday", sa.String(10), nullable=True),
        sa.Column("interests", sa.Text, nullable=False, server_default=""),
        sa.Column("ts", sa.DateTime, nullable=False),
    )
    op.create_index("ix_leads_shop_visitor", "leads", ["shop", "visitor_id"])
    op.create_index("ix_leads_shop_ts", "leads", ["shop", "ts"])


def downgrade() -> None:
    op.drop_index("ix_leads_shop_ts", "leads")
    op.drop_index("ix_leads_shop_visitor", "leads")
    op.drop_table("leads")
