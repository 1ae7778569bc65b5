-- tx_execute: one write (or lock) inside a logical transaction, with the
-- CALLER's privileges (SECURITY INVOKER), so the table's grants and RLS
-- apply. The statement is built from the table's descriptor (kept in the
-- registry by manage_table, so no catalog reads per call) with
-- format('%I'); client values only ever travel as bound jsonb parameters
-- ($1 data, $2 match). Capture, claims and the audit row come from the
-- table's capture trigger (or, for lock, its lock function), never from the
-- caller: every 'execute' audit row is a statement that really ran.

-- 'users' (schema public, as supabase-js means it) or 'app.users'.
create or replace function resilience._resolve_table(table_name text)
returns regclass
language plpgsql
stable
set search_path = ''
as $$
declare
    parts text [];
    resolved regclass;
begin
    if table_name is null or table_name = '' then
        raise exception using errcode = '22023', message = 'table_name must not be empty';
    end if;
    begin
        parts := pg_catalog.parse_ident(table_name);
    exception when invalid_parameter_value or syntax_error then
        raise exception using
            errcode = '22023', message = pg_catalog.format('invalid table name %L', table_name);
    end;
    if pg_catalog.cardinality(parts) = 1 then
        parts := array['public', parts[1]];
    elsif pg_catalog.cardinality(parts) <> 2 then
        raise exception using
            errcode = '22023', message = pg_catalog.format('invalid table name %L', table_name);
    end if;
    resolved := pg_catalog.to_regclass(pg_catalog.format('%I.%I', parts[1], parts[2]));
    -- supabase-js names a table by its exact name ('User', as Prisma
    -- creates it); here names are SQL identifiers: say how to quote it.
    if resolved is null and pg_catalog.strpos(table_name, '"') = 0 and table_name <> pg_catalog.lower(table_name) then
        raise exception using
            errcode = '42P01',
            message = pg_catalog.format('table %I.%I does not exist', parts[1], parts[2]),
            hint = pg_catalog.format('Names are read as SQL identifiers (unquoted means lower case): '
                'for the table named exactly %s, pass %s.', table_name,
                (select pg_catalog.string_agg(pg_catalog.quote_ident(p.part), '.' order by p.ord)
                    from pg_catalog.unnest(pg_catalog.string_to_array(table_name, '.'))
                        with ordinality as p (part, ord)));
    elsif resolved is null then
        raise exception using
            errcode = '42P01',
            message = pg_catalog.format('table %I.%I does not exist', parts[1], parts[2]);
    end if;
    return resolved;
end;
$$;

-- Lazy reap (one index probe when nothing expired), the transaction check
-- (RZ001 / RZ002 / RZ003, before the write is even tried: a caller who does
-- not own it learns nothing else) and the managed table's descriptor
-- (22023 when it is not managed).
create or replace function resilience._execute_prepare(tx_id uuid, relation regclass)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    managed jsonb;
    shape text;
begin
    perform resilience._reap_if_expired();
    perform resilience._tx_for_capture(tx_id::text);
    select m.descriptor, m.shape into managed, shape from resilience.managed_tables as m
    where m.relation = _execute_prepare.relation;
    -- DDL the event trigger could not regenerate (images were held then):
    -- regenerate now if it can be done, else RZ007 names manage_table.
    if managed is not null and shape is null then
        begin
            perform resilience._generate(relation);
        exception when sqlstate 'RZ007' then
            perform resilience._require_shape(relation);
        end;
        select m.descriptor into managed from resilience.managed_tables as m
        where m.relation = _execute_prepare.relation;
    end if;
    if managed is null then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('table %s is not managed by pgresilience', relation),
            hint = 'Call resilience.manage_table(table) first (as the table owner).';
    end if;
    -- Renamed since manage_table (and no event trigger regenerated it): the
    -- descriptor's name is stale. Other shape changes are caught by the
    -- capture trigger.
    if not resilience._ddl_regenerates() and managed ->> 'target' is distinct from (
        select pg_catalog.format('%I.%I', n.nspname, c.relname) from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace where c.oid = relation
    ) then
        perform resilience._require_shape(relation);
    end if;
    return managed;
end;
$$;

-- plpgsql, not sql: a non-inlined sql function is planned again on every
-- call from another function; plpgsql keeps its plans for the session.
create or replace function resilience._descriptor(relation regclass)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
begin
    return coalesce(
        (select m.descriptor from resilience.managed_tables as m where m.relation = _descriptor.relation),
        resilience._describe(relation));
end;
$$;

-- Raise 42703 unless every name is a column of the table.
create or replace function resilience._require_columns(descriptor jsonb, names text[])
returns void
language plpgsql
immutable
set search_path = ''
as $$
declare
    missing text;
begin
    select k.name into missing
    from pg_catalog.unnest(names) as k (name)
    where not (descriptor -> 'columns') ? k.name
    limit 1;
    if missing is not null then
        raise exception using
            errcode = '42703',
            message = pg_catalog.format('column %I of table %s does not exist', missing, descriptor ->> 'target');
    end if;
end;
$$;

-- `(a type_a, b type_b)`: the column definition list that reads exactly the
-- named columns from client JSON (jsonb_to_record): a column the client did
-- not name is never read, so a NOT NULL domain on it is not tripped.
create or replace function resilience._record_definition(descriptor jsonb, names text[])
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
    return (
        select '(' || pg_catalog.string_agg(
            pg_catalog.format('%I %s', k.name, descriptor -> 'types' ->> k.name), ', ' order by k.name) || ')'
        from pg_catalog.unnest(names) as k (name));
end;
$$;

-- The insert of one row object ($1) naming the columns `names` (sorted):
-- the statement tx_execute runs for it, built per call or written once into
-- a table's generated insert function (_generate), so that both run the same.
create or replace function resilience._insert_row_sql(descriptor jsonb, names text[], returning_sql text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
    return (
        select pg_catalog.format(
            'insert into %s as t (%s) select %s from pg_catalog.jsonb_to_record($1) as d %s returning %s',
            descriptor ->> 'target',
            pg_catalog.string_agg(pg_catalog.format('%I', k.name), ', ' order by k.ord),
            pg_catalog.string_agg(pg_catalog.format('d.%I', k.name), ', ' order by k.ord),
            resilience._record_definition(descriptor, names), returning_sql)
        from pg_catalog.unnest(names) with ordinality as k (name, ord));
end;
$$;

-- `(a type_a, b type_b)` for the values of a match filter: the columns'
-- match types (see _describe), so that a value equals only what `=` says
-- it equals. (A descriptor stored before match_types reads 'types'.)
create or replace function resilience._match_definition(descriptor jsonb, names text[])
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
    return (
        select '(' || pg_catalog.string_agg(
            pg_catalog.format('%I %s', k.name,
                coalesce(descriptor -> 'match_types' ->> k.name, descriptor -> 'types' ->> k.name)),
            ', ' order by k.name) || ')'
        from pg_catalog.unnest(names) as k (name));
end;
$$;

-- `t.col = m.col and ...` for an equality filter ({"col": null} means IS NULL),
-- `=` qualified where the descriptor says (match_ops).
create or replace function resilience._match_sql(descriptor jsonb, match jsonb)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
    names text [];
    incomparable text;
    condition text;
    usable boolean;
begin
    if match is null or pg_catalog.jsonb_typeof(match) <> 'object' or match = '{}'::jsonb then
        raise exception using
            errcode = '22023',
            message = 'match must be a non-empty object {column: value}',
            hint = 'update, delete and lock never touch every row: say which rows.';
    end if;
    -- One query for the usual filter; an unknown or incomparable column
    -- takes the checks below, which name it (and raise).
    select pg_catalog.string_agg(
            case when pg_catalog.jsonb_typeof(match -> k) = 'null'
                then pg_catalog.format('t.%I is null', k)
                else pg_catalog.format('t.%1$I %2$s m.%1$I', k,
                    coalesce(descriptor -> 'match_ops' ->> k, '='))
            end, ' and ' order by k),
        pg_catalog.bool_and((descriptor -> 'columns') ? k
            and (pg_catalog.jsonb_typeof(match -> k) = 'null' or (descriptor -> 'comparable') ? k))
    into condition, usable
    from pg_catalog.jsonb_object_keys(match) as k;
    if usable then
        return condition;
    end if;
    select pg_catalog.array_agg(k order by k) into names from pg_catalog.jsonb_object_keys(match) as k;
    perform resilience._require_columns(descriptor, names);
    select k into incomparable from pg_catalog.unnest(names) as k
    where pg_catalog.jsonb_typeof(match -> k) <> 'null' and not (descriptor -> 'comparable') ? k
    limit 1;
    if incomparable is not null then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('match cannot compare column %I of table %s: its type has no equality',
                incomparable, descriptor ->> 'target');
    end if;
    return condition;
end;
$$;

-- What a write returns of each row: the whole row as the caller may read it
-- (every column with a table SELECT grant, else only the granted columns).
create or replace function resilience._returning_sql(relation regclass, descriptor jsonb)
returns text
language plpgsql
stable
set search_path = ''
as $$
begin
    if pg_catalog.has_table_privilege(relation, 'SELECT') then
        return 'pg_catalog.to_jsonb(t.*)';
    end if;
    return coalesce((
        select pg_catalog.string_agg(chunk.part, ' operator(pg_catalog.||) ')
        from (
            select pg_catalog.format('pg_catalog.jsonb_build_object(%s)',
                pg_catalog.string_agg(pg_catalog.format('%L, t.%I', c.name, c.name), ', ' order by c.ord)) as part
            from pg_catalog.jsonb_array_elements_text(descriptor -> 'columns') with ordinality as c (name, ord)
            where pg_catalog.has_column_privilege(relation, c.name, 'SELECT')
            group by (c.ord - 1) / 50
        ) as chunk), '''{}''::pg_catalog.jsonb');
end;
$$;

-- The statement for tx_execute and tx_run: returns (rows jsonb, count bigint).
-- lock_tx: the logical transaction a lock claims rows for (tx_execute); null
-- in tx_run, where lock is a plain SELECT ... FOR UPDATE NOWAIT.
create or replace function resilience._execute_sql(
    relation regclass, operation text, data jsonb, match jsonb, lock_tx uuid default null,
    known_descriptor jsonb default null
)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
    descriptor jsonb := coalesce(known_descriptor, resilience._descriptor(relation));
    target text := descriptor ->> 'target';
    returning_sql text := resilience._returning_sql(relation, descriptor);
    names text [];
    known boolean;
    cols text;
    data_cols text;
    key_cols text;
    set_names text [];
    result_sql text := 'select coalesce(pg_catalog.jsonb_agg(w.j), ''[]''::pg_catalog.jsonb), '
        'pg_catalog.count(*) from w';
    -- insert and upsert read an array of rows; one row object is an array of one.
    rows_of_data constant text := 'case pg_catalog.jsonb_typeof($1) when ''array'' then $1 '
        'else pg_catalog.jsonb_build_array($1) end';
begin
    -- One row object to insert (the common call), in one query over its
    -- keys: a plain INSERT ... RETURNING, cheaper to plan than the statement
    -- over a set; it returns (rows, count), or no row when a BEFORE trigger
    -- skipped it. Anything unusual (no keys, an unknown column) takes the
    -- general path below, which names the error.
    if operation = 'insert' and match is null and pg_catalog.jsonb_typeof(data) = 'object' then
        select pg_catalog.array_agg(k order by k), pg_catalog.bool_and((descriptor -> 'columns') ? k)
        into names, known
        from pg_catalog.jsonb_object_keys(data) as k;
        if known then
            return resilience._insert_row_sql(descriptor, names,
                pg_catalog.format('pg_catalog.jsonb_build_array(%s), 1::pg_catalog.int8', returning_sql));
        end if;
    end if;
    if operation in ('insert', 'upsert') then
        if match is not null then
            raise exception using errcode = '22023', message = pg_catalog.format('%s takes no match', operation);
        end if;
        if data is null or pg_catalog.jsonb_typeof(data) not in ('object', 'array')
            or data in ('[]'::jsonb, '{}'::jsonb)
            or exists (
                select 1 from pg_catalog.jsonb_array_elements(
                    case when pg_catalog.jsonb_typeof(data) = 'array' then data
                        else pg_catalog.jsonb_build_array(data) end) as e
                where pg_catalog.jsonb_typeof(e) <> 'object' or e = '{}'::jsonb
            )
        then
            raise exception using
                errcode = '22023',
                message = pg_catalog.format('%s needs data: a non-empty row object or an array of them', operation);
        end if;
        -- Every row names the same columns (as PostgREST requires): absent
        -- columns then take their defaults.
        select pg_catalog.array_agg(k order by k) into names
        from pg_catalog.jsonb_object_keys(
            case when pg_catalog.jsonb_typeof(data) = 'array' then data -> 0 else data end) as k;
        if pg_catalog.jsonb_typeof(data) = 'array' and exists (
            select 1 from pg_catalog.jsonb_array_elements(data) as e
            where (select pg_catalog.array_agg(k order by k) from pg_catalog.jsonb_object_keys(e) as k)
                is distinct from names
        ) then
            raise exception using errcode = '22023', message = 'every row in data must have the same columns';
        end if;
        perform resilience._require_columns(descriptor, names);
        select pg_catalog.string_agg(pg_catalog.format('%I', k), ', ' order by k),
            pg_catalog.string_agg(pg_catalog.format('d.%I', k), ', ' order by k)
        into cols, data_cols
        from pg_catalog.unnest(names) as k;
        if operation = 'insert' then
            return pg_catalog.format(
                'with w as (insert into %1$s as t (%2$s) select %3$s '
                'from pg_catalog.jsonb_to_recordset(' || rows_of_data || ') as d %6$s returning %4$s as j) %5$s',
                target, cols, data_cols, returning_sql, result_sql,
                resilience._record_definition(descriptor, names));
        end if;
        if pg_catalog.jsonb_array_length(descriptor -> 'key') = 0 then
            raise exception using
                errcode = '22023',
                message = pg_catalog.format('upsert needs a primary key: table %s has none', target);
        end if;
        select pg_catalog.string_agg(pg_catalog.format('%I', k), ', ' order by o)
        into key_cols
        from pg_catalog.jsonb_array_elements_text(descriptor -> 'key') with ordinality as u (k, o);
        select pg_catalog.array_agg(k order by k) into set_names
        from pg_catalog.unnest(names) as k
        where not (descriptor -> 'key') ? k;
        return pg_catalog.format(
            'with w as (insert into %1$s as t (%2$s) %7$s select %3$s '
            'from pg_catalog.jsonb_to_recordset(' || rows_of_data || ') as d %9$s '
            'on conflict (%4$s) %5$s returning %8$s as j) %6$s',
            target, cols, data_cols, key_cols,
            case when set_names is null then 'do nothing'
                else (select pg_catalog.format('do update set (%s) = row(%s)',
                        pg_catalog.string_agg(pg_catalog.format('%I', k), ', ' order by k),
                        pg_catalog.string_agg(pg_catalog.format('excluded.%I', k), ', ' order by k))
                    from pg_catalog.unnest(set_names) as k)
            end,
            result_sql,
            -- An upsert names rows by key, identity GENERATED ALWAYS included.
            case when descriptor -> 'identity_always' ?| names then 'overriding system value' else '' end,
            returning_sql, resilience._record_definition(descriptor, names));
    elsif operation = 'update' then
        if data is null or pg_catalog.jsonb_typeof(data) <> 'object' or data = '{}'::jsonb then
            raise exception using
                errcode = '22023', message = 'update needs data: one non-empty object of new values';
        end if;
        select pg_catalog.array_agg(k order by k) into names from pg_catalog.jsonb_object_keys(data) as k;
        perform resilience._require_columns(descriptor, names);
        return pg_catalog.format(
            'with w as (update %1$s as t set (%2$s) = row(%3$s) '
            'from pg_catalog.jsonb_to_record($1) as d %8$s, '
            'pg_catalog.jsonb_to_record($2) as m %7$s where %4$s returning %6$s as j) %5$s',
            target,
            (select pg_catalog.string_agg(pg_catalog.format('%I', k), ', ' order by k)
                from pg_catalog.unnest(names) as k),
            (select pg_catalog.string_agg(pg_catalog.format('d.%I', k), ', ' order by k)
                from pg_catalog.unnest(names) as k),
            resilience._match_sql(descriptor, match), result_sql, returning_sql,
            resilience._match_definition(descriptor, array(select pg_catalog.jsonb_object_keys(match))),
            resilience._record_definition(descriptor, names));
    elsif operation = 'delete' then
        if data is not null then
            raise exception using errcode = '22023', message = 'delete takes no data, only match';
        end if;
        return pg_catalog.format(
            'with w as (delete from %1$s as t using pg_catalog.jsonb_to_record($2) as m %5$s '
            'where %2$s returning %4$s as j) %3$s',
            target, resilience._match_sql(descriptor, match), result_sql, returning_sql,
            resilience._match_definition(descriptor, array(select pg_catalog.jsonb_object_keys(match))));
    elsif operation = 'lock' then
        if data is not null then
            raise exception using errcode = '22023', message = 'lock takes no data, only match';
        end if;
        -- NOWAIT: a row another database transaction is writing fails at
        -- once (55P03), like a claimed row.
        return pg_catalog.format(
            'with w as (select t.tableoid as o, t.ctid as c, %3$s as j '
            'from %1$s as t, pg_catalog.jsonb_to_record($2) as m %5$s '
            'where %2$s for update of t nowait) %4$s',
            target, resilience._match_sql(descriptor, match), returning_sql,
            case when lock_tx is null then result_sql
                else pg_catalog.format(
                    'select coalesce(pg_catalog.jsonb_agg(w.j), ''[]''::pg_catalog.jsonb), '
                    '%s($3, coalesce(pg_catalog.array_agg(w.o), ''{}''), coalesce(pg_catalog.array_agg(w.c), ''{}'')) '
                    'from w', descriptor ->> 'lock')
            end,
            resilience._match_definition(descriptor, array(select pg_catalog.jsonb_object_keys(match))));
    end if;
    raise exception using
        errcode = '22023',
        message = pg_catalog.format('unknown operation %L: one of insert, update, delete, upsert, lock', operation);
end;
$$;

create or replace function resilience.tx_execute(
    tx_id uuid, table_name text, operation text, data jsonb default null, match jsonb default null
)
returns jsonb
language plpgsql
volatile
-- SECURITY INVOKER: the write is the caller's (grants, RLS). The pinned
-- search_path keeps a hijacked one from running look-alike operators in
-- here; RLS policies and triggers of managed tables must therefore name
-- their objects with a schema (docs/transactions.md, known limitations).
security invoker
set search_path = ''
as $$
declare
    relation regclass;
    descriptor jsonb;
    statement text;
    rows_json jsonb;
    row_count bigint;
    previous text := coalesce(pg_catalog.current_setting('resilience.tx_id', true), '');
    -- set_config's result, not used: an assignment is a plain expression
    -- (about 0.4 us), a PERFORM a whole query (about 1.8 us).
    ignored text;
begin
    if operation is null or operation not in ('insert', 'update', 'delete', 'upsert', 'lock') then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('unknown operation %L: one of insert, update, delete, upsert, lock', operation);
    end if;
    if tx_id is null then
        raise exception using errcode = 'RZ001', message = 'logical transaction id is null';
    end if;
    relation := resilience._resolve_table(table_name);
    descriptor := resilience._execute_prepare(tx_id, relation);
    -- The capture trigger reads this setting: the write belongs to tx_id.
    ignored := pg_catalog.set_config('resilience.tx_id', tx_id::text, true);
    -- A lock by primary key, or an insert of one row naming the usual
    -- columns, by a caller who may read the whole row: the table's
    -- generated function, whose plan the session keeps; it returns a null
    -- count for any other call (the general path returns only the granted
    -- columns to a caller with column grants).
    if operation = 'lock' and data is null and descriptor ? 'lock_by_key'
        and pg_catalog.has_table_privilege(relation, 'SELECT')
    then
        execute pg_catalog.format('select * from %s($1, $2)', descriptor ->> 'lock_by_key')
        into rows_json, row_count using tx_id, match;
    elsif operation = 'insert' and match is null and descriptor ? 'insert_row'
        and pg_catalog.has_table_privilege(relation, 'SELECT')
    then
        execute pg_catalog.format('select * from %s($1)', descriptor ->> 'insert_row')
        into rows_json, row_count using data;
    end if;
    if row_count is null then
        statement := resilience._execute_sql(relation, operation, data, match, tx_id, descriptor);
        execute statement into rows_json, row_count using data, match, tx_id;
    end if;
    ignored := pg_catalog.set_config('resilience.tx_id', previous, true);
    return pg_catalog.jsonb_build_object('success', true, 'data', coalesce(rows_json, '[]'::jsonb),
        'count', coalesce(row_count, 0));
end;
$$;
