"""The visitor state beside the counters: recent events and closed campaigns, as JSON.

Requests read it instead of the visitor's events. Existing visitors get theirs built from
the events they have (newest first), so nobody's recommendations start over.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.add_column(sa.Column("state", sa.JSON, nullable=True))
    from server.store.sql import rebuild_visitor_states

    rebuild_visitor_states(op.get_bind(), columns=False)  # the columns beside the state come in 0009


def downgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.drop_column("state")
