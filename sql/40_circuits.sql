-- Shared circuit breaker state (resilience.circuits, revision 0004).
--
-- Each process counts failures itself and writes only transitions. The
-- database clock decides when an open circuit may be probed, and a
-- conditional update with an expiring lease lets exactly one process run the
-- half-open probe. Every change is announced on channel resilience_circuits;
-- state changes go to the audit log as event 'circuit_state'.
-- The _circuit_* functions are the Python client's (granted at the end).

-- One circuit as the client reads it; durations are in seconds by the
-- database clock, so processes never compare their own clocks.
create or replace function resilience._circuit_json(c resilience.circuits)
returns jsonb
language sql
stable
set search_path = ''
as $$
    select pg_catalog.jsonb_build_object(
        'name', c.name,
        'state', c.state,
        'open_until', c.open_until,
        'open_for', case when c.state = 'open'
            then greatest(0, extract(epoch from c.open_until operator(pg_catalog.-) pg_catalog.now()))
            else 0 end,
        'open_count', c.open_count,
        'probe_owner', c.probe_owner,
        'lease_for', case when c.probe_owner is not null
            then greatest(0, extract(epoch from c.probe_lease_until operator(pg_catalog.-) pg_catalog.now()))
            else 0 end,
        'reason', c.reason,
        'failure_rate', c.failure_rate,
        'updated_at', c.updated_at,
        'updated_by', c.updated_by,
        'version', c.version
    );
$$;

-- Tell every listening process (except of a probe grant), and record real
-- state changes.
create or replace function resilience._circuit_announce(
    c resilience.circuits, old_state text, owner text
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    doc jsonb := resilience._circuit_json(c);
begin
    if old_state is distinct from c.state then
        perform resilience._audit('circuit_state', null, pg_catalog.jsonb_build_object(
            'circuit', c.name, 'from', old_state, 'to', c.state,
            'reason', c.reason, 'owner', owner, 'open_until', c.open_until));
    end if;
    -- A granted probe (half_open) is not announced: other processes need
    -- its outcome, which is; one that asks meanwhile is told of the lease in
    -- its answer. So a half-open episode costs one NOTIFY, not two.
    -- The payload stays far below NOTIFY's 8000-byte limit: name is at most
    -- 200 characters and reason is cut to 500.
    if c.state <> 'half_open' then
        perform pg_catalog.pg_notify('resilience_circuits', doc::text);
    end if;
    return doc;
end;
$$;

-- A process made a transition. 'open' is always heard (any process's evidence
-- opens the circuit; an already later deadline is kept); 'closed' only from
-- the process holding the probe (or after its lease ran out); operator
-- actions (forced => true: reset, force_open, disable) always win.
-- Returns the circuit as it now stands, so a refused caller can adopt it.
create or replace function resilience._circuit_publish(
    circuit_name text,
    new_state text,
    open_seconds double precision,
    reason text,
    owner text,
    failure_rate double precision default null,
    forced boolean default false
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    current resilience.circuits;
    changed resilience.circuits;
    cut_reason text := pg_catalog.left(reason, 500);
begin
    if new_state is null or new_state not in ('closed', 'open', 'forced_open', 'disabled') then
        raise exception 'cannot publish circuit state %', new_state using errcode = '22023';
    end if;
    if open_seconds is null or open_seconds < 0 or open_seconds = 'nan'::double precision then
        raise exception 'open_seconds must be >= 0' using errcode = '22023';
    end if;
    insert into resilience.circuits (name, updated_by) values (circuit_name, owner)
    on conflict (name) do nothing;
    select c.* into strict current from resilience.circuits as c
    where c.name = circuit_name for update;

    if not forced then
        if new_state = 'open' and current.state in ('forced_open', 'disabled') then
            return resilience._circuit_json(current);
        end if;
        if new_state = 'closed' and not (
            current.state = 'half_open'
            and (current.probe_owner = owner or current.probe_lease_until <= pg_catalog.now())
        ) then
            return resilience._circuit_json(current);
        end if;
    end if;

    update resilience.circuits as c set
        state = new_state,
        open_until = case
            when new_state <> 'open' then null
            when current.state = 'open' then greatest(
                current.open_until,
                pg_catalog.now() operator(pg_catalog.+) pg_catalog.make_interval(secs => open_seconds))
            else pg_catalog.now() operator(pg_catalog.+) pg_catalog.make_interval(secs => open_seconds)
        end,
        open_count = case
            when new_state <> 'open' then 0
            when current.state = 'half_open' then current.open_count operator(pg_catalog.+) 1
            else greatest(current.open_count, 1)
        end,
        probe_owner = null,
        probe_lease_until = null,
        reason = cut_reason,
        failure_rate = coalesce(_circuit_publish.failure_rate, c.failure_rate),
        updated_at = pg_catalog.now(),
        updated_by = owner,
        version = c.version operator(pg_catalog.+) 1
    where c.name = circuit_name
    returning c.* into changed;
    return resilience._circuit_announce(changed, current.state, owner);
end;
$$;

-- Ask to run the half-open probe. Granted to exactly one process: the
-- conditional update succeeds only while the circuit is open past its
-- deadline (by the database clock) or a previous probe's lease has expired.
-- Returns the circuit plus "granted".
create or replace function resilience._circuit_probe(
    circuit_name text, owner text, lease_seconds double precision
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    old_state text;
    granted resilience.circuits;
    current resilience.circuits;
begin
    if lease_seconds is null or lease_seconds <= 0 then
        raise exception 'lease_seconds must be > 0' using errcode = '22023';
    end if;
    select c.state into old_state from resilience.circuits as c where c.name = circuit_name;

    update resilience.circuits as c set
        state = 'half_open',
        probe_owner = owner,
        probe_lease_until = pg_catalog.now() operator(pg_catalog.+) pg_catalog.make_interval(secs => lease_seconds),
        open_until = null,
        reason = 'probe granted',
        updated_at = pg_catalog.now(),
        updated_by = owner,
        version = c.version operator(pg_catalog.+) 1
    where c.name = circuit_name
        and (
            (c.state = 'open' and c.open_until <= pg_catalog.now())
            or (c.state = 'half_open'
                and (c.probe_lease_until <= pg_catalog.now() or c.probe_owner = owner))
        )
    returning c.* into granted;

    if found then
        return resilience._circuit_announce(granted, old_state, owner)
            operator(pg_catalog.||) '{"granted": true}'::jsonb;
    end if;
    select c.* into current from resilience.circuits as c where c.name = circuit_name;
    if not found then
        -- Never shared before: the database knows of no trouble.
        return pg_catalog.jsonb_build_object(
            'name', circuit_name, 'state', 'closed', 'open_for', 0, 'lease_for', 0,
            'version', 0, 'granted', false);
    end if;
    return resilience._circuit_json(current) operator(pg_catalog.||) '{"granted": false}'::jsonb;
end;
$$;

-- The named circuits as they stand (a process catching up after a gap).
create or replace function resilience._circuit_get(circuit_names text[])
returns setof jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select resilience._circuit_json(c) from resilience.circuits as c
    where c.name operator(pg_catalog.=) any (circuit_names)
    order by c.name;
$$;

-- Every shared circuit, for dashboards: the same keys as the Python
-- breaker's health() plus when it will retry and who changed it last.
create or replace function resilience.circuit_health()
returns setof jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select resilience._circuit_json(c) operator(pg_catalog.||) pg_catalog.jsonb_build_object(
        'healthy', c.state in ('closed', 'disabled'),
        'failure_rate', coalesce(c.failure_rate, 0),
        'message', case c.state
            when 'open' then 'Circuit open - retry in ' || pg_catalog.round(greatest(0,
                extract(epoch from c.open_until operator(pg_catalog.-) pg_catalog.now()) * 1000))::bigint || 'ms'
            when 'half_open' then 'Circuit half-open - probe by ' || c.probe_owner
            when 'forced_open' then 'Circuit forced open - rejecting until reset'
            when 'disabled' then 'Circuit disabled - all calls pass'
            else 'Circuit closed'
        end)
    from resilience.circuits as c
    order by c.name;
$$;

-- The client's internal functions: callable by API users, never exposed as
-- wrappers (their names start with an underscore).
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'resilience_user') then
        grant execute on function
            resilience._circuit_publish(text, text, double precision, text, text, double precision, boolean),
            resilience._circuit_probe(text, text, double precision),
            resilience._circuit_get(text[])
        to resilience_user;
    end if;
end;
$$;
