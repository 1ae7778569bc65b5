-- Capture and claims: statement-level AFTER triggers with transition tables on
-- managed tables. Restore points are taken from what the statement really
-- changed, never from caller-supplied data.
--
-- Fast path (a write outside any logical transaction): read two settings, and
-- only when the table has claims at all (claimed_tables), check the written
-- keys against them.
-- Everything else (tx validation, images, claims) runs only inside a logical
-- transaction.

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
        hint = case when expires <= pg_catalog.clock_timestamp()
            then 'Call resilience.tx_reap() and retry; through PostgREST, set db-pre-request to resilience.tx_pre_request.'
            else 'Retry once the holder commits or rolls back.' end;
end;
$$;

-- The one capture trigger function (AFTER INSERT / UPDATE / DELETE, FOR EACH
-- STATEMENT, transition tables new_rows / old_rows).
--
-- It runs on EVERY write to a managed table, so it is built for speed:
-- * static SQL only (PL/pgSQL caches one plan per trigger, transition tables
--   included), no SQL text built from the catalog per statement;
-- * every name is schema-qualified - tables, functions, types, and operators
--   as operator(pg_catalog.x) - so the body is hijack-proof on its own; it
--   still carries `set search_path = ''` (about 9 us per call), as every
--   SECURITY DEFINER function of ours must;
-- * the plain-write path (no logical transaction) reads two settings and
--   makes one index probe on claimed_tables (see 0002 for why not claims);
--   the written keys are compared with the claims (by key hash) only when
--   the table has claims at all;
-- * inside a logical transaction: one insert of the restore points, one
--   plain insert of the claims (see below), and the race loop only when some
--   key was claimed already.
--
-- UPDATE pairs old and new rows by position: PostgreSQL appends a row's old
-- and new versions to the two transition tables in the same call, so their
-- scan orders match. This is what lets a primary-key change be captured. The
-- two image arrays are zipped (ROWS FROM (unnest, unnest) WITH ORDINALITY):
-- no sort and no join, where row_number() on both sides cost two sorts.
create or replace function resilience._capture()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    rel pg_catalog.regclass := tg_relid::pg_catalog.regclass;
    tx_text pg_catalog.text := pg_catalog.current_setting('resilience.tx_id', true);
    headers pg_catalog.text;
    via_header pg_catalog.bool := false;
    restoring_flag pg_catalog.text;
    plain_write pg_catalog.bool;
    -- Hashes of the keys a plain write wrote (only when the table has claims).
    written_hashes pg_catalog.int8 [];
    -- Every column but the primary key: image minus these = the key.
    other_cols pg_catalog.text [];
    tx resilience.transactions;
    caller_sub pg_catalog.text;
    statement_seq pg_catalog.int8;
    holder pg_catalog.uuid;
    claimed_key pg_catalog.jsonb;
    wanted pg_catalog.int8;
    got pg_catalog.int8;
    unclaimed pg_catalog.int8;
    first_claims pg_catalog.int8;
    other_claim pg_catalog.jsonb;
    -- The keys this statement wrote (both keys of a key change).
    claim_keys pg_catalog.jsonb [];
begin
    if tx_text is null or tx_text operator(pg_catalog.=) '' then
        headers := pg_catalog.current_setting('request.headers', true);
        if headers is not null and pg_catalog.strpos(headers, 'x-resilience-tx') operator(pg_catalog.>) 0 then
            tx_text := headers::pg_catalog.jsonb operator(pg_catalog.->>) 'x-resilience-tx';
            via_header := true;
        end if;
    end if;

    plain_write := tx_text is null or tx_text operator(pg_catalog.=) '';
    -- A plain write captures nothing; only claimed rows are off limits, so a
    -- table without claims costs this one probe.
    if plain_write and not exists (
        select 1 from resilience.claimed_tables as c where c.relation operator(pg_catalog.=) rel
    ) then
        return null;
    end if;

    -- Our own restore statements are neither captured nor claim-checked.
    restoring_flag := pg_catalog.current_setting('resilience.restoring', true);
    if restoring_flag operator(pg_catalog.<>) '' and exists (
        select 1 from resilience.restore_tokens as r where r.token::pg_catalog.text operator(pg_catalog.=) restoring_flag
    ) then
        return null;
    end if;

    if not plain_write then
        if tx_text operator(pg_catalog.!~) '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' then
            raise exception using
                errcode = 'RZ001',
                message = pg_catalog.format('logical transaction %L not found', tx_text);
        end if;
        -- The transaction, share-locked so that no commit/rollback/reap
        -- finishes it while this statement captures into it; owned by the
        -- caller, active, unexpired (the checks of _tx_locked and
        -- _require_active, inlined).
        select t.* into tx from resilience.transactions as t
        where t.id operator(pg_catalog.=) tx_text::pg_catalog.uuid
        for share;
        caller_sub := resilience._caller_sub();
        if tx.id is null
            or tx.owner_role operator(pg_catalog.<>) resilience._caller_role()
            or not coalesce(tx.owner_sub operator(pg_catalog.=) caller_sub, tx.owner_sub is null and caller_sub is null)
        then
            raise exception using
                errcode = 'RZ001',
                message = pg_catalog.format('logical transaction %s not found', tx_text),
                hint = 'It does not exist or belongs to another role/user.';
        end if;
        if tx.status operator(pg_catalog.<>) 'active'
            or tx.expires_at operator(pg_catalog.<=) pg_catalog.clock_timestamp()
        then
            perform resilience._require_active(tx);
        end if;
    end if;

    select coalesce(pg_catalog.array_agg(a.attname::pg_catalog.text), '{}') into other_cols
    from pg_catalog.pg_attribute as a
    where a.attrelid operator(pg_catalog.=) tg_relid and a.attnum operator(pg_catalog.>) 0 and not a.attisdropped
        and a.attnum operator(pg_catalog.<>) all ((
            select i.indkey::pg_catalog.int2 [] from pg_catalog.pg_index as i
            where i.indrelid operator(pg_catalog.=) tg_relid and i.indisprimary
        )::pg_catalog.int2 []);

    if plain_write then
        -- The hashes of the written keys (both keys of a key change), probed
        -- against the table's claims. Each branch reads only the transition
        -- tables its trigger declares.
        if tg_op operator(pg_catalog.=) 'INSERT' then
            written_hashes := array(
                select pg_catalog.jsonb_hash_extended(pg_catalog.to_jsonb(n) operator(pg_catalog.-) other_cols, 0)
                from new_rows as n);
        elsif tg_op operator(pg_catalog.=) 'DELETE' then
            written_hashes := array(
                select pg_catalog.jsonb_hash_extended(pg_catalog.to_jsonb(o) operator(pg_catalog.-) other_cols, 0)
                from old_rows as o);
        else
            written_hashes := array(
                select pg_catalog.jsonb_hash_extended(pg_catalog.to_jsonb(o) operator(pg_catalog.-) other_cols, 0)
                from old_rows as o
                union all
                select pg_catalog.jsonb_hash_extended(pg_catalog.to_jsonb(n) operator(pg_catalog.-) other_cols, 0)
                from new_rows as n);
        end if;
        select c.tx_id, c.key into holder, claimed_key
        from resilience.claims as c
        where c.relation operator(pg_catalog.=) rel
            and c.key_hash operator(pg_catalog.=) any (written_hashes)
        limit 1;
        if holder is not null then
            perform resilience._claim_conflict(rel, claimed_key, holder);
        end if;
        return null;
    end if;

    statement_seq := pg_catalog.nextval('resilience.restore_point_seq');
    -- The restore points of this statement, in one insert; its keys (both
    -- keys of a key change) are collected for the claims.
    if tg_op operator(pg_catalog.=) 'INSERT' then
        with rp as (
            insert into resilience.restore_points (tx_id, seq, row_no, relation, operation, key_after, after)
            select tx.id, statement_seq, w.rn, rel, 'insert', (w.img operator(pg_catalog.-) other_cols), w.img
            from pg_catalog.unnest(array(select pg_catalog.to_jsonb(n) from new_rows as n))
                with ordinality as w (img, rn)
            returning key_after
        )
        select pg_catalog.array_agg(rp.key_after) into claim_keys from rp;
    elsif tg_op operator(pg_catalog.=) 'DELETE' then
        with rp as (
            insert into resilience.restore_points (tx_id, seq, row_no, relation, operation, key_before, before)
            select tx.id, statement_seq, w.rn, rel, 'delete', (w.img operator(pg_catalog.-) other_cols), w.img
            from pg_catalog.unnest(array(select pg_catalog.to_jsonb(o) from old_rows as o))
                with ordinality as w (img, rn)
            returning key_before
        )
        select pg_catalog.array_agg(rp.key_before) into claim_keys from rp;
    else
        -- Old and new rows zipped by position (see above).
        with rp as (
            insert into resilience.restore_points
                (tx_id, seq, row_no, relation, operation, key_before, key_after, before, after)
            select tx.id, statement_seq, w.rn, rel, 'update',
                (w.old_img operator(pg_catalog.-) other_cols), (w.new_img operator(pg_catalog.-) other_cols),
                w.old_img, w.new_img
            from rows from (
                pg_catalog.unnest(array(select pg_catalog.to_jsonb(o) from old_rows as o)),
                pg_catalog.unnest(array(select pg_catalog.to_jsonb(n) from new_rows as n))
            ) with ordinality as w (old_img, new_img, rn)
            returning key_before, key_after
        )
        -- Two aggregates, not a lateral VALUES per row (100,000 rows: ~60 ms).
        select pg_catalog.array_cat(
                pg_catalog.array_agg(rp.key_after),
                pg_catalog.array_agg(rp.key_before)
                    filter (where rp.key_before operator(pg_catalog.<>) rp.key_after))
            into claim_keys
        from rp;
    end if;
    wanted := coalesce(pg_catalog.cardinality(claim_keys), 0);
    -- The table has claims now (what plain writes probe first). No row
    -- inserted: this transaction claimed rows of the table before.
    insert into resilience.claimed_tables (relation, tx_id) values (rel, tx.id)
    on conflict do nothing;
    get diagnostics first_claims = row_count;
    -- Claim every key, in key_hash order: consecutive btree inserts then
    -- land on the same leaf pages instead of random ones (100,000 claims:
    -- ~310 -> ~260 ms).
    -- The first statement of this transaction on the table claims with a
    -- plain insert (cheaper per row than ON CONFLICT's speculative
    -- insertion); when some key is claimed already (by someone else) that
    -- fails, and ON CONFLICT DO NOTHING claims the others. A later statement
    -- on the table likely re-claims keys of its own, so it goes to ON
    -- CONFLICT DO NOTHING at once instead of failing a plain insert first.
    if first_claims operator(pg_catalog.>) 0 then
        begin
            insert into resilience.claims (relation, key_hash, tx_id, key)
            select rel, h.key_hash, tx.id, h.key
            from (
                select pg_catalog.jsonb_hash_extended(k.key, 0) as key_hash, k.key
                from pg_catalog.unnest(claim_keys) as k (key)
            ) as h
            order by h.key_hash;
            get diagnostics got = row_count;
        exception when unique_violation then
            got := -1;
        end;
    end if;
    if got is null or got operator(pg_catalog.<) 0 then
        insert into resilience.claims (relation, key_hash, tx_id, key)
        select rel, h.key_hash, tx.id, h.key
        from (
            select pg_catalog.jsonb_hash_extended(k.key, 0) as key_hash, k.key
            from pg_catalog.unnest(claim_keys) as k (key)
        ) as h
        order by h.key_hash
        on conflict do nothing;
        get diagnostics got = row_count;
    end if;
    -- Some key was claimed already, by us (fine) or by someone else. The
    -- other holder may have finished between our insert and this look-up
    -- (each statement here takes a fresh snapshot): then claim the keys
    -- again, until every key of this statement is ours or a holder shows.
    -- One pass over the keys per round finds both another holder and the
    -- keys nobody claims (a 100,000-row statement re-writing rows this
    -- transaction claimed before: one pass instead of three).
    if got operator(pg_catalog.<) wanted then
        loop
            select pg_catalog.count(*) filter (where c.tx_id is null),
                (pg_catalog.array_agg(pg_catalog.jsonb_build_object('holder', c.tx_id, 'key', c.key))
                    filter (where c.tx_id operator(pg_catalog.<>) tx.id))[1]
            into unclaimed, other_claim
            from pg_catalog.unnest(claim_keys) as k (key)
            left join resilience.claims as c
                on c.relation operator(pg_catalog.=) rel
                and c.key_hash operator(pg_catalog.=) pg_catalog.jsonb_hash_extended(k.key, 0);
            if other_claim is not null then
                perform resilience._claim_conflict(
                    rel, other_claim operator(pg_catalog.->) 'key',
                    (other_claim operator(pg_catalog.->>) 'holder')::pg_catalog.uuid);
            end if;
            exit when unclaimed operator(pg_catalog.=) 0;
            insert into resilience.claims (relation, key_hash, tx_id, key)
            select rel, pg_catalog.jsonb_hash_extended(k.key, 0), tx.id, k.key
            from pg_catalog.unnest(claim_keys) as k (key)
            on conflict do nothing;
        end loop;
    end if;
    if via_header then
        perform resilience._audit('execute', tx.id, pg_catalog.jsonb_build_object(
            'table', rel::pg_catalog.text, 'operation', pg_catalog.lower(tg_op),
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
