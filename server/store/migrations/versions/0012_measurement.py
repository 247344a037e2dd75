"""Measurement: the rollup job's mark in the events, counters by hour and day, the visitors
of each experiment and each variant's totals (docs/measurement.md).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _counts(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.Integer, nullable=False, server_default="0") for n in names]


def _sums(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.Float, nullable=False, server_default="0") for n in names]


def upgrade() -> None:
    op.create_table(
        "rollup_marks",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("last_event_id", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "rollups",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(4), primary_key=True),
        sa.Column("start", sa.DateTime, primary_key=True),
        sa.Column("dimension", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        *_counts("page_views", "impressions", "clicks", "closes", "orders"),
        *_sums("revenue"),
        *_counts("view_orders"),
        *_sums("view_revenue"),
        *_counts("visitors"),
    )
    op.create_table(
        "experiment_visitors",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("experiment", sa.String(64), primary_key=True),
        sa.Column("visitor_id", sa.String(64), primary_key=True),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("exposed_at", sa.DateTime, nullable=False),
        *_counts("orders"),
        *_sums("revenue"),
    )
    op.create_index("ix_experiment_visitors_visitor", "experiment_visitors", ["shop", "visitor_id"])
    op.create_table(
        "experiment_totals",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("experiment", sa.String(64), primary_key=True),
        sa.Column("variant", sa.String(64), primary_key=True),
        *_counts("visitors", "conversions", "orders"),
        *_sums("revenue", "revenue_sq"),
        sa.Column("first_exposed", sa.DateTime, nullable=True),
        sa.Column("last_exposed", sa.DateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("experiment_totals")
    op.drop_index("ix_experiment_visitors_visitor", "experiment_visitors")
    op.drop_table("experiment_visitors")
    op.drop_table("rollups")
    op.drop_table("rollup_marks")
