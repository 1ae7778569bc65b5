"""Schema version tracking: versions, snapshots, pending DDL, changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# A revision carries the SQL it applies: never read a file that later edits
# could change.
UPGRADE = r"""
select 1;
"""

0002GRADE = r"""
select 1;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(0002GRADE)
