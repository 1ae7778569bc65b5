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

-- record_created_extension --
insert into resilience.created_extensions (name) values (%s) on conflict do nothing;

-- store_plpython_module --
insert into resilience.plpython_modules (name, source, sha256) values (%s, %s, %s)
on conflict (name) do update set source = excluded.source, sha256 = excluded.sha256;

-- expose --
select resilience._expose(%s);

-- unexpose --
select resilience._unexpose();

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
        where rolname in ('resilience_user', 'resilience_admin'));

-- schedule_reaper --
-- Run tx_reap() from pg_cron at this interval; false where pg_cron is absent.
select resilience._schedule_reaper(%s);
