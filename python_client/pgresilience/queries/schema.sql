-- schema_current --
-- The current schema version with its tables: {"version", "hash", "taken_at", "tables"}.
select resilience.schema_current();

-- schema_refresh --
-- Full re-snapshot; records what changed while DDL was not tracked.
select resilience.schema_refresh();

-- schema_history --
-- Versions, newest first.
select resilience.schema_history(%s);

-- schema_changes_since --
-- Every version after the given one, oldest first, with its changes (or its deltas).
select resilience.schema_changes_since(%s);

-- schema_listen --
listen resilience_schema;

-- server_port --
-- The port the server listens on (null over a Unix socket): not the one we
-- connected to means a pooler or proxy in between.
select inet_server_port();

-- schema_unlisten --
unlisten resilience_schema;

-- schema_status --
-- Latest version and tracking settings for `pgresilience status`.
select
    (select resilience.schema_history(1) limit 1),
    (select count(*) from resilience.schema_versions),
    resilience._setting('schema_tracking'),
    resilience._setting('notify_postgrest'),
    (select count(*) from pg_event_trigger where evtname like 'resilience_schema_%' and evtenabled <> 'D');
