"""The dashboard's users: their password hashes and the shops each may see; each audience's
size once a day (docs/dashboard.md).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("email", sa.String(254), primary_key=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "admin_user_shops",
        sa.Column("email", sa.String(254), primary_key=True),
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("added_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_admin_user_shops_shop", "admin_user_shops", ["shop"])
    op.create_table(
        "audience_snapshots",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("audience", sa.String(64), primary_key=True),
        sa.Column("visitors", sa.Integer, nullable=False),
        sa.Column("counted_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audience_snapshots")
    op.drop_index("ix_admin_user_shops_shop", "admin_user_shops")
    op.drop_table("admin_user_shops")
    op.drop_table("admin_users")
