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
