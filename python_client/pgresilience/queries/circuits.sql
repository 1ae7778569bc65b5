-- circuit_publish --
-- A transition this process made; returns the circuit as it now stands.
select resilience._circuit_publish(
    %(name)s, %(state)s, %(open_seconds)s, %(reason)s, %(owner)s, %(failure_rate)s, %(forced)s
);

-- circuit_probe --
-- Ask for the one half-open probe; the answer carries "granted".
select resilience._circuit_probe(%(name)s, %(owner)s, %(lease_seconds)s);

-- circuit_get --
-- The named circuits, to catch up after a gap.
select resilience._circuit_get(%(names)s);

-- circuit_listen --
listen resilience_circuits;

-- circuit_health --
-- Every shared circuit, for dashboards and `pgresilience status`.
select resilience.circuit_health();

-- circuit_terminate --
-- The backend of a round trip given up on (frozen, its socket shut): ended
-- before it can run a statement it had received, a stale write. Only a
-- session of ours: same role, same application name.
select pg_catalog.pg_terminate_backend(a.pid)
from pg_catalog.pg_stat_activity as a
where a.pid = %(pid)s
    and a.usename = current_user
    and a.application_name = pg_catalog.current_setting('application_name');
