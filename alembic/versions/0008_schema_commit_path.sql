-- upgrade --
-- Setting schema_diff_at_commit off now means "rated at the first read":
-- the commit records the version (snapshot, hash, deltas) without starting
-- PL/Python (~20 ms of backend CPU at a new session's first DDL), and the
-- first reader rates it with the same module (schema_changes_since(),
-- schema_history(), the client), once. The value stays as installed: on,
-- the diff at commit of DESIGN.md, is the default.
update resilience.settings
set description = 'Diff each migration in PL/Python at its commit (on, the default: the NOTIFY carries '
    || 'the severity). off: the commit never starts PL/Python; the first reader (schema_changes_since, '
    || 'schema_history, the client) rates the version, once'
where name = 'schema_diff_at_commit';

-- downgrade --
update resilience.settings
set description = 'Diff each migration in PL/Python at its commit (on/off); off: the commit never starts '
    || 'PL/Python, versions keep their deltas and readers (the Python client) rate them'
where name = 'schema_diff_at_commit';
