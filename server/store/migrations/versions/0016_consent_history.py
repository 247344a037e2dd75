"""The visitor's consent answers: the latest one on their row, and each change in
consent_history (docs/privacy.md).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.add_column(sa.Column("consent", sa.String(16), nullable=True))
    op.create_table(
        "consent_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("shop", sa.String(64), nullable=False),
        sa.Column("visitor_id", sa.String(64), nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("personalization", sa.Boolean, nullable=True),
        sa.Column("analytics", sa.Boolean, nullable=True),
        sa.Column("gpc", sa.Boolean, nullable=False),
    )
    op.create_index("ix_consent_history_shop_visitor", "consent_history", ["shop", "visitor_id"])


def downgrade() -> None:
    op.drop_index("ix_consent_history_shop_visitor", "consent_history")
    op.drop_table("consent_history")
    with op.batch_alter_table("visitors") as batch:
        batch.drop_column("consent")
