-- tx_execute: one write inside a logical transaction, with the CALLER's
-- privileges (SECURITY INVOKER), so the table's grants and RLS apply. The
-- statement is built from the catalog with format('%I'); client values only
-- ever travel as bound jsonb parameters ($1 data, $2 match). Bookkeeping runs
-- in the SECURITY DEFINER helpers and the capture trigger.

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
    parts := pg_catalog.parse_ident(table_name);
    if pg_catalog.cardinality(parts) = 1 then
        parts := array['public', parts[1]];
    elsif pg_catalog.cardinality(parts) <> 2 then
        raise exception using
            errcode = '22023', message = pg_catalog.format('invalid table name %L', table_name);
    end if;
    resolved := pg_catalog.to_regclass(pg_catalog.format('%I.%I', parts[1], parts[2]));
    if resolved is null then
        raise exception using
            errcode = '42P01',
            message = pg_catalog.format('table %I.%I does not exist', parts[1], parts[2]);
    end if;
    return resolved;
end;
$$;

-- Lazy reap, transaction check (RZ001/RZ002/RZ003), managed-table check.
-- One SECURITY DEFINER call with the checks of _tx_locked and _require_active
-- inlined: every nested PL/pgSQL call with a SET clause costs as much as a
-- small query.
create or replace function resilience._execute_prepare(tx_id uuid, relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tx resilience.transactions;
begin
    if exists (
        select 1 from resilience.transactions as t
        where t.status = 'active' and t.expires_at < pg_catalog.clock_timestamp()
    ) then
        perform resilience._reap_if_expired();
    end if;
    if tx_id is null then
        raise exception using errcode = 'RZ001', message = 'logical transaction id is null';
    end if;
    select t.* into tx from resilience.transactions as t where t.id = _execute_prepare.tx_id for share;
    if tx.id is null
        or tx.owner_role <> resilience._caller_role()
        or tx.owner_sub is distinct from resilience._caller_sub()
    then
        raise exception using
            errcode = 'RZ001',
            message = pg_catalog.format('logical transaction %s not found', tx_id),
            hint = 'It does not exist or belongs to another role/user.';
    end if;
    if tx.status <> 'active' or tx.expires_at <= pg_catalog.clock_timestamp() then
        perform resilience._require_active(tx);
    end if;
    if not exists (select 1 from resilience.managed_tables as m where m.relation = _execute_prepare.relation) then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('table %s is not managed by pgresilience', relation),
            hint = 'Call resilience.manage_table(table) first (as the table owner).';
    end if;
end;
$$;

-- The 'execute' audit row (duration measured from `started`). Checks that
-- the caller owns the transaction: clients may call this helper directly.
create or replace function resilience._execute_done(
    tx_id uuid, relation regclass, operation text, row_count bigint, started timestamptz
)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if not exists (
        select 1 from resilience.transactions as t
        where t.id = _execute_done.tx_id and t.status = 'active'
            and t.owner_role = resilience._caller_role()
            and t.owner_sub is not distinct from resilience._caller_sub()
    ) then
        raise exception using
            errcode = 'RZ001',
            message = pg_catalog.format('logical transaction %s not found', tx_id);
    end if;
    insert into resilience.audit_log (event, tx_id, actor_role, actor_sub, detail)
    values ('execute', tx_id, resilience._caller_role(), resilience._caller_sub(), pg_catalog.jsonb_build_object(
        'table', relation::text, 'operation', operation, 'rows', row_count,
        'duration_ms', pg_catalog.round(
            extract(epoch from pg_catalog.clock_timestamp() - started) * 1000, 3)
    ));
end;
$$;

-- Raise 42703 unless every name is a column of the table.
create or replace function resilience._require_columns(relation regclass, names text[])
returns void
language plpgsql
stable
set search_path = ''
as $$
declare
    missing text;
begin
    select k.name into missing
    from pg_catalog.unnest(names) as k (name)
    where not exists (
        select 1 from pg_catalog.pg_attribute as a
        where a.attrelid = relation and a.attname = k.name and a.attnum > 0 and not a.attisdropped
    )
    limit 1;
    if missing is not null then
        raise exception using
            errcode = '42703',
            message = pg_catalog.format('column %I of table %s does not exist', missing, relation);
    end if;
end;
$$;

-- `t.col = m.col and ...` for an equality filter ({"col": null} means IS NULL).
create or replace function resilience._match_sql(relation regclass, match jsonb)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
    names text [];
begin
    if match is null or pg_catalog.jsonb_typeof(match) <> 'object' or match = '{}'::jsonb then
        raise exception using
            errcode = '22023',
            message = 'match must be a non-empty object {column: value}',
            hint = 'update and delete never touch every row: say which rows.';
    end if;
    select pg_catalog.array_agg(k order by k) into names from pg_catalog.jsonb_object_keys(match) as k;
    perform resilience._require_columns(relation, names);
    return (
        select pg_catalog.string_agg(
            case when pg_catalog.jsonb_typeof(match -> k) = 'null'
                then pg_catalog.format('t.%I is null', k)
                else pg_catalog.format('t.%1$I = m.%1$I', k)
            end, ' and ' order by k)
        from pg_catalog.unnest(names) as k
    );
end;
$$;

-- The write statement for tx_execute. Returns (rows jsonb, count bigint).
create or replace function resilience._execute_sql(
    relation regclass, operation text, data jsonb, match jsonb
)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
    target text;
    names text [];
    cols text;
    data_cols text;
    key_cols text;
    set_names text [];
    result_sql text := 'select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w)), ''[]''::jsonb), '
        'pg_catalog.count(*) from w';
begin
    select pg_catalog.format('%I.%I', n.nspname, c.relname) into target
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
    where c.oid = relation;

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
        perform resilience._require_columns(relation, names);
        select pg_catalog.string_agg(pg_catalog.format('%I', k), ', ' order by k),
            pg_catalog.string_agg(pg_catalog.format('d.%I', k), ', ' order by k)
        into cols, data_cols
        from pg_catalog.unnest(names) as k;
        if operation = 'insert' then
            return pg_catalog.format(
                'with w as (insert into %1$s as t (%2$s) select %3$s '
                'from pg_catalog.jsonb_populate_recordset(null::%1$s, $1) as d returning t.*) %4$s',
                target, cols, data_cols, result_sql);
        end if;
        select pg_catalog.string_agg(pg_catalog.format('%I', a.attname), ', ' order by k.ord)
        into key_cols
        from pg_catalog.pg_index as i
        cross join lateral pg_catalog.unnest(i.indkey::int2 []) with ordinality as k (attnum, ord)
        inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
        where i.indrelid = relation and i.indisprimary;
        select pg_catalog.array_agg(k order by k) into set_names
        from pg_catalog.unnest(names) as k
        where not exists (
            select 1 from pg_catalog.pg_index as i
            inner join pg_catalog.pg_attribute as a
                on a.attrelid = i.indrelid and a.attnum = any (i.indkey::int2 [])
            where i.indrelid = relation and i.indisprimary and a.attname = k
        );
        return pg_catalog.format(
            'with w as (insert into %1$s as t (%2$s) %7$s select %3$s '
            'from pg_catalog.jsonb_populate_recordset(null::%1$s, $1) as d '
            'on conflict (%4$s) %5$s returning t.*) %6$s',
            target, cols, data_cols, key_cols,
            case when set_names is null then 'do nothing'
                else (select pg_catalog.format('do update set (%s) = row(%s)',
                        pg_catalog.string_agg(pg_catalog.format('%I', k), ', ' order by k),
                        pg_catalog.string_agg(pg_catalog.format('excluded.%I', k), ', ' order by k))
                    from pg_catalog.unnest(set_names) as k)
            end,
            result_sql,
            -- An upsert names rows by key, identity GENERATED ALWAYS included.
            case when exists (
                select 1 from pg_catalog.pg_attribute as a
                where a.attrelid = relation and a.attidentity = 'a' and a.attname = any (names)
            ) then 'overriding system value' else '' end);
    elsif operation = 'update' then
        if data is null or pg_catalog.jsonb_typeof(data) <> 'object' or data = '{}'::jsonb then
            raise exception using
                errcode = '22023', message = 'update needs data: one non-empty object of new values';
        end if;
        select pg_catalog.array_agg(k order by k) into names from pg_catalog.jsonb_object_keys(data) as k;
        perform resilience._require_columns(relation, names);
        return pg_catalog.format(
            'with w as (update %1$s as t set (%2$s) = row(%3$s) '
            'from pg_catalog.jsonb_populate_record(null::%1$s, $1) as d, '
            'pg_catalog.jsonb_populate_record(null::%1$s, $2) as m where %4$s returning t.*) %5$s',
            target,
            (select pg_catalog.string_agg(pg_catalog.format('%I', k), ', ' order by k)
                from pg_catalog.unnest(names) as k),
            (select pg_catalog.string_agg(pg_catalog.format('d.%I', k), ', ' order by k)
                from pg_catalog.unnest(names) as k),
            resilience._match_sql(relation, match), result_sql);
    elsif operation = 'delete' then
        if data is not null then
            raise exception using errcode = '22023', message = 'delete takes no data, only match';
        end if;
        return pg_catalog.format(
            'with w as (delete from %1$s as t using pg_catalog.jsonb_populate_record(null::%1$s, $2) as m '
            'where %2$s returning t.*) %3$s',
            target, resilience._match_sql(relation, match), result_sql);
    end if;
    raise exception using
        errcode = '22023',
        message = pg_catalog.format('unknown operation %L: one of insert, update, delete, upsert', operation);
end;
$$;

create or replace function resilience.tx_execute(
    tx_id uuid, table_name text, operation text, data jsonb default null, match jsonb default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    started timestamptz := pg_catalog.clock_timestamp();
    relation regclass;
    statement text;
    rows_json jsonb;
    row_count bigint;
    previous text := coalesce(pg_catalog.current_setting('resilience.tx_id', true), '');
begin
    if operation is null or operation not in ('insert', 'update', 'delete', 'upsert') then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('unknown operation %L: one of insert, update, delete, upsert', operation);
    end if;
    relation := resilience._resolve_table(table_name);
    perform resilience._execute_prepare(tx_id, relation);
    statement := resilience._execute_sql(relation, operation, data, match);
    if pg_catalog.jsonb_typeof(data) = 'object' and operation in ('insert', 'upsert') then
        data := pg_catalog.jsonb_build_array(data);
    end if;
    -- The capture trigger reads this setting: the write belongs to tx_id.
    perform pg_catalog.set_config('resilience.tx_id', tx_id::text, true);
    execute statement into rows_json, row_count using data, match;
    perform pg_catalog.set_config('resilience.tx_id', previous, true);
    perform resilience._execute_done(tx_id, relation, operation, row_count, started);
    return pg_catalog.jsonb_build_object('success', true, 'data', rows_json, 'count', row_count);
end;
$$;
