"""orders.status NOT NULL, total widened

Revision ID: a3
Revises: a2
"""

import sqlalchemy as sa
from alembic import op

revision = "a3"
down_revision = "a2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("status", sa.Text, nullable=False, server_default="new"))
    op.alter_column("orders", "total", type_=sa.Numeric(12, 2))


def downgrade() -> None:
    op.drop_column("orders", "status")
    op.alter_column("orders", "total", type_=sa.Numeric(10, 2))
