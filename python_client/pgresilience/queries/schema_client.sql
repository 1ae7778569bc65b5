-- schema_plan_runner --
-- `pgresilience plan`: runs a migration's text through EXECUTE, so that
-- transaction control in it (COMMIT, ROLLBACK) fails instead of committing.
create function pg_temp.pgresilience_plan_run(migration text) returns void
language plpgsql as $$ begin execute migration; end $$;

-- schema_plan_run --
select pg_temp.pgresilience_plan_run(%s);

-- schema_plan_reset_role --
-- After the migration: back to the plan's own role (a `set role` in it
-- stays in force until the transaction ends).
reset role;

-- schema_plan_guard_table --
-- `plan --alembic`: a revision runs its SQL on the plan's connection, where a
-- COMMIT (`op.execute("COMMIT")`, the driver's commit()) would commit the
-- migration for real. A deferred trigger on this temporary table fails any
-- commit of the plan's transaction (the plan only ever rolls back).
create temporary table pgresilience_plan_guard (armed boolean);

-- schema_plan_guard_function --
-- SET CONSTRAINTS ALL IMMEDIATE fires deferred triggers early: not a commit
-- (the guard is spent then; the plan's transaction-ID check remains).
create function pg_temp.pgresilience_plan_guard() returns trigger
language plpgsql as $$
begin
    if current_query() ~* '^[[:space:]]*set[[:space:]]+constraints' then
        return null;
    end if;
    raise exception using
        errcode = '0A000',
        message = 'pgresilience plan: the migration tried to commit the plan''s transaction',
        hint = 'transaction control cannot be planned; nothing was committed';
end $$;

-- schema_plan_guard_trigger --
create constraint trigger pgresilience_plan_guard
after insert on pg_temp.pgresilience_plan_guard
deferrable initially deferred
for each row execute function pg_temp.pgresilience_plan_guard();

-- schema_plan_guard_arm --
insert into pg_temp.pgresilience_plan_guard values (true);

-- schema_plan_transaction --
-- The plan's transaction (an ID assigned now, as the migration's DDL would):
-- another one after the migration means it committed what ran before.
select txid_current();

-- schema_plan_version --
-- The version before a plan's migration runs: a SET CONSTRAINTS ALL
-- IMMEDIATE in it folds what came before into versions of its own.
select (resilience.schema_current() ->> 'version')::bigint;

-- schema_preview --
-- The changes this transaction's DDL would record at commit (nothing recorded).
select resilience.schema_preview();

-- schema_tracking_mode --
-- How DDL becomes versions here: event triggers enabled (both: without the
-- sql_drop one a DROP TABLE is never recorded)? PL/Python diff installed?
-- run at commit (setting schema_diff_at_commit on) rather than by the first
-- reader? tracking on (setting schema_tracking)?
select
    (
        select count(*) from pg_event_trigger
        where evtname in ('resilience_schema_ddl_end', 'resilience_schema_sql_drop') and evtenabled <> 'D'
    ) = 2,
    to_regprocedure('resilience._schema_diff(json)') is not null,
    coalesce(resilience._setting('schema_diff_at_commit'), 'on') = 'on',
    coalesce(resilience._setting('schema_tracking'), 'on') = 'on';

-- schema_tracking_mode_catalog --
-- The same from the catalog alone, for a role that may not read the
-- package's settings (resilience_user): the settings taken as their defaults.
select
    (
        select count(*) from pg_event_trigger
        where evtname in ('resilience_schema_ddl_end', 'resilience_schema_sql_drop') and evtenabled <> 'D'
    ) = 2,
    to_regprocedure('resilience._schema_diff(json)') is not null,
    true,
    true;

-- schema_history_rated --
-- The last N versions, newest first, each with its changes or, where the
-- database could not diff, its deltas (the client rates them).
select s.change
from resilience.schema_changes_since(
    coalesce((select min((h ->> 'version')::bigint) from resilience.schema_history(%(n)s) as h), 1) - 1
) as s (change)
order by (s.change ->> 'version')::bigint desc
limit %(n)s;
