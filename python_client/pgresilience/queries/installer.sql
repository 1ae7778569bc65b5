-- install_lock --
-- Serialize installers: two never interleave in one database.
select pg_advisory_xact_lock(hashtext('pgresilience-install'));

-- is_installed --
select to_regclass('resilience.alembic_version') is not null;

-- installed_revision --
-- The Alembic revision of pgresilience installed here.
select version_num from resilience.alembic_version;

-- extension_exists --
select 1 from pg_extension where extname = %s;

-- create_plpython --
create extension if not exists plpython3u;

-- record_created_extension_if_new --
-- Before create extension: remember it as ours when it was not there yet.
insert into resilience.created_extensions (name)
select %s where not exists (select 1 from pg_extension where extname = 'plpython3u')
on conflict do nothing;

-- create_version_table --
-- Alembic's version table, as Alembic creates it (install --print-sql).
create schema if not exists resilience;
create table if not exists resilience.alembic_version (
    version_num varchar(32) not null,
    constraint alembic_version_pkc primary key (version_num)
);

-- record_created_extension --
insert into resilience.created_extensions (name) values (%s) on conflict do nothing;

-- store_plpython_module --
insert into resilience.plpython_modules (name, source, sha256) values (%s, %s, %s)
on conflict (name) do update set source = excluded.source, sha256 = excluded.sha256;

-- expose --
select resilience._expose(%s);

-- baseline --
-- The first snapshot (version 1), once the wrappers are exposed: those it takes
-- back from a restored schema are not the app's. Nothing when versions exist.
select resilience._schema_baseline();

-- unexpose --
-- Drop the wrappers that expose (same schema) will not re-create as they
-- are; with no schema (--expose none), every wrapper.
select resilience._unexpose(%s);

-- installed_objects --
-- Counts for the uninstall report: functions, tables, wrappers, event triggers.
select
    (select count(*) from pg_proc where pronamespace = 'resilience'::regnamespace),
    (select count(*) from pg_class where relnamespace = 'resilience'::regnamespace and relkind in ('r', 'p')),
    (select count(*) from resilience.exposed_functions),
    (select count(*) from pg_event_trigger e join pg_proc p on p.oid = e.evtfoid
        where p.pronamespace = 'resilience'::regnamespace);

-- status_installation --
-- Installed objects for `pgresilience status`.
select
    (select count(*) from pg_proc where pronamespace = 'resilience'::regnamespace),
    (select count(*) from pg_class where relnamespace = 'resilience'::regnamespace and relkind in ('r', 'p')),
    (select count(*) from resilience.exposed_functions),
    (select coalesce(array_agg(distinct n.nspname::text), '{}') from resilience.exposed_functions e
        join pg_proc p on p.oid = e.signature join pg_namespace n on n.oid = p.pronamespace),
    exists (select 1 from pg_proc where pronamespace = 'resilience'::regnamespace
        and prolang = (select oid from pg_language where lanname = 'plpython3u')),
    (select count(*) from pg_event_trigger e join pg_proc p on p.oid = e.evtfoid
        where p.pronamespace = 'resilience'::regnamespace),
    (select coalesce(array_agg(rolname::text order by rolname), '{}') from pg_roles
        where rolname in ('resilience_user', 'resilience_admin')),
    -- Schema tracking's two, disabled (ALTER EVENT TRIGGER ... DISABLE): DDL
    -- then becomes a version only through schema_refresh().
    (select count(*) from pg_event_trigger
        where evtname in ('resilience_schema_ddl_end', 'resilience_schema_sql_drop')
            and evtenabled = 'D');

-- schedule_reaper --
-- Run tx_reap() from pg_cron at this interval; false where pg_cron is absent.
select resilience._schedule_reaper(%s);

-- probes_begin --
-- Function probes (sqlscript.py) are created without checking their bodies:
-- only their signatures matter.
set local check_function_bodies = off;

-- probes_end --
set local check_function_bodies to default;

-- language_usable --
-- The language exists and this role may create functions in it (plpython3u
-- is untrusted: superusers only).
select exists (
    select 1 from pg_language as l
    where l.lanname = %s
        and ((l.lanpltrusted and has_language_privilege(l.oid, 'USAGE'))
            or (select r.rolsuper from pg_roles as r where r.rolname = current_user))
);

-- drop_stale_functions --
-- Drop every function the installed release defined that the new one (its
-- probes in pg_temp) does not define with the same kind, arguments (names,
-- types, defaults) and result: CREATE OR REPLACE cannot change those, and a
-- changed argument list would leave an ambiguous overload. RESTRICT: an
-- object still depending on a dropped function stops the upgrade.
do $$
declare
    stale record;
begin
    for stale in
        select p.oid::regprocedure as signature, p.prokind
        from resilience.release_functions as f
        join pg_catalog.pg_proc as p on p.oid = f.signature
        where not exists (
            select 1 from pg_catalog.pg_proc as n
            where n.pronamespace = pg_catalog.pg_my_temp_schema()
                and n.proname = p.proname
                and n.prokind = p.prokind
                and pg_catalog.pg_get_function_arguments(n.oid)
                = pg_catalog.pg_get_function_arguments(p.oid)
                and pg_catalog.pg_get_function_result(n.oid)
                is not distinct from pg_catalog.pg_get_function_result(p.oid)
        )
        order by 1::text
    loop
        -- Named before it goes: a dropped function's regprocedure is a number.
        raise notice 'pgresilience: dropped % (not in this release, or redefined)', stale.signature;
        execute pg_catalog.format(
            'drop %s %s',
            case stale.prokind when 'p' then 'procedure' else 'function' end,
            stale.signature
        );
    end loop;
end;
$$;

-- record_release_functions --
-- The functions this release defined (those matching a probe), for the next upgrade.
delete from resilience.release_functions;
insert into resilience.release_functions (signature)
select p.oid::regprocedure
from pg_catalog.pg_proc as p
where p.pronamespace = 'resilience'::regnamespace
    and exists (
        select 1 from pg_catalog.pg_proc as n
        where n.pronamespace = pg_catalog.pg_my_temp_schema()
            and n.proname = p.proname
            and n.prokind = p.prokind
            and pg_catalog.pg_get_function_identity_arguments(n.oid)
            = pg_catalog.pg_get_function_identity_arguments(p.oid)
    );

-- drop_probes --
do $$
declare
    probe record;
begin
    for probe in
        select n.oid::regprocedure as signature, n.prokind
        from pg_catalog.pg_proc as n
        where n.pronamespace = pg_catalog.pg_my_temp_schema()
            and exists (
                select 1 from pg_catalog.pg_proc as p
                where p.pronamespace = 'resilience'::regnamespace and p.proname = n.proname
            )
    loop
        execute pg_catalog.format(
            'drop %s %s',
            case probe.prokind when 'p' then 'procedure' else 'function' end,
            probe.signature
        );
    end loop;
end;
$$;

-- active_transaction_ids --
-- Logical transactions that uninstall would cut off, newest first.
select id from resilience.transactions where status = 'active' order by started_at desc;

-- failed_transaction_ids --
-- Logical transactions whose rollback failed: their images are the only
-- record of the rows it could not restore, and uninstall would drop them.
select id from resilience.transactions where status = 'failed' order by started_at desc;

-- refuse_app_dependents --
-- Uninstall drops our functions CASCADE (capture triggers go with them): the
-- app's own objects using ours (a view or policy calling resilience.*, a
-- BEGIN ATOMIC function, a column default) would go silently too. Refuse,
-- naming them. Our triggers on managed tables and our wrappers are not the app's.
do $$
declare
    dependents text;
begin
    select pg_catalog.string_agg(distinct coalesce(
            -- A view depends through its rewrite rule: name the view.
            (select pg_catalog.format('view %s', r.ev_class::regclass)
                from pg_catalog.pg_rewrite as r
                where d.classid = 'pg_catalog.pg_rewrite'::regclass and r.oid = d.objid),
            pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)), ', ')
    into dependents
    from pg_catalog.pg_depend as d
    -- The schema of the dependent object, or of its table (a policy, rule,
    -- trigger or default has none of its own).
    cross join lateral (select coalesce(
            (select c.relnamespace from pg_catalog.pg_policy as o
                inner join pg_catalog.pg_class as c on c.oid = o.polrelid
                where d.classid = 'pg_catalog.pg_policy'::regclass and o.oid = d.objid),
            (select c.relnamespace from pg_catalog.pg_rewrite as o
                inner join pg_catalog.pg_class as c on c.oid = o.ev_class
                where d.classid = 'pg_catalog.pg_rewrite'::regclass and o.oid = d.objid),
            (select c.relnamespace from pg_catalog.pg_trigger as o
                inner join pg_catalog.pg_class as c on c.oid = o.tgrelid
                where d.classid = 'pg_catalog.pg_trigger'::regclass and o.oid = d.objid),
            (select c.relnamespace from pg_catalog.pg_attrdef as o
                inner join pg_catalog.pg_class as c on c.oid = o.adrelid
                where d.classid = 'pg_catalog.pg_attrdef'::regclass and o.oid = d.objid),
            (select n.oid from pg_catalog.pg_namespace as n
                where n.nspname = (pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid)).schema)
        ) as nsp) as dependent
    where d.deptype = 'n'
        -- On a function, table (view, sequence) or type of ours.
        and (d.refclassid, d.refobjid) in (
            select 'pg_catalog.pg_proc'::regclass, p.oid from pg_catalog.pg_proc as p
            where p.pronamespace = 'resilience'::regnamespace
            union all
            select 'pg_catalog.pg_class'::regclass, c.oid from pg_catalog.pg_class as c
            where c.relnamespace = 'resilience'::regnamespace
            union all
            select 'pg_catalog.pg_type'::regclass, t.oid from pg_catalog.pg_type as t
            where t.typnamespace = 'resilience'::regnamespace
        )
        and dependent.nsp is distinct from 'resilience'::regnamespace
        and d.classid <> 'pg_catalog.pg_event_trigger'::regclass
        and not exists (
            select 1 from pg_catalog.pg_trigger as t
            inner join pg_catalog.pg_proc as f on f.oid = t.tgfoid
            where d.classid = 'pg_catalog.pg_trigger'::regclass and t.oid = d.objid
                and f.pronamespace = 'resilience'::regnamespace
        )
        and not exists (
            select 1 from resilience.exposed_functions as e
            where d.classid = 'pg_catalog.pg_proc'::regclass and e.signature = d.objid
        );
    if dependents is not null then
        raise exception 'pgresilience: objects of the app use pgresilience: %', dependents
            using errcode = 'dependent_objects_still_exist',
            hint = 'Drop or change them first: uninstall drops only what install created.';
    end if;
end;
$$;

-- uninstall_rollback --
-- uninstall --force: undo one active transaction (as resilience_admin or its owner).
select resilience.tx_rollback(%s::uuid, 'pgresilience uninstall --force', true);

-- print_sql_revision --
-- install --print-sql: one Alembic revision, applied when the recorded
-- revision is the one before it (so the script upgrades any earlier install).
do $pgr_step$
begin
    if (select version_num from resilience.alembic_version) is not distinct from {down} then
        execute {upgrade};
        delete from resilience.alembic_version;
        insert into resilience.alembic_version (version_num) values ({revision});
    end if;
end;
$pgr_step$;

-- follow_up_state --
-- What advice.follow_ups needs: package roles present, event triggers, role
-- authenticator (PostgREST), its db-pre-request, whether we may set it, who
-- we are, and the role memberships still missing (as grant statements).
select
    (select count(*) from pg_roles where rolname in ('resilience_user', 'resilience_admin')),
    exists (select 1 from pg_event_trigger as e inner join pg_proc as p on p.oid = e.evtfoid
        where p.pronamespace = 'resilience'::regnamespace),
    exists (select 1 from pg_roles where rolname = 'authenticator'),
    exists (select 1 from pg_db_role_setting as s
        inner join pg_roles as r on r.oid = s.setrole
        cross join unnest(s.setconfig) as cfg
        where r.rolname = 'authenticator'
            and s.setdatabase in (0, (select d.oid from pg_database as d where d.datname = current_database()))
            and cfg ~ '^pgrst[.]db_pre_request=.*tx_pre_request'),
    (select rolsuper from pg_roles where rolname = current_user),
    quote_ident(current_user),
    (select string_agg(format('grant %I to %I;', m.granted, m.member), ' ' order by m.member, m.granted)
        from resilience._missing_memberships() as m);

-- may_set_pre_request --
-- PostgreSQL 15+: may we set pgrst.db_pre_request for a role (superuser, or
-- `grant set on parameter`)? Before 15 there are no parameter privileges.
-- And may we alter role authenticator at all (from 16 on, CREATEROLE alone
-- is not enough: it takes the ADMIN option on that role)?
select (select rolsuper from pg_roles where rolname = current_user)
    or has_parameter_privilege('pgrst.db_pre_request', 'SET'),
    (select rolsuper from pg_roles where rolname = current_user)
    or current_setting('server_version_num')::int < 160000
    or pg_has_role('authenticator', 'MEMBER WITH ADMIN OPTION');

-- drop_unused_roles --
-- After uninstall has committed: two databases uninstalled at once each saw
-- the other's grants and kept the cluster-wide roles; the last one out, its
-- own grants gone, now sees none and drops them (another database that
-- still uses them, or a role without CREATEROLE, keeps them).
do $$
declare
    role_name text;
begin
    foreach role_name in array array['resilience_user', 'resilience_admin'] loop
        begin
            if exists (select 1 from pg_catalog.pg_roles where rolname = role_name) then
                execute pg_catalog.format('drop role %I', role_name);
            end if;
        exception when dependent_objects_still_exist or insufficient_privilege
            or undefined_object then
            null;
        end;
    end loop;
end;
$$;
