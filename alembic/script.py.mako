"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from alembic import op

from pgresilience.queries import revision_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

# This revision's SQL: its own file beside it (same name, .sql), blocks
# "upgrade" and "downgrade". A released revision's file never changes.
SQL = revision_sql(__file__)


def upgrade() -> None:
    op.execute(SQL["upgrade"])


def downgrade() -> None:
    op.execute(SQL["downgrade"])
