-- Timeouts and cleanup. tx_reap rolls back expired active transactions
-- (status timed_out). Several reapers may run at once: each takes the rows it
-- can lock (FOR UPDATE SKIP LOCKED) and leaves the others. A transaction whose
-- rollback conflicts (a row changed behind the guards) is marked failed with
-- the conflicts in its outcome and a 'conflict' audit row: a reaper never
-- overwrites data it cannot prove is its own.

-- Delete finished transactions, their images and old audit rows past the
-- retention setting, a bounded batch per call. Returns the counts.
create or replace function resilience._purge(max_rows integer)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    horizon timestamptz := pg_catalog.clock_timestamp()
        - coalesce(resilience._setting('retention'), '7 days')::interval;
    purged_tx bigint;
    purged_audit bigint;
begin
    with gone as (
        delete from resilience.transactions as t
        where t.id in (
            select f.id from resilience.transactions as f
            where f.finished_at < horizon
            order by f.finished_at
            limit max_rows
            for update skip locked
        )
        returning t.id
    ),
    images as (
        delete from resilience.restore_points as r using gone where r.tx_id = gone.id
    )
    select pg_catalog.count(*) into purged_tx from gone;
    delete from resilience.audit_log as a
    where a.id in (
        select o.id from resilience.audit_log as o where o.at < horizon order by o.at limit max_rows
    );
    get diagnostics purged_audit = row_count;
    return pg_catalog.jsonb_build_object('transactions', purged_tx, 'audit_rows', purged_audit);
end;
$$;

create or replace function resilience.tx_reap(max_count integer default 100)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    expired record;
    undo jsonb;
    reaped integer := 0;
    conflict_detail text;
    purged jsonb;
begin
    for expired in
        select t.id, t.expires_at from resilience.transactions as t
        where t.status = 'active' and t.expires_at < pg_catalog.clock_timestamp()
        order by t.expires_at
        limit greatest(coalesce(max_count, 100), 0)
        for update skip locked
    loop
        begin
            undo := resilience._undo(expired.id, 0, false);
            update resilience.transactions as t
            set status = 'timed_out', finished_at = pg_catalog.clock_timestamp(),
                outcome = pg_catalog.jsonb_build_object('reason', 'timeout')
            where t.id = expired.id;
            perform resilience._audit('timeout', expired.id, pg_catalog.jsonb_build_object(
                'expired_at', expired.expires_at, 'restored_rows', undo -> 'restored_rows'));
        exception when sqlstate 'RZ005' then
            get stacked diagnostics conflict_detail = pg_exception_detail;
            update resilience.transactions as t
            set status = 'failed', finished_at = pg_catalog.clock_timestamp(),
                outcome = pg_catalog.jsonb_build_object('reason', 'timeout rollback conflict')
                    operator(pg_catalog.||) conflict_detail::jsonb
            where t.id = expired.id;
            perform resilience._audit('conflict', expired.id, conflict_detail::jsonb
                operator(pg_catalog.||) pg_catalog.jsonb_build_object('during', 'timeout'));
        end;
        perform resilience._release_claims(expired.id);
        reaped := reaped + 1;
    end loop;
    purged := resilience._purge(coalesce(resilience._setting('purge_batch')::integer, 1000));
    if reaped > 0 or (purged ->> 'transactions')::bigint > 0 or (purged ->> 'audit_rows')::bigint > 0 then
        perform resilience._audit('cleanup', null, pg_catalog.jsonb_build_object(
            'timed_out', reaped, 'purged', purged));
    end if;
    return reaped;
end;
$$;

-- PostgREST's db-pre-request hook (`pgrst.db_pre_request =
-- 'resilience.tx_pre_request'`): PostgREST calls it in each request's
-- database transaction, after the role and request.* settings and BEFORE the
-- request's own statement. Reaping here is what lets a plain (or header-mode)
-- write on a row claimed by an expired logical transaction go through: the
-- holder is rolled back by an earlier statement, so the write's snapshot sees
-- the restored row. A trigger on the write itself cannot do this (see
-- docs/transactions.md, "Claims"). Reads (GET/HEAD/OPTIONS) skip it;
-- a write request with nothing expired costs one index probe.
create or replace function resilience.tx_pre_request()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if pg_catalog.current_setting('request.method', true) in ('GET', 'HEAD', 'OPTIONS') then
        return;
    end if;
    perform resilience._reap_if_expired();
end;
$$;

-- pg_cron, where installed: run tx_reap every `schedule` ('10 seconds', or a
-- cron expression) in this database. Returns false where pg_cron is absent.
create or replace function resilience._schedule_reaper(schedule text default '10 seconds')
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
begin
    if pg_catalog.to_regnamespace('cron') is null then
        return false;
    end if;
    perform resilience._unschedule_reaper();
    if pg_catalog.to_regproc('cron.schedule_in_database') is not null then
        execute 'select cron.schedule_in_database($1, $2, $3, $4)'
        using 'pgresilience-reaper', schedule, 'select resilience.tx_reap()', pg_catalog.current_database();
    else
        execute 'select cron.schedule($1, $2, $3)'
        using 'pgresilience-reaper', schedule, 'select resilience.tx_reap()';
    end if;
    return true;
end;
$$;

create or replace function resilience._unschedule_reaper()
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
declare
    unscheduled boolean := false;
begin
    if pg_catalog.to_regnamespace('cron') is null then
        return false;
    end if;
    execute 'select exists (select 1 from cron.job where jobname = $1 and database = $2)'
    into unscheduled using 'pgresilience-reaper', pg_catalog.current_database();
    if unscheduled then
        execute 'select cron.unschedule(jobid) from cron.job where jobname = $1 and database = $2'
        using 'pgresilience-reaper', pg_catalog.current_database();
    end if;
    return unscheduled;
end;
$$;
