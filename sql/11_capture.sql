-- Capture and claims: statement-level AFTER triggers with transition tables on
-- managed tables. Restore points are taken from what the statement really
-- changed, never from caller-supplied data.
--
-- Fast path (a write outside any logical transaction): read two settings, and
-- only when the table has claims at all, check the written keys against them.
-- Everything else (tx validation, images, claims) runs only inside a logical
-- transaction.

-- SQL text of a row image's primary key as {column: value}, for format().
-- `image` is internal SQL (an alias expression), never client input.
create or replace function resilience._key_sql(relation regclass, image text)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return (
        select 'pg_catalog.jsonb_build_object('
            || pg_catalog.string_agg(
                pg_catalog.format('%L, %s operator(pg_catalog.->) %L', a.attname, image, a.attname),
                ', ' order by k.ord
            )
            || ')'
        from pg_catalog.pg_index as i
        cross join lateral pg_catalog.unnest(i.indkey::int2 []) with ordinality as k (attnum, ord)
        inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
        where i.indrelid = relation and i.indisprimary
    );
end;
$$;

-- Is this statement issued by a running restore of ours (see restore_tokens)?
create or replace function resilience._restoring()
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    flag text := pg_catalog.current_setting('resilience.restoring', true);
begin
    return flag is not null and flag <> ''
        and exists (select 1 from resilience.restore_tokens as r where r.token::text = flag);
end;
$$;

-- 55P03 naming the holder and its expiry. Nobody waits on a claim.
create or replace function resilience._claim_conflict(relation regclass, key jsonb, holder uuid)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    expires timestamptz;
begin
    select t.expires_at into expires from resilience.transactions as t where t.id = holder;
    raise exception using
        errcode = '55P03',
        message = pg_catalog.format(
            'row %s of table %s is claimed by logical transaction %s (expires %s%s)',
            key, relation, holder, expires,
            case when expires <= pg_catalog.clock_timestamp()
                then ', expired: the next tx_reap rolls it back' else '' end
        ),
        detail = pg_catalog.jsonb_build_object(
            'table', relation::text, 'key', key, 'holder', holder, 'expires_at', expires
        )::text,
        hint = 'Retry once the holder commits or rolls back.';
end;
$$;

-- The claim guard for a write outside any logical transaction: the first
-- written key claimed by anyone ($1 = relation). Keys come from the
-- statement's transition tables.
create or replace function resilience._guard_sql(relation regclass, operation text)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    written text := case operation
        when 'INSERT' then pg_catalog.format(
            'select %s as key from new_rows as n', resilience._key_sql(relation, 'pg_catalog.to_jsonb(n)'))
        when 'DELETE' then pg_catalog.format(
            'select %s as key from old_rows as o', resilience._key_sql(relation, 'pg_catalog.to_jsonb(o)'))
        else pg_catalog.format(
            'select %s as key from old_rows as o union all select %s from new_rows as n',
            resilience._key_sql(relation, 'pg_catalog.to_jsonb(o)'),
            resilience._key_sql(relation, 'pg_catalog.to_jsonb(n)'))
    end;
begin
    return pg_catalog.format(
        'select c.tx_id, c.key from (%s) as w '
        'inner join resilience.claims as c on c.relation = $1 and c.key = w.key limit 1',
        written
    );
end;
$$;

-- The capture of one statement ($1 = tx id, $2 = seq, $3 = relation): insert
-- the restore points and claim every key. Returns (keys wanted, keys newly
-- claimed): fewer claimed means some key was claimed already, by us or by
-- someone else, and the trigger looks closer.
--
-- UPDATE pairs old and new rows by position: PostgreSQL appends a row's old
-- and new versions to the two transition tables in the same call, so their
-- scan orders match. This is what lets a primary-key change be captured.
create or replace function resilience._capture_sql(relation regclass, operation text)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    claim text := 'claimed as (insert into resilience.claims (relation, key, tx_id) '
        'select $3, keys.key, $1 from keys on conflict do nothing returning 1) '
        'select (select pg_catalog.count(*) from keys), (select pg_catalog.count(*) from claimed)';
begin
    if operation = 'INSERT' then
        return pg_catalog.format(
            'with n as (select pg_catalog.row_number() over () as rn, pg_catalog.to_jsonb(n) as img '
            'from new_rows as n), '
            'keys as (insert into resilience.restore_points '
            '(tx_id, seq, row_no, relation, operation, key_after, after) '
            'select $1, $2, n.rn, $3, ''insert'', %s, n.img from n returning key_after as key), %s',
            resilience._key_sql(relation, 'n.img'), claim);
    elsif operation = 'DELETE' then
        return pg_catalog.format(
            'with o as (select pg_catalog.row_number() over () as rn, pg_catalog.to_jsonb(o) as img '
            'from old_rows as o), '
            'keys as (insert into resilience.restore_points '
            '(tx_id, seq, row_no, relation, operation, key_before, before) '
            'select $1, $2, o.rn, $3, ''delete'', %s, o.img from o returning key_before as key), %s',
            resilience._key_sql(relation, 'o.img'), claim);
    end if;
    return pg_catalog.format(
        'with o as (select pg_catalog.row_number() over () as rn, pg_catalog.to_jsonb(o) as img '
        'from old_rows as o), '
        'n as (select pg_catalog.row_number() over () as rn, pg_catalog.to_jsonb(n) as img '
        'from new_rows as n), '
        'rp as (insert into resilience.restore_points '
        '(tx_id, seq, row_no, relation, operation, key_before, key_after, before, after) '
        'select $1, $2, n.rn, $3, ''update'', %s, %s, o.img, n.img '
        'from o inner join n on n.rn = o.rn returning key_before, key_after), '
        'keys as (select rp.key_after as key from rp union all '
        'select rp.key_before from rp where rp.key_before <> rp.key_after), %s',
        resilience._key_sql(relation, 'o.img'), resilience._key_sql(relation, 'n.img'), claim);
end;
$$;

-- The one capture trigger function (AFTER INSERT / UPDATE / DELETE, FOR EACH
-- STATEMENT, transition tables new_rows / old_rows).
create or replace function resilience._capture()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tx_text text := pg_catalog.current_setting('resilience.tx_id', true);
    headers text;
    via_header boolean := false;
    tx resilience.transactions;
    statement_seq bigint;
    holder uuid;
    claimed_key jsonb;
    wanted bigint;
    got bigint;
begin
    if tx_text is null or tx_text = '' then
        headers := pg_catalog.current_setting('request.headers', true);
        if headers is not null and pg_catalog.strpos(headers, 'x-resilience-tx') > 0 then
            tx_text := (headers::jsonb) operator(pg_catalog.->>) 'x-resilience-tx';
            via_header := true;
        end if;
    end if;

    if tx_text is null or tx_text = '' then
        -- A plain write: nothing to capture; only claimed rows are off limits.
        if exists (select 1 from resilience.claims as c where c.relation = tg_relid::regclass)
            and not resilience._restoring()
        then
            execute resilience._guard_sql(tg_relid, tg_op)
            into holder, claimed_key using tg_relid::regclass;
            if holder is not null then
                perform resilience._claim_conflict(tg_relid, claimed_key, holder);
            end if;
        end if;
        return null;
    end if;

    if resilience._restoring() then
        return null;
    end if;
    if tx_text !~ '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' then
        raise exception using
            errcode = 'RZ001',
            message = pg_catalog.format('logical transaction %L not found', tx_text);
    end if;
    tx := resilience._tx_for_write(tx_text::uuid);
    statement_seq := pg_catalog.nextval('resilience.restore_point_seq');
    execute resilience._capture_sql(tg_relid, tg_op)
    into wanted, got using tx.id, statement_seq, tg_relid::regclass;
    if got < wanted then
        select c.tx_id, c.key into holder, claimed_key
        from resilience.restore_points as r
        inner join resilience.claims as c
            on c.relation = r.relation and (c.key = r.key_after or c.key = r.key_before)
        where r.tx_id = tx.id and r.seq = statement_seq and c.tx_id <> tx.id
        limit 1;
        if holder is not null then
            perform resilience._claim_conflict(tg_relid, claimed_key, holder);
        end if;
    end if;
    if via_header then
        perform resilience._audit('execute', tx.id, pg_catalog.jsonb_build_object(
            'table', tg_relid::regclass::text, 'operation', pg_catalog.lower(tg_op),
            'rows', wanted, 'via', 'header'
        ));
    end if;
    return null;
end;
$$;

-- TRUNCATE fires no row or transition capture: refuse it while rows of the
-- table are claimed.
create or replace function resilience._guard_truncate()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if exists (select 1 from resilience.claims as c where c.relation = tg_relid::regclass)
        and not resilience._restoring()
    then
        raise exception using
            errcode = '55P03',
            message = pg_catalog.format(
                'table %s has rows claimed by active logical transactions: truncate refused',
                tg_relid::regclass
            );
    end if;
    return null;
end;
$$;

-- The caller must own the table (or be a member of its owner role).
create or replace function resilience._require_table_owner(relation regclass)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    if not exists (
        select 1 from pg_catalog.pg_class as c
        where c.oid = relation
            and pg_catalog.pg_has_role(resilience._caller_role()::name, c.relowner, 'USAGE')
    ) then
        raise exception using
            errcode = '42501',
            message = pg_catalog.format('must be owner of table %s to manage it', relation);
    end if;
end;
$$;

-- Drop our triggers from a table (manage_table re-creates them).
create or replace function resilience._drop_triggers(relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    found record;
begin
    for found in
        select t.tgname, n.nspname, c.relname from pg_catalog.pg_trigger as t
        inner join pg_catalog.pg_class as c on c.oid = t.tgrelid
        inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
        where t.tgrelid = relation and not t.tgisinternal
            and t.tgname in ('resilience_capture_insert', 'resilience_capture_update',
                'resilience_capture_delete', 'resilience_guard_truncate')
    loop
        execute pg_catalog.format('drop trigger %I on %I.%I', found.tgname, found.nspname, found.relname);
    end loop;
end;
$$;

create or replace function resilience.manage_table(table_name regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    target record;
begin
    select n.nspname, c.relname, c.relkind into target
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
    where c.oid = table_name;
    perform resilience._require_table_owner(table_name);
    if target.relkind <> 'r' or target.nspname in ('resilience', 'pg_catalog', 'information_schema') then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('%s cannot be managed: only ordinary application tables can', table_name);
    end if;
    if not exists (
        select 1 from pg_catalog.pg_index as i where i.indrelid = table_name and i.indisprimary
    ) then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('table %s has no primary key', table_name),
            hint = 'Logical transactions identify rows by primary key: add one, then call manage_table again.';
    end if;
    perform resilience._drop_triggers(table_name);
    execute pg_catalog.format(
        'create trigger resilience_capture_insert after insert on %I.%I '
        'referencing new table as new_rows for each statement execute function resilience._capture()',
        target.nspname, target.relname);
    execute pg_catalog.format(
        'create trigger resilience_capture_update after update on %I.%I '
        'referencing old table as old_rows new table as new_rows '
        'for each statement execute function resilience._capture()',
        target.nspname, target.relname);
    execute pg_catalog.format(
        'create trigger resilience_capture_delete after delete on %I.%I '
        'referencing old table as old_rows for each statement execute function resilience._capture()',
        target.nspname, target.relname);
    execute pg_catalog.format(
        'create trigger resilience_guard_truncate before truncate on %I.%I '
        'for each statement execute function resilience._guard_truncate()',
        target.nspname, target.relname);
    insert into resilience.managed_tables (relation, managed_by)
    values (table_name, resilience._caller_role())
    on conflict (relation) do nothing;
end;
$$;

create or replace function resilience.unmanage_table(table_name regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    target record;
begin
    select n.nspname, c.relname into target
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
    where c.oid = table_name;
    perform resilience._require_table_owner(table_name);
    if exists (select 1 from resilience.claims as c where c.relation = table_name) then
        raise exception using
            errcode = '55006',
            message = pg_catalog.format('table %s has rows claimed by active logical transactions', table_name),
            hint = 'Commit or roll them back first.';
    end if;
    perform resilience._drop_triggers(table_name);
    delete from resilience.managed_tables as m where m.relation = table_name;
end;
$$;
