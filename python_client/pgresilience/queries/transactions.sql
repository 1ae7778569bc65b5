-- tx_begin --
-- Start a logical transaction; returns its id.
select resilience.tx_begin(%(timeout_ms)s, %(label)s);

-- tx_execute --
-- One write inside a logical transaction, with the caller's privileges.
select resilience.tx_execute(%(tx_id)s::uuid, %(table)s, %(operation)s, %(data)s, %(match)s);

-- tx_savepoint --
select resilience.tx_savepoint(%(tx_id)s::uuid, %(name)s);

-- tx_rollback_to --
select resilience.tx_rollback_to(%(tx_id)s::uuid, %(name)s);

-- tx_commit --
select resilience.tx_commit(%(tx_id)s::uuid);

-- tx_rollback --
select resilience.tx_rollback(%(tx_id)s::uuid, %(reason)s, %(force)s);

-- tx_status --
select resilience.tx_status(%(tx_id)s::uuid);

-- tx_active --
-- The caller's active logical transactions.
select resilience.tx_active();

-- tx_reap --
-- Roll back expired logical transactions; returns how many.
select resilience.tx_reap(%(max_count)s);

-- tx_active_overview --
-- Every active logical transaction (as far as RLS lets the caller see), for `pgresilience status`.
select t.id::text, t.owner_role, t.owner_sub, t.label, t.started_at, t.expires_at,
    t.expires_at <= clock_timestamp() as expired,
    resilience._tx_claim_count(t.id) as claims
from resilience.transactions as t
where t.status = 'active'
order by t.started_at;

-- postgrest_pre_request --
-- PostgREST's in-database db-pre-request settings (per role, for this database or all), for `pgresilience status`.
select r.rolname, substr(cfg, length('pgrst.db_pre_request=') + 1) as function_name
from pg_db_role_setting as s
inner join pg_roles as r on r.oid = s.setrole
cross join unnest(s.setconfig) as cfg
where s.setdatabase in (0, (select d.oid from pg_database as d where d.datname = current_database()))
    and cfg ~ '^pgrst[.]db_pre_request='
order by r.rolname;
