"""Searches and zero-result searches per shop, day and term (docs/search.md#searches-that-find-nothing);
the dashboard's failed sign-ins, shared by every server process (docs/dashboard.md#users).

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_counts",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("term", sa.String(100), primary_key=True),
        sa.Column("searches", sa.Integer, nullable=False),
        sa.Column("zero_results", sa.Integer, nullable=False),
    )
    op.create_table(
        "admin_sign_in_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("failed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_admin_sign_in_failures_key", "admin_sign_in_failures", ["key", "failed_at"])
    op.create_index("ix_admin_sign_in_failures_failed_at", "admin_sign_in_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_sign_in_failures_failed_at", "admin_sign_in_failures")
    op.drop_index("ix_admin_sign_in_failures_key", "admin_sign_in_failures")
    op.drop_table("admin_sign_in_failures")
    op.drop_table("search_counts")
