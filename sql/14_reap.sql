-- Timeouts and cleanup. tx_reap rolls back expired active transactions
-- (status timed_out). Several reapers may run at once: each takes the rows it
-- can lock (FOR UPDATE SKIP LOCKED) and leaves the others. A reaper never
-- overwrites data it cannot prove is its own, and never fails its caller.

-- Delete finished transactions, their journal and kept images, and old
-- audit rows past the retention setting, a bounded batch per call.
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
    gone uuid [];
    failed_id uuid;
    purged_audit bigint;
begin
    select coalesce(pg_catalog.array_agg(f.id), '{}') into gone
    from (
        select t.id from resilience.transactions as t
        where t.finished_at < horizon
        order by t.finished_at
        limit max_rows
        for update skip locked
    ) as f;
    -- Only failed transactions still have images (kept for a forced retry).
    for failed_id in select t.id from resilience.transactions as t where t.id = any (gone) and t.status = 'failed' loop
        perform resilience._release_claims(failed_id);
    end loop;
    delete from resilience.tx_statements as s where s.tx_id = any (gone);
    delete from resilience.transactions as t where t.id = any (gone);
    delete from resilience.audit_log as a
    where a.id in (
        select o.id from resilience.audit_log as o where o.at < horizon order by o.at limit max_rows
    );
    get diagnostics purged_audit = row_count;
    return pg_catalog.jsonb_build_object('transactions', pg_catalog.cardinality(gone), 'audit_rows', purged_audit);
end;
$$;

-- The purge, lazily: tx_begin calls this, so that retention holds without
-- pg_cron or the Janitor (a lazy tx_reap runs only when a transaction
-- expired, and purged nothing as long as none did). Two index probes when
-- nothing is due; a batch of at most 100 otherwise (one caller at a time),
-- which never fails the caller nor waits on a lock (lock_timeout, errors,
-- a bad retention setting included, swallowed: the next call tries again),
-- and is skipped where a lazy reap is (a read-only transaction, REPEATABLE
-- READ or SERIALIZABLE).
create or replace function resilience._purge_if_due()
returns void
language plpgsql
volatile
security definer
set search_path = ''
set lock_timeout = '50ms'
as $$
declare
    horizon timestamptz;
    purged jsonb;
begin
    if not resilience._lazy_work_allowed() then
        return;
    end if;
    -- (A retention setting that is no interval fails here, not the caller.)
    horizon := pg_catalog.clock_timestamp() - coalesce(resilience._setting('retention'), '7 days')::interval;
    -- One lazy purger at a time (the others would wait on the same rows).
    if (exists (select 1 from resilience.transactions as t where t.finished_at < horizon)
            or exists (select 1 from resilience.audit_log as a where a.at < horizon))
        and pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('resilience._purge_if_due'))
    then
        purged := resilience._purge(least(coalesce(resilience._setting('purge_batch')::integer, 1000), 100));
        perform resilience._audit('cleanup', null, pg_catalog.jsonb_build_object(
            'timed_out', 0, 'purged', purged));
    end if;
exception when others then
    null;
end;
$$;

-- Roll back expired transactions (timed_out). Failures are contained: a
-- transaction whose undo fails for ANY reason (a conflict, a constraint, a
-- user trigger) becomes failed, with the error in its outcome and a
-- 'conflict' audit row; its claims are released, its images kept until
-- retention (an admin may retry with force), and the reaper goes on. So no
-- call of another user that reaps lazily ever fails because of it.
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
    failed_state text;
    failed_message text;
    failed_detail text;
    failure jsonb;
    purged jsonb := '{}'::jsonb;
    out_of_time boolean := false;
begin
    for expired in
        select t.id, t.expires_at from resilience.transactions as t
        where t.status = 'active' and t.expires_at < pg_catalog.clock_timestamp()
            -- Under a lock_timeout (the lazy reap), not before a transaction's
            -- reap_after (set below when one had to be left).
            and (pg_catalog.current_setting('lock_timeout') = '0'
                or coalesce((t.outcome ->> 'reap_after')::timestamptz <= pg_catalog.clock_timestamp(), true))
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
            perform resilience._release_claims(expired.id);
            perform resilience._audit('timeout', expired.id, pg_catalog.jsonb_build_object(
                'expired_at', expired.expires_at, 'restored_rows', undo -> 'restored_rows'),
                on_behalf_of => expired.id);
        -- `others` leaves out query_canceled and assert_failure, which a
        -- user trigger can raise as well.
        exception when others or query_canceled or assert_failure then
            get stacked diagnostics failed_state = returned_sqlstate, failed_message = message_text,
                failed_detail = pg_exception_detail;
            -- Under a lazy reap's lock_timeout, a row lock another database
            -- transaction holds is no failure: the transaction stays active
            -- and expired, its undo rolled back, for a later reap. Without
            -- one (an explicit tx_reap: pg_cron, the janitor), 55P03 is a
            -- failure like any other, so that a user trigger raising it
            -- cannot keep a transaction up for every lazy reap to retry.
            -- Nor is a deadlock (the owner's own write racing the expiry:
            -- its statement holds a row the undo restores, then waits for
            -- the transaction's row this reaper holds) or a serialization
            -- failure, nor the caller's
            -- own statement_timeout running out (a lazy reap runs inside
            -- another user's call, whose timeout has nothing to do with
            -- this undo): nothing is wrong with the rows, a later reap
            -- succeeds. The caller's time being up, this reap stops there.
            -- (A 57014 before the deadline, a user trigger's, stays a failure.)
            out_of_time := failed_state = '57014'
                and pg_catalog.current_setting('statement_timeout')::interval > interval '0'
                and pg_catalog.statement_timestamp() + pg_catalog.current_setting('statement_timeout')::interval
                    <= pg_catalog.clock_timestamp();
            if (failed_state = '55P03' and pg_catalog.current_setting('lock_timeout') <> '0')
                or failed_state in ('40P01', '40001') or out_of_time
            then
                update resilience.transactions as t
                set outcome = coalesce(t.outcome, '{}'::jsonb) || pg_catalog.jsonb_build_object(
                    'reap_after', pg_catalog.clock_timestamp() + interval '5 seconds')
                where t.id = expired.id;
                exit when out_of_time;
                continue;
            end if;
            failure := pg_catalog.jsonb_build_object('during', 'timeout', 'sqlstate', failed_state,
                'error', failed_message,
                'conflicts', case when failed_state = 'RZ005' then failed_detail::jsonb -> 'conflicts' end);
            update resilience.transactions as t
            set status = 'failed', finished_at = pg_catalog.clock_timestamp(),
                outcome = pg_catalog.jsonb_build_object('reason', 'timeout rollback failed') || failure
            where t.id = expired.id;
            perform resilience._release_claims(expired.id, keep_images => true);
            perform resilience._audit('conflict', expired.id, failure, on_behalf_of => expired.id);
        end;
        reaped := reaped + 1;
    end loop;
    -- The caller's time is up: no purge this time.
    if not out_of_time then
        begin
            purged := resilience._purge(coalesce(resilience._setting('purge_batch')::integer, 1000));
        exception when others then
            raise warning 'pgresilience: purge failed: %', sqlerrm;
        end;
    end if;
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
