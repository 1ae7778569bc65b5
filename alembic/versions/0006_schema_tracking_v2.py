"""Schema tracking v2: where the snapshot was taken; compiled PL/Python modules.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# A revision carries the SQL it applies: never read a file that later edits
# could change.
UPGRADE = r"""
-- The catalog the snapshot's OIDs belong to, and the snapshot's format. A
-- restore (pg_dump/pg_restore) or a pg_upgrade brings the snapshot into a
-- catalog where its OIDs mean nothing (or other objects); a new release may
-- read more per object. Either way the next fold first re-keys the snapshot
-- (by name, or by OID for a format change) instead of reporting phantom
-- drops. One row; empty until the first fold after this revision.
create table resilience.schema_catalog (
    singleton boolean primary key default true check (singleton),
    system_identifier bigint not null,
    database_oid oid not null,
    -- The OID of this very table: another one after any restore, even into
    -- a cluster whose identifiers happen to match.
    table_oid oid not null,
    snapshot_format integer not null check (snapshot_format > 0)
);

-- A module's compiled code (marshal), so that a new session loads it instead
-- of compiling the source again (that compile is paid at the first DDL's
-- commit). Written by the plpython3u loaders; bytecode_key says for which
-- source (SHA-256) and which Python (cache tag) it is valid.
alter table resilience.plpython_modules
add column bytecode bytea,
add column bytecode_key text;

insert into resilience.settings (name, value, description) values
    ('schema_diff_at_commit', 'on',
        'Diff each migration in PL/Python at its commit (on/off); off: the commit never starts '
        || 'PL/Python, versions keep their deltas and readers (the Python client) rate them')
on conflict (name) do nothing;
"""

DOWNGRADE = r"""
delete from resilience.settings where name = 'schema_diff_at_commit';
drop table if exists resilience.schema_catalog;
alter table resilience.plpython_modules
drop column if exists bytecode,
drop column if exists bytecode_key;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
