"""Known customers: the shop's secret key version, imported customers' own details, the
link of a web visitor to the customer they identified as, and the audience webhooks' member
snapshots and deliveries.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shop_keys",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rotated_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "customers",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("visitor_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("email", sa.String(320), nullable=False, server_default=""),
        sa.Column("email_sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("first_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("signed_up_at", sa.DateTime, nullable=True),
        sa.Column("birthday", sa.Date, nullable=True),
        sa.Column("customer_group", sa.String(64), nullable=False, server_default=""),
        sa.Column("marketing_consent", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("imported_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "audience_members",
        sa.Column("shop", sa.String(64), primary_key=True),
        sa.Column("hook", sa.String(32), primary_key=True),
        sa.Column("visitor_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("joined_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("shop", sa.String(64), nullable=False),
        sa.Column("hook", sa.String(32), nullable=False),
        sa.Column("audience", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("visitor_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_shop", "shop", "id"),
        sa.Index("ix_webhook_deliveries_visitor", "shop", "visitor_id"),
    )
    with op.batch_alter_table("visitors") as batch:
        batch.add_column(sa.Column("identified_as", sa.String(64), nullable=True))
        batch.create_index("ix_visitors_identified_as", ["shop", "identified_as"])


def downgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.drop_index("ix_visitors_identified_as")
        batch.drop_column("identified_as")
    op.drop_table("webhook_deliveries")
    op.drop_table("audience_members")
    op.drop_table("customers")
    op.drop_table("shop_keys")
