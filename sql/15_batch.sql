-- tx_run: an atomic batch of writes in ONE real database transaction (the
-- call's own), with the caller's privileges (SECURITY INVOKER: grants and RLS
-- apply). Each operation is {"table", "operation", "data", "match"}, exactly
-- tx_execute's arguments, and is built by the same helpers
-- (_resolve_table, _execute_sql): client values only travel as bound jsonb.
--
-- A later operation may use a value an earlier one returned: a column value
-- (in data, or in match) that is exactly {"$ref": "<index>.<column>"} becomes
-- that column of the FIRST row operation <index> returned;
-- {"$ref": "<index>.<row>.<column>"} picks another row (0-based). Indexes are
-- 0-based and must point backwards. Only whole column values are resolved:
-- a {"$ref": ...} nested deeper (inside a jsonb column's value) is data.
--
-- Result: {"success": true, "results": [{"data": [rows], "count": n}, ...]},
-- one entry per operation, in order. Any failure: the whole statement fails,
-- so nothing persists; the error keeps the original SQLSTATE, its message
-- names the operation (index, operation, table), and its DETAIL is a JSON
-- object {"index", "table", "operation", "error", "detail"}.

-- The value {"$ref": "..."} points to, from the results so far.
create or replace function resilience._batch_ref(ref text, results jsonb[], op_index integer)
returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
declare
    parts text [] := pg_catalog.regexp_match(ref, '^([0-9]{1,9})[.](?:([0-9]{1,9})[.])?(.+)$');
    source integer;
    row_no integer;
    source_rows jsonb;
    found_row jsonb;
begin
    if parts is null then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('invalid $ref %L: expected "<index>.<column>" or "<index>.<row>.<column>"', ref);
    end if;
    source := parts[1]::integer;
    row_no := coalesce(parts[2]::integer, 0);
    if source operator(pg_catalog.>=) op_index then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('$ref %L must refer to an earlier operation (this is operation %s)', ref, op_index);
    end if;
    source_rows := results[source operator(pg_catalog.+) 1] operator(pg_catalog.->) 'data';
    found_row := source_rows operator(pg_catalog.->) row_no;
    if found_row is null then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('$ref %L: operation %s returned %s row(s), there is no row %s',
                ref, source, pg_catalog.jsonb_array_length(source_rows), row_no);
    end if;
    if not found_row operator(pg_catalog.?) parts[3] then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('$ref %L: the rows of operation %s have no column %I', ref, source, parts[3]);
    end if;
    return found_row operator(pg_catalog.->) parts[3];
end;
$$;

-- One row object with every {"$ref": ...} column value replaced.
create or replace function resilience._batch_resolve_row(row_value jsonb, results jsonb[], op_index integer)
returns jsonb
language sql
immutable
set search_path = ''
as $$
    select coalesce(pg_catalog.jsonb_object_agg(
        e.key,
        case
            when pg_catalog.jsonb_typeof(e.value) operator(pg_catalog.=) 'object'
                and e.value operator(pg_catalog.?) '$ref'
                and (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(e.value)) operator(pg_catalog.=) 1
                then resilience._batch_ref(e.value operator(pg_catalog.->>) '$ref', results, op_index)
            else e.value
        end), '{}'::jsonb)
    from pg_catalog.jsonb_each(row_value) as e;
$$;

-- data (a row or an array of rows) or match (a row), references resolved.
create or replace function resilience._batch_resolve(value jsonb, results jsonb[], op_index integer)
returns jsonb
language sql
immutable
set search_path = ''
as $$
    select case pg_catalog.jsonb_typeof(value)
        when 'object' then resilience._batch_resolve_row(value, results, op_index)
        when 'array' then (
            select coalesce(pg_catalog.jsonb_agg(
                case when pg_catalog.jsonb_typeof(e.value) operator(pg_catalog.=) 'object'
                    then resilience._batch_resolve_row(e.value, results, op_index)
                    else e.value
                end order by e.ord), '[]'::jsonb)
            from pg_catalog.jsonb_array_elements(value) with ordinality as e (value, ord))
        when 'null' then null
        else value
    end;
$$;

-- Raise 22023 unless `operation` is {"table": text, "operation": text,
-- "data"?: ..., "match"?: ...} and nothing else.
create or replace function resilience._batch_check(operation jsonb, op_index integer)
returns void
language plpgsql
immutable
set search_path = ''
as $$
declare
    unknown_key text;
begin
    if pg_catalog.jsonb_typeof(operation) is distinct from 'object' then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('operation %s must be an object {"table", "operation", "data", "match"}', op_index);
    end if;
    select k into unknown_key from pg_catalog.jsonb_object_keys(operation) as k
    where k operator(pg_catalog.<>) all (array['table', 'operation', 'data', 'match'])
    limit 1;
    if unknown_key is not null then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('operation %s has an unknown key %L', op_index, unknown_key),
            hint = 'Keys are table, operation, data and match.';
    end if;
    if pg_catalog.jsonb_typeof(operation operator(pg_catalog.->) 'table') is distinct from 'string'
        or pg_catalog.jsonb_typeof(operation operator(pg_catalog.->) 'operation') is distinct from 'string'
    then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('operation %s needs "table" and "operation" strings', op_index);
    end if;
end;
$$;

create or replace function resilience.tx_run(operations jsonb)
returns jsonb
language plpgsql
volatile
-- As tx_execute: the caller's privileges, a pinned search_path.
security invoker
set search_path = ''
as $$
declare
    -- One entry per operation done. An array, appended to in place: a jsonb
    -- value would be copied whole by every append (10,000 operations took
    -- minutes).
    results jsonb [] := '{}';
    -- Each table's descriptor, read once per batch (not once per operation).
    descriptors jsonb := '{}';
    descriptor jsonb;
    operation jsonb;
    op_index integer := -1;
    op_name text;
    data jsonb;
    match jsonb;
    relation regclass;
    statement text;
    rows_json jsonb;
    row_count bigint;
    failed_state text;
    failed_message text;
    failed_detail text;
    failed_hint text;
begin
    if pg_catalog.jsonb_typeof(operations) is distinct from 'array'
        or operations operator(pg_catalog.=) '[]'::jsonb
    then
        raise exception using
            errcode = '22023',
            message = 'tx_run needs a non-empty array of operations {"table", "operation", "data", "match"}';
    end if;
    -- One block for the whole batch: an error anywhere undoes every
    -- operation before it, then is raised again with the failing operation
    -- named (the SQLSTATE is kept).
    begin
        for operation in
            select e.value from pg_catalog.jsonb_array_elements(operations) with ordinality as e (value, ord)
            order by e.ord
        loop
            op_index := op_index operator(pg_catalog.+) 1;
            perform resilience._batch_check(operation, op_index);
            op_name := operation operator(pg_catalog.->>) 'operation';
            data := resilience._batch_resolve(operation operator(pg_catalog.->) 'data', results, op_index);
            match := resilience._batch_resolve(operation operator(pg_catalog.->) 'match', results, op_index);
            relation := resilience._resolve_table(operation operator(pg_catalog.->>) 'table');
            descriptor := descriptors operator(pg_catalog.->) relation::oid::text;
            if descriptor is null then
                descriptor := resilience._descriptor(relation);
                descriptors := descriptors operator(pg_catalog.||)
                    pg_catalog.jsonb_build_object(relation::oid::text, descriptor);
            end if;
            statement := resilience._execute_sql(relation, op_name, data, match, null, descriptor);
            execute statement into rows_json, row_count using data, match;
            -- No row: a one-row insert a BEFORE trigger skipped.
            results := pg_catalog.array_append(results,
                pg_catalog.jsonb_build_object('data', coalesce(rows_json, '[]'::pg_catalog.jsonb),
                    'count', coalesce(row_count, 0)));
        end loop;
    exception when others then
        get stacked diagnostics
            failed_state = returned_sqlstate,
            failed_message = message_text,
            failed_detail = pg_exception_detail,
            failed_hint = pg_exception_hint;
        raise exception using
            errcode = failed_state,
            message = pg_catalog.format('tx_run operation %s (%s on %s) failed: %s',
                op_index,
                coalesce(operation operator(pg_catalog.->>) 'operation', '?'),
                coalesce(operation operator(pg_catalog.->>) 'table', '?'),
                failed_message),
            detail = pg_catalog.jsonb_build_object(
                'index', op_index,
                'table', operation operator(pg_catalog.->>) 'table',
                'operation', operation operator(pg_catalog.->>) 'operation',
                'error', failed_message,
                'detail', nullif(failed_detail, '')
            )::text,
            hint = coalesce(nullif(failed_hint, ''), 'Nothing was written: the whole batch was undone.');
    end;
    return pg_catalog.jsonb_build_object('success', true, 'results', pg_catalog.to_jsonb(results));
end;
$$;

-- tx_run runs as the caller: clients need its SECURITY INVOKER helpers.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'resilience_user') then
        grant execute on function
            resilience._batch_ref(text, jsonb [], integer),
            resilience._batch_resolve_row(jsonb, jsonb [], integer),
            resilience._batch_resolve(jsonb, jsonb [], integer),
            resilience._batch_check(jsonb, integer)
        to resilience_user;
    end if;
end;
$$;
