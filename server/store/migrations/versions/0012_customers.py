"""Known customers: the shop's secret key version, imported customers' own details, and the
link of a web visitor to the customer they identified as.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
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
    with op.batch_alter_table("visitors") as batch:
        batch.add_column(sa.Column("identified_as", sa.String(64), nullable=True))
        batch.create_index("ix_visitors_identified_as", ["shop", "identified_as"])


def downgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.drop_index("ix_visitors_identified_as")
        batch.drop_column("identified_as")
    op.drop_table("customers")
    op.drop_table("shop_keys")
