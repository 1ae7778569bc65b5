-- upgrade --
-- One row per schema version. A version is one committed database transaction
-- that changed tracked objects (origin 'ddl'), a schema_refresh() that found
-- drift ('refresh'), or the snapshot taken at install ('baseline').
create table resilience.schema_versions (
    version bigint primary key check (version > 0),
    hash text not null check (hash ~ '^[0-9a-f]{64}$'),
    taken_at timestamptz not null default clock_timestamp(),
    origin text not null check (origin in ('baseline', 'ddl', 'refresh')),
    actor_role text not null,
    object_count integer not null check (object_count >= 0),
    commands text[] not null default '{}',
    tables text[] not null default '{}',
    -- 'database': changes computed by PL/Python at commit; 'client': plpython3u
    -- missing, the client computes them from schema_deltas with the same module.
    diffed_in text not null check (diffed_in in ('database', 'client')),
    changes jsonb check (changes is null or jsonb_typeof(changes) = 'array'),
    change_count integer check (change_count >= 0),
    max_severity text check (max_severity in ('low', 'medium', 'high', 'critical')),
    check ((changes is null) = (diffed_in = 'client')),
    check ((changes is null) = (change_count is null))
);

-- The current snapshot: one row per tracked object, keyed by identity
-- (relation/constraint/index/policy/function/type OID, column attnum), so a
-- rename keeps its row. `data` is the OID-free canonical JSON that is hashed.
create table resilience.schema_objects (
    kind text not null check (kind in (
        'table', 'column', 'constraint', 'index', 'policy', 'view', 'function', 'enum'
    )),
    object_oid oid not null,
    sub_id integer not null default 0 check (sub_id >= 0),
    table_oid oid,
    data jsonb not null,
    -- hex SHA-256 of kind:data (a length check: a regex costs too much per row)
    hash text collate "C" not null check (octet_length(hash) = 64),
    -- object_oid first: a dropped object is looked up by its OID alone
    primary key (object_oid, sub_id, kind),
    check ((kind in ('function', 'enum')) = (table_oid is null))
);
-- Objects are hashed in groups: a relation with everything on it, or one
-- function or enum type.
create index schema_objects_group_idx on resilience.schema_objects ((coalesce(table_oid, object_oid)));

-- One row per group: SHA-256 over its objects' sorted hashes. The schema hash
-- is SHA-256 over the sorted group hashes, so a DDL statement re-hashes its
-- own tables and then reads one hash per table (not one per object).
create table resilience.schema_groups (
    group_oid oid primary key,
    hash text collate "C" not null check (octet_length(hash) = 64)
);
create index schema_groups_hash_idx on resilience.schema_groups (hash);

-- What each version changed, object by object (old and new canonical JSON):
-- the input of the diff, kept so the client can diff where PL/Python is missing.
-- Written before its version row within the fold (hence the deferrable key,
-- checked by the fold itself once the version row exists).
create table resilience.schema_deltas (
    version bigint not null,
    kind text not null,
    object_oid oid not null,
    sub_id integer not null,
    table_oid oid,
    old_data jsonb,
    new_data jsonb,
    new_hash text,
    primary key (version, kind, object_oid, sub_id),
    constraint schema_deltas_version_fkey foreign key (version)
    references resilience.schema_versions (version) on delete cascade
    deferrable initially deferred,
    check (old_data is not null or new_data is not null),
    check ((new_data is null) = (new_hash is null))
);

-- One row per database transaction that ran tracked DDL, written by the event
-- triggers at its first tracked DDL statement. Its deferred constraint trigger
-- fires once, at commit, and folds the transaction's DDL into one version.
-- The touched objects themselves are collected in transaction-local settings
-- (resilience.schema_pending_<n>), not rows: a row per statement would give
-- every DDL statement its own subtransaction XID.
create table resilience.schema_pending (
    tx bigint primary key,
    first_ddl_at timestamptz not null default clock_timestamp()
);

insert into resilience.settings (name, value, description) values
    ('schema_tracking', 'on', 'Record DDL into schema versions (on/off); off: call schema_refresh() to catch up'),
    ('schema_tracked_schemas', '*', 'Comma-separated schemas to track, or * for every user schema'),
    ('schema_ignored_schemas',
        'auth,storage,realtime,_realtime,supabase_functions,supabase_migrations,extensions,'
        || 'graphql,graphql_public,net,pgsodium,pgsodium_masks,vault,pgbouncer,_analytics,cron',
        'Schemas never tracked (besides resilience, pg_* and information_schema)')
on conflict (name) do nothing;

-- downgrade --
-- The event triggers write into these tables: drop them first (they exist
-- only where the installer was superuser).
drop event trigger if exists resilience_schema_ddl_end; -- noqa: PRS
drop event trigger if exists resilience_schema_sql_drop; -- noqa: PRS
drop table if exists resilience.schema_pending cascade;
drop table if exists resilience.schema_deltas cascade;
drop table if exists resilience.schema_groups cascade;
drop table if exists resilience.schema_objects cascade;
drop table if exists resilience.schema_versions cascade;
delete from resilience.settings
where name in ('schema_tracking', 'schema_tracked_schemas', 'schema_ignored_schemas');
