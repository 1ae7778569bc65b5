"""Logical transactions: transactions, restore points, claims, savepoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# A revision carries the SQL it applies: never read a file that later edits
# could change.
UPGRADE = r"""
select 1;
"""

0001GRADE = r"""
select 1;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(0001GRADE)
