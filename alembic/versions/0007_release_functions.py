"""Release bookkeeping: the functions the installed release defined.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from alembic import op

from pgresilience.queries import revision_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# This revision's SQL: its own file beside it (same name, .sql), blocks
# "upgrade" and "downgrade". A released revision's file never changes.
SQL = revision_sql(__file__)


def upgrade() -> None:
    op.execute(SQL["upgrade"])


def downgrade() -> None:
    op.execute(SQL["downgrade"])
