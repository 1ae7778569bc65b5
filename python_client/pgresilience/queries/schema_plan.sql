-- schema_plan_runner --
-- `pgresilience plan`: runs a migration's text through EXECUTE, so that
-- transaction control in it (COMMIT, ROLLBACK) fails instead of committing.
create function pg_temp.pgresilience_plan_run(migration text) returns void
language plpgsql as $$ begin execute migration; end $$;

-- schema_plan_run --
select pg_temp.pgresilience_plan_run(%s);

-- schema_preview --
-- The changes this transaction's DDL would record at commit (nothing recorded).
select resilience.schema_preview();
