-- Event triggers of schema version tracking (need superuser; the installer
-- skips this file with a message where it is not permitted).
-- Both only remember the touched objects (resilience._schema_remember); the
-- deferred constraint trigger on resilience.schema_pending folds them into one
-- version at commit. They catch every error of their own: tracking must never
-- block DDL.

-- Is this transaction pgresilience's own installer (it holds the install
-- advisory lock)? Its DDL (rpc() wrappers...) is not a schema change, and a
-- pending commit-time trigger would stop it from altering our tables.
-- Asked once per transaction, at its first tracked DDL.
create or replace function resilience._schema_in_installer()
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
    select exists (
        select from pg_catalog.pg_locks as l
        where l.locktype = 'advisory' and l.pid = pg_catalog.pg_backend_pid() and l.objsubid = 1
            and l.granted
            and l.objid = (pg_catalog.hashtext('pgresilience-install')::bigint operator(pg_catalog.&) 4294967295)::oid
            and l.classid = ((pg_catalog.hashtext('pgresilience-install')::bigint operator(pg_catalog.>>) 32)
                operator(pg_catalog.&) 4294967295)::oid
    );
$$;

-- Remember the objects one DDL statement touched ("classid,objid,tag;..."),
-- in transaction-local settings so that a savepoint rollback forgets them
-- too. Chunks of ~32 kB (resilience.schema_pending_1, _2, ...) keep each
-- append cheap in a migration of thousands of statements. The first tracked
-- statement of a transaction writes its row in resilience.schema_pending,
-- whose deferred trigger folds everything at commit. No SECURITY DEFINER nor
-- SET clause (each costs on every DDL): its callers are, names are qualified.
create or replace function resilience._schema_remember(entries text)
returns void
language plpgsql
volatile
as $$
declare
    chunk integer := coalesce(nullif(pg_catalog.current_setting('resilience.schema_pending_n', true), '')::integer, 0);
    collected text;
begin
    if chunk = 0 then
        if resilience._schema_in_installer() then
            perform pg_catalog.set_config('resilience.installing', 'on', true);
            return;
        end if;
        insert into resilience.schema_pending (tx) values (pg_catalog.txid_current())
        on conflict do nothing;
        chunk := 1;
        perform pg_catalog.set_config('resilience.schema_pending_n', '1', true);
    end if;
    collected := coalesce(pg_catalog.current_setting('resilience.schema_pending_' || chunk, true), '');
    if pg_catalog.length(collected) operator(pg_catalog.>) 32000 then
        chunk := chunk operator(pg_catalog.+) 1;
        collected := '';
        perform pg_catalog.set_config('resilience.schema_pending_n', chunk::text, true);
    end if;
    perform pg_catalog.set_config(
        'resilience.schema_pending_' || chunk,
        case when collected = '' then entries else collected || ';' || entries end,
        true
    );
end;
$$;

-- Tracking switched off, or pgresilience's own installer at work: the event
-- triggers then note nothing. (No SET clause: called on every DDL, its
-- callers are SECURITY DEFINER with search_path '', and names are qualified.)
create or replace function resilience._schema_tracking_skipped()
returns boolean
language sql
stable
as $$
    select pg_catalog.current_setting('resilience.installing', true) operator(pg_catalog.=) 'on'
        or exists (
            select from resilience.settings as s
            where s.name operator(pg_catalog.=) 'schema_tracking'
                and s.value operator(pg_catalog.<>) 'on'
        );
$$;

create or replace function resilience._schema_ddl_command_end()
returns event_trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    entries text;
    tracked text[];
begin
    if resilience._schema_tracking_skipped() then
        return;
    end if;
    tracked := resilience._schema_tracked_names();
    select pg_catalog.string_agg(
        c.classid::text || ',' || c.objid::text || ',' || c.command_tag, ';'
    ) into entries
    from pg_catalog.pg_event_trigger_ddl_commands() as c
    where not c.in_extension
        and c.classid in (
            'pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_constraint'::pg_catalog.regclass,
            'pg_catalog.pg_policy'::pg_catalog.regclass, 'pg_catalog.pg_attrdef'::pg_catalog.regclass,
            'pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_type'::pg_catalog.regclass,
            'pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_namespace'::pg_catalog.regclass
        )
        and (c.schema_name is null
            or c.schema_name operator(pg_catalog.=) any(tracked))
        and (c.classid operator(pg_catalog.<>) 'pg_catalog.pg_namespace'::pg_catalog.regclass
            or c.command_tag = 'ALTER SCHEMA');
    if entries is not null then
        perform resilience._schema_remember(entries);
    end if;
exception when others then
    raise warning 'pgresilience: schema tracking skipped this DDL (%: %)', sqlstate, sqlerrm;
end;
$$;

create or replace function resilience._schema_sql_drop()
returns event_trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    entries text;
    tracked text[];
begin
    if resilience._schema_tracking_skipped() then
        return;
    end if;
    tracked := resilience._schema_tracked_names();
    select pg_catalog.string_agg(d.classid::text || ',' || d.objid::text || ',' || tg_tag, ';') into entries
    from pg_catalog.pg_event_trigger_dropped_objects() as d
    -- PostgreSQL 14 reports no schema_name for a column default (15+ do);
    -- its address names the schema first on every version.
    cross join lateral (
        select case when d.classid operator(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass
            then d.address_names[1] else d.schema_name end as schema_name
    ) as s
    where not d.is_temporary
        and d.classid in (
            'pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_constraint'::pg_catalog.regclass,
            'pg_catalog.pg_policy'::pg_catalog.regclass, 'pg_catalog.pg_attrdef'::pg_catalog.regclass,
            'pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_type'::pg_catalog.regclass,
            'pg_catalog.pg_proc'::pg_catalog.regclass
        )
        -- A schema dropped by this very command is gone already: keep its objects
        -- (the fold ignores whatever the snapshot never had).
        and (s.schema_name is null
            or s.schema_name operator(pg_catalog.=) any(tracked)
            or pg_catalog.to_regnamespace(s.schema_name) is null);
    if entries is not null then
        perform resilience._schema_remember(entries);
    end if;
exception when others then
    raise warning 'pgresilience: schema tracking skipped this DROP (%: %)', sqlstate, sqlerrm;
end;
$$;

-- Recreated on every install so that they always point at the current
-- functions (in a DO block: sqlfluff cannot parse event trigger DDL).
do $$
begin
    drop event trigger if exists resilience_schema_ddl_end;
    create event trigger resilience_schema_ddl_end on ddl_command_end
    execute function resilience._schema_ddl_command_end();

    drop event trigger if exists resilience_schema_sql_drop;
    create event trigger resilience_schema_sql_drop on sql_drop
    execute function resilience._schema_sql_drop();
end;
$$;
