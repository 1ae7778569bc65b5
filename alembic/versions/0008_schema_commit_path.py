"""Schema tracking: setting schema_diff_at_commit off means "rated at the first read".

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from alembic import op

from pgresilience.queries import revision_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# This revision's SQL: its own file beside it (same name, .sql), blocks
# "upgrade" and "downgrade". A released revision's file never changes.
SQL = revision_sql(__file__)


def upgrade() -> None:
    op.execute(SQL["upgrade"])


def downgrade() -> None:
    op.execute(SQL["downgrade"])
