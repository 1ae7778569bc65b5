-- Event triggers that keep the generated capture of managed tables in step
-- with DDL (need superuser; without them, a captured write on a changed
-- table fails with RZ007 until manage_table is run again). They block no DDL
-- but two: a table that cannot be regenerated now gets a warning; no partition
-- is detached while logical transactions hold claims on the table
-- (_release_detached), and no managed table becomes a partition or
-- inheritance child of another table (_refuse_attached).

-- After DDL: regenerate each managed table (the root of a touched partition,
-- the parent of a touched inheritance child) whose shape changed.
create or replace function resilience._managed_ddl_end()
returns event_trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    managed regclass;
begin
    -- Nothing managed (or the package being uninstalled), or this is the
    -- DDL of our own regeneration: nothing to do.
    if pg_catalog.to_regclass('resilience.managed_tables') is null
        or coalesce(pg_catalog.current_setting('resilience.generating', true), '') = 'on'
        or not exists (select 1 from resilience.managed_tables)
    then
        return;
    end if;
    -- A managed table that became a partition or inheritance child of
    -- another table (ATTACH PARTITION names the parent; this transaction
    -- holds the attached table's ACCESS EXCLUSIVE lock): refused
    -- (_refuse_attached).
    perform resilience._refuse_attached(m.relation)
    from resilience.managed_tables as m
    where exists (select 1 from pg_catalog.pg_inherits as h where h.inhrelid = m.relation)
        and (m.relation::oid in (
                select c.objid from pg_catalog.pg_event_trigger_ddl_commands() as c
                where c.classid = 'pg_catalog.pg_class'::regclass)
            or exists (
                select 1 from pg_catalog.pg_locks as l
                where l.pid = pg_catalog.pg_backend_pid() and l.locktype = 'relation'
                    and l.relation = m.relation and l.mode = 'AccessExclusiveLock' and l.granted));
    -- The tables the DDL touched; after a schema or type DDL (ALTER SCHEMA
    -- ... RENAME, ALTER TYPE ... RENAME fire nothing on the table), every
    -- managed table: its shape names its schema and its columns' types.
    for managed in
        select distinct m.relation
        from pg_catalog.pg_event_trigger_ddl_commands() as c
        inner join resilience.managed_tables as m
            on m.relation = coalesce(pg_catalog.pg_partition_root(c.objid::regclass), c.objid::regclass)
        where c.classid = 'pg_catalog.pg_class'::regclass
        union
        -- A table made an inheritance child of a managed one (CREATE TABLE
        -- ... INHERITS, ALTER TABLE ... INHERIT): its parent is refused now.
        select m.relation
        from pg_catalog.pg_event_trigger_ddl_commands() as c
        inner join pg_catalog.pg_inherits as h on h.inhrelid = c.objid
        inner join resilience.managed_tables as m on m.relation = h.inhparent
        where c.classid = 'pg_catalog.pg_class'::regclass
        union
        select m.relation from resilience.managed_tables as m
        where exists (
            select 1 from pg_catalog.pg_event_trigger_ddl_commands() as c
            where c.classid in ('pg_catalog.pg_namespace'::regclass, 'pg_catalog.pg_type'::regclass)
        )
    loop
        -- A partition detached while logical transactions hold claims on
        -- the table: refused (55006), the one DDL this trigger stops
        -- (_release_detached says why, and which DETACH).
        perform resilience._release_detached(managed);
        -- A new shape, or a default set or dropped (the generated insert
        -- function's rows).
        if (select m.shape from resilience.managed_tables as m where m.relation = managed)
            is distinct from resilience._table_shape(managed)
            or (select m.descriptor -> 'insert_required' from resilience.managed_tables as m
                where m.relation = managed) is distinct from (
                select pg_catalog.to_jsonb(c.required) from resilience._insert_columns(managed) as c)
        then
            perform resilience._regenerate(managed);
        end if;
    end loop;
end;
$$;

-- After DROP: a dropped managed table takes its generated objects with it; a
-- dropped partition regenerates its (partitioned) parent.
create or replace function resilience._managed_sql_drop()
returns event_trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    managed regclass;
begin
    -- Nothing managed (or the package being uninstalled), or this is the
    -- DDL of our own regeneration: nothing to do.
    if pg_catalog.to_regclass('resilience.managed_tables') is null
        or coalesce(pg_catalog.current_setting('resilience.generating', true), '') = 'on'
        or not exists (select 1 from resilience.managed_tables)
    then
        return;
    end if;
    for managed in
        select m.relation from resilience.managed_tables as m
        where m.relation::oid in (
            select d.objid from pg_catalog.pg_event_trigger_dropped_objects() as d
            where d.classid = 'pg_catalog.pg_class'::regclass and d.objsubid = 0)
    loop
        perform resilience._forget(managed);
    end loop;
    for managed in
        select m.relation from resilience.managed_tables as m
        inner join pg_catalog.pg_class as c on c.oid = m.relation
        where c.relkind = 'p' and m.shape is distinct from resilience._table_shape(m.relation)
    loop
        perform resilience._regenerate(managed);
    end loop;
end;
$$;

do $$
begin
    drop event trigger if exists resilience_managed_ddl_end;
    create event trigger resilience_managed_ddl_end on ddl_command_end
        execute function resilience._managed_ddl_end();
    alter event trigger resilience_managed_ddl_end enable always;
    drop event trigger if exists resilience_managed_sql_drop;
    create event trigger resilience_managed_sql_drop on sql_drop
        execute function resilience._managed_sql_drop();
    alter event trigger resilience_managed_sql_drop enable always;
end;
$$;
