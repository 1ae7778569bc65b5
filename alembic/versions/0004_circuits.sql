-- upgrade --
-- One row per circuit whose state is shared across processes. Failures are
-- counted in each process; only state transitions are written here, and the
-- database clock (now()) decides when an open circuit may be probed.
create table resilience.circuits (
    name text primary key check (char_length(name) between 1 and 200),
    state text not null default 'closed'
        check (state in ('closed', 'open', 'half_open', 'forced_open', 'disabled')),
    -- When an open circuit admits its probe.
    open_until timestamptz,
    -- Opens in a row without a successful probe (backoff bookkeeping).
    open_count integer not null default 0 check (open_count >= 0),
    -- The one process allowed to run the half-open probe, until its lease ends.
    probe_owner text,
    probe_lease_until timestamptz,
    reason text,
    failure_rate double precision check (failure_rate between 0 and 1),
    updated_at timestamptz not null default now(),
    updated_by text,
    -- Bumped on every write; processes ignore news older than what they saw.
    version bigint not null default 1 check (version > 0),
    check (state <> 'open' or open_until is not null),
    check ((probe_owner is null) = (probe_lease_until is null)),
    check (probe_owner is null or state = 'half_open')
);
comment on table resilience.circuits is 'Shared circuit breaker state; written through resilience._circuit_* only';

-- downgrade --
drop table if exists resilience.circuits cascade;
