-- upgrade --
create schema if not exists resilience;
comment on schema resilience is 'pgresilience: logical transactions, schema tracking, circuits';

-- Cluster-wide NOLOGIN roles; creating them needs CREATEROLE, so a database
-- owner without it still gets everything else (the installer says so).
-- Another database's install may be creating them at this very moment (the
-- advisory lock is per database): then ours waits for it and fails with
-- 23505, and the role exists, which is all this needs.
do $$
begin
    begin
        if not exists (select 1 from pg_roles where rolname = 'resilience_user') then
            create role resilience_user nologin;
        end if;
    exception when unique_violation then
        null;
    end;
    begin
        if not exists (select 1 from pg_roles where rolname = 'resilience_admin') then
            create role resilience_admin nologin;
        end if;
    exception when unique_violation then
        null;
    end;
exception when insufficient_privilege then
    raise warning 'pgresilience: cannot create roles resilience_user/resilience_admin (needs CREATEROLE); only the owner can use the API';
end;
$$;

create table resilience.settings (
    name text primary key check (name ~ '^[a-z][a-z0-9_]*$'),
    value text not null,
    description text not null
);
comment on table resilience.settings is 'Tunable settings; read with resilience._setting(name)';

create table resilience.audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null default clock_timestamp(),
    event text not null check (event in (
        'begin', 'execute', 'savepoint', 'commit', 'rollback', 'timeout',
        'conflict', 'cleanup', 'schema_change', 'circuit_state'
    )),
    tx_id uuid,
    actor_role text not null,
    actor_sub text,
    detail jsonb not null default '{}' check (jsonb_typeof(detail) = 'object')
);
create index audit_log_tx_id_idx on resilience.audit_log (tx_id) where tx_id is not null;
create index audit_log_at_idx on resilience.audit_log (at);

-- PL/Python module sources, loaded by the few-line plpython3u bodies; written
-- by the installer only.
create table resilience.plpython_modules (
    name text primary key check (name ~ '^[a-z_][a-z0-9_]*$'),
    source text not null,
    sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$')
);

-- Wrappers created in the exposed schema, so uninstall drops exactly those.
create table resilience.exposed_functions (
    signature regprocedure primary key
);

-- Extensions the installer created (plpython3u), so uninstall drops exactly those.
create table resilience.created_extensions (
    name text primary key
);

insert into resilience.settings (name, value, description) values
    ('retention', '7 days', 'How long finished transactions, their images and audit rows are kept'),
    ('notify_postgrest', 'on', 'Send NOTIFY pgrst, ''reload schema'' after every schema change')
on conflict (name) do nothing;

-- downgrade --
-- Everything the installer created outside the migrations: wrappers in the
-- exposed schema, event triggers, then every function of ours. Capture
-- triggers on managed tables go with their trigger functions.
do $$
declare
    obj record;
begin
    -- A pg_cron job calling our functions would fail every run once they are gone.
    if to_regprocedure('resilience._unschedule_reaper()') is not null then
        perform resilience._unschedule_reaper();
    end if;
    for obj in select signature from resilience.exposed_functions loop
        execute format('drop function if exists %s', obj.signature);
    end loop;
    for obj in
        select e.evtname from pg_event_trigger e
        join pg_proc p on p.oid = e.evtfoid
        where p.pronamespace = 'resilience'::regnamespace
    loop
        execute format('drop event trigger if exists %I', obj.evtname);
    end loop;
    for obj in
        select p.oid::regprocedure as signature, p.prokind from pg_proc p
        where p.pronamespace = 'resilience'::regnamespace
    loop
        if obj.prokind = 'p' then
            execute format('drop procedure if exists %s cascade', obj.signature);
        else
            execute format('drop function if exists %s cascade', obj.signature);
        end if;
    end loop;
end;
$$;

do $$
declare
    ext text;
begin
    for ext in select name from resilience.created_extensions loop
        execute format('drop extension if exists %I', ext);
    end loop;
end;
$$;

drop table resilience.created_extensions;
drop table resilience.exposed_functions;
drop table resilience.plpython_modules;
drop table resilience.audit_log;
drop table resilience.settings;

-- Roles are cluster-wide: keep them while another database still uses them.
do $$
declare
    role_name text;
begin
    foreach role_name in array array['resilience_user', 'resilience_admin'] loop
        begin
            if exists (select 1 from pg_roles where rolname = role_name) then
                -- The schema itself goes after the last revision (env.py).
                execute format('revoke all on schema resilience from %I', role_name);
                execute format('drop role %I', role_name);
            end if;
        exception when dependent_objects_still_exist or insufficient_privilege then
            raise notice 'pgresilience: role % kept: %', role_name, sqlerrm;
        end;
    end loop;
end;
$$;
