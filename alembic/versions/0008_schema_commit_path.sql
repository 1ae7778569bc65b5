-- upgrade --
-- Starting PL/Python and loading the diff module cost a new session ~20 ms of
-- backend CPU at its first DDL's commit, paid once per file by migration
-- tools that run one client process per file (issue 12: +10 ms at most). The
-- commit now records the version (snapshot, hash, deltas) and the first
-- reader rates it with the same module (schema_changes_since(),
-- schema_history(), the client). 'on' restores the diff at commit.
update resilience.settings
set value = 'off',
    description = 'Diff each migration in PL/Python at its commit (on/off). off (default): the '
    || 'commit never starts PL/Python; the first reader (schema_changes_since, schema_history, '
    || 'the client) rates the version, once'
where name = 'schema_diff_at_commit' and value = 'on';

-- downgrade --
update resilience.settings
set value = 'on',
    description = 'Diff each migration in PL/Python at its commit (on/off); off: the commit never starts '
    || 'PL/Python, versions keep their deltas and readers (the Python client) rate them'
where name = 'schema_diff_at_commit';
