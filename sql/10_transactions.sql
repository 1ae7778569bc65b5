-- Logical transactions: lifecycle (begin, savepoint, commit, status, active).
-- Every function here is SECURITY DEFINER: clients never write the package
-- tables directly, and ownership (caller role + JWT subject) is checked on
-- every call. A caller who does not own a transaction gets RZ001 "not found":
-- existence is not leaked.

-- Does the caller own this transaction?
create or replace function resilience._owns(owner_role text, owner_sub text)
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return (
        select owner_role = resilience._caller_role()
            and owner_sub is not distinct from resilience._caller_sub()
    );
end;
$$;

-- The transaction, locked, if the caller may act on it; RZ001 otherwise.
-- lock_mode: 'share' (a write, a savepoint: several may run at once) or
-- 'update' (commit, rollback: exclusive). admin_ok lets resilience_admin in.
create or replace function resilience._tx_locked(
    tx_id uuid, lock_mode text, admin_ok boolean default false
)
returns resilience.transactions
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tx resilience.transactions;
begin
    if tx_id is null then
        raise exception using errcode = 'RZ001', message = 'logical transaction id is null';
    end if;
    if lock_mode = 'update' then
        select t.* into tx from resilience.transactions as t where t.id = tx_id for update;
    else
        select t.* into tx from resilience.transactions as t where t.id = tx_id for share;
    end if;
    if tx.id is null
        or not (resilience._owns(tx.owner_role, tx.owner_sub) or (admin_ok and resilience._is_admin()))
    then
        raise exception using
            errcode = 'RZ001',
            message = pg_catalog.format('logical transaction %s not found', tx_id),
            hint = 'It does not exist or belongs to another role/user.';
    end if;
    return tx;
end;
$$;

-- Raise unless the transaction may still be written to (active, unexpired).
create or replace function resilience._require_active(tx resilience.transactions)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    if tx.status = 'timed_out'
        or (tx.status = 'active' and tx.expires_at <= pg_catalog.clock_timestamp())
    then
        raise exception using
            errcode = 'RZ003',
            message = pg_catalog.format('logical transaction %s expired at %s', tx.id, tx.expires_at);
    end if;
    if tx.status <> 'active' then
        raise exception using
            errcode = 'RZ002',
            message = pg_catalog.format('logical transaction %s is %s, not active', tx.id, tx.status);
    end if;
end;
$$;

-- The image tables a transaction has images in (or had claims on).
create or replace function resilience._tx_image_tables(tx_id uuid)
returns setof regclass
language plpgsql
stable
set search_path = ''
as $$
begin
    return query
    select m.image_table from resilience.managed_tables as m
    where m.image_table is not null and m.relation in (
        select s.relation from resilience.tx_statements as s where s.tx_id = _tx_image_tables.tx_id
        union
        select c.relation from resilience.claimed_tables as c where c.tx_id = _tx_image_tables.tx_id);
end;
$$;

-- Release every claim of a finished transaction (commit, rollback, reap).
-- The claims are its image rows: committed and rolled-back transactions'
-- images are deleted with them (nothing can restore them any more); a failed
-- transaction keeps its images, unclaimed, until retention, so that an admin
-- can retry with force: its claim rows become `claim = false` (outside the
-- claim index, yet known, so that the retry can take them back: _reclaim).
-- Called only by our SECURITY DEFINER functions.
create or replace function resilience._release_claims(tx_id uuid, keep_images boolean default false)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    image regclass;
begin
    for image in select resilience._tx_image_tables(_release_claims.tx_id) loop
        if keep_images then
            execute pg_catalog.format('update %s as i set claim = false where i.tx_id = $1 and i.claim', image)
            using tx_id;
        else
            execute pg_catalog.format('delete from %s as i where i.tx_id = $1', image) using tx_id;
        end if;
    end loop;
    delete from resilience.claimed_tables as c where c.tx_id = _release_claims.tx_id;
end;
$$;

-- A failed transaction's forced retry takes its claims back before its
-- undo: they were released when it failed, so another logical transaction
-- may claim one of its rows since, and the undo's writes (not claim-checked,
-- and forced) would overwrite that row under the other's claim, whose commit
-- would then keep the forced value. Re-claiming meets such a claim on the
-- claim index (waiting, as a capture does, only for a call in flight):
-- 55P03 naming the holder, nothing restored. Called only by tx_rollback.
create or replace function resilience._reclaim(tx_id uuid)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    managed record;
    holder uuid;
begin
    for managed in
        select m.relation, m.image_table from resilience.managed_tables as m
        where m.image_table in (select resilience._tx_image_tables(_reclaim.tx_id))
    loop
        -- Claims on a table come with its claimed_tables row: plain writes
        -- and captures probe it before they look for claims.
        insert into resilience.claimed_tables (relation, tx_id) values (managed.relation, _reclaim.tx_id)
        on conflict do nothing;
        begin
            execute pg_catalog.format(
                'update %s as i set claim = true where i.tx_id = $1 and i.claim = false', managed.image_table)
            using tx_id;
        exception when unique_violation then
            execute pg_catalog.format(
                'select e.tx_id from %1$s as i inner join %1$s as e on e.claim and e.tx_id <> $1 and %2$s '
                'where i.tx_id = $1 and i.claim = false limit 1',
                managed.image_table,
                coalesce((select resilience._sql_keys_equal('e.', k.image_cols, k.operators, 'i.', k.image_cols)
                    from resilience._primary_key(managed.relation) as k), 'false'))
            into holder using tx_id;
            perform resilience._claim_conflict(managed.relation, holder);
        end;
    end loop;
end;
$$;

-- How many rows a transaction claims (its claiming image rows).
create or replace function resilience._tx_claim_count(tx_id uuid)
returns bigint
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    image regclass;
    claimed bigint;
    total bigint := 0;
begin
    for image in select resilience._tx_image_tables(_tx_claim_count.tx_id) loop
        execute pg_catalog.format('select pg_catalog.count(*) from %s as i where i.tx_id = $1 and i.claim', image)
        into claimed using tx_id;
        total := total + claimed;
    end loop;
    return total;
end;
$$;

-- Whether a lazy reap or purge may run in the caller's database transaction.
-- Neither is ever needed by the call it runs in, so both are left out where
-- they cannot work: a caller at REPEATABLE READ or SERIALIZABLE reads with its
-- transaction's snapshot (an undo would miss the statements and claims of the
-- expired transaction committed after it, restore the rest and call it
-- timed_out); a read-only transaction (PostgREST runs a POST to a STABLE
-- function read-only, with tx_pre_request; a hot standby) would fail the
-- caller's request with 25006. No SET clause, so that it is inlined.
create or replace function resilience._lazy_work_allowed()
returns boolean
language sql
stable
as $$
    select pg_catalog.current_setting('transaction_isolation') = 'read committed'
        and pg_catalog.current_setting('transaction_read_only') = 'off'
$$;

-- Roll back expired transactions if there are any: a cheap index probe on
-- the common path. Called by tx_begin and tx_execute ("lazily").
create or replace function resilience._reap_if_expired()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if not resilience._lazy_work_allowed() then
        return;
    end if;
    -- One index probe when nothing expired. A transaction a lazy reap had to
    -- leave (a row lock held elsewhere) waits for its `reap_after` first,
    -- so that a long-held lock does not cost every call a lock_timeout.
    if exists (
        select 1 from resilience.transactions as t
        where t.status = 'active' and t.expires_at < pg_catalog.clock_timestamp()
            and coalesce((t.outcome ->> 'reap_after')::timestamptz <= pg_catalog.clock_timestamp(), true)
    ) then
        perform resilience._reap_without_waiting();
    end if;
end;
$$;

-- A lazy reap runs inside another user's call, so it must not wait on a row
-- lock some database transaction holds on a row it would restore (a plain
-- SELECT ... FOR SHARE, an FK check's KEY SHARE): the SET clause bounds its
-- lock waits, and tx_reap leaves a transaction whose undo met such a lock
-- active (and expired) for a later reap. Explicit tx_reap calls still wait.
create or replace function resilience._reap_without_waiting()
returns void
language plpgsql
volatile
security definer
set search_path = ''
set lock_timeout = '50ms'
as $$
begin
    perform resilience.tx_reap(coalesce(resilience._setting('reap_batch')::integer, 100));
end;
$$;

-- Client text we store and show again (a savepoint name, a label, a
-- rollback reason) is bounded, with 22023: a long savepoint name failed with
-- 54000 (the savepoints key's index row size), and a label of megabytes per
-- transaction went into the transactions table and the audit log.
create or replace function resilience._require_bounded(what text, value text, max_chars integer)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
    if pg_catalog.length(value) > max_chars then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('%s must be at most %s characters, got %s',
                what, max_chars, pg_catalog.length(value));
    end if;
end;
$$;

create or replace function resilience.tx_begin(timeout_ms integer default 30000, label text default null)
returns uuid
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    effective_ms integer := coalesce(timeout_ms, resilience._setting('default_timeout_ms')::integer, 30000);
    max_ms integer := coalesce(resilience._setting('max_timeout_ms')::integer, 86400000);
    started timestamptz := pg_catalog.clock_timestamp();
    new_id uuid;
begin
    if effective_ms <= 0 or effective_ms > max_ms then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('timeout_ms must be between 1 and %s, got %s', max_ms, effective_ms);
    end if;
    perform resilience._require_bounded('label', label, 1000);
    perform resilience._reap_if_expired();
    perform resilience._purge_if_due();
    insert into resilience.transactions (owner_role, owner_sub, started_at, expires_at, label)
    values (
        resilience._caller_role(), resilience._caller_sub(), started,
        started + pg_catalog.make_interval(secs => effective_ms / 1000.0), label
    )
    returning id into new_id;
    perform resilience._audit(
        'begin', new_id, pg_catalog.jsonb_build_object('timeout_ms', effective_ms, 'label', label)
    );
    return new_id;
end;
$$;

create or replace function resilience.tx_savepoint(tx_id uuid, name text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tx resilience.transactions := resilience._tx_locked(tx_id, 'share');
    marker bigint;
begin
    perform resilience._require_active(tx);
    if name is null or name = '' then
        raise exception using errcode = '22023', message = 'savepoint name must not be empty';
    end if;
    perform resilience._require_bounded('savepoint name', name, 200);
    -- Re-using a name moves the savepoint, as SQL's SAVEPOINT does in effect.
    insert into resilience.savepoints as s (tx_id, name, seq)
    values (tx.id, name, pg_catalog.nextval('resilience.restore_point_seq'))
    on conflict on constraint savepoints_pkey
    do update set seq = excluded.seq, created_at = pg_catalog.clock_timestamp()
    returning s.seq into marker;
    perform resilience._audit('savepoint', tx.id, pg_catalog.jsonb_build_object('savepoint', name));
    return pg_catalog.jsonb_build_object('success', true, 'savepoint', name);
end;
$$;

create or replace function resilience.tx_commit(tx_id uuid)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tx resilience.transactions := resilience._tx_locked(tx_id, 'update');
    finished timestamptz := pg_catalog.clock_timestamp();
    statements bigint;
    row_count bigint;
begin
    perform resilience._require_active(tx);
    select pg_catalog.count(*), coalesce(pg_catalog.sum(s.row_count), 0) into statements, row_count
    from resilience.tx_statements as s where s.tx_id = tx.id;
    update resilience.transactions as t
    set status = 'committed', finished_at = finished
    where t.id = tx.id;
    perform resilience._release_claims(tx.id);
    perform resilience._audit('commit', tx.id, pg_catalog.jsonb_build_object(
        'operations', statements, 'rows', row_count,
        'duration_ms', pg_catalog.round(extract(epoch from finished - tx.started_at) * 1000, 3)
    ));
    return pg_catalog.jsonb_build_object('success', true, 'status', 'committed', 'operations', statements);
end;
$$;

-- A transaction as the API shows it.
create or replace function resilience._tx_json(tx resilience.transactions)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select pg_catalog.jsonb_build_object(
        'id', tx.id,
        'status', tx.status,
        'label', tx.label,
        'owner_role', tx.owner_role,
        'owner_sub', tx.owner_sub,
        'started_at', tx.started_at,
        'expires_at', tx.expires_at,
        'finished_at', tx.finished_at,
        'expired', tx.status = 'active' and tx.expires_at <= pg_catalog.clock_timestamp(),
        'operations', (select pg_catalog.count(*) from resilience.tx_statements as s where s.tx_id = tx.id),
        'rows', (select coalesce(pg_catalog.sum(s.row_count), 0) from resilience.tx_statements as s
            where s.tx_id = tx.id),
        'claims', resilience._tx_claim_count(tx.id),
        'savepoints', (select coalesce(pg_catalog.jsonb_agg(s.name order by s.seq), '[]'::jsonb)
            from resilience.savepoints as s where s.tx_id = tx.id),
        'outcome', tx.outcome
    );
$$;

create or replace function resilience.tx_status(tx_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    tx resilience.transactions;
begin
    select t.* into tx from resilience.transactions as t where t.id = tx_id;
    if tx.id is null
        or not (resilience._owns(tx.owner_role, tx.owner_sub) or resilience._is_admin())
    then
        raise exception using
            errcode = 'RZ001',
            message = pg_catalog.format('logical transaction %s not found', tx_id);
    end if;
    return resilience._tx_json(tx);
end;
$$;

create or replace function resilience.tx_active()
returns setof jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select resilience._tx_json(t)
    from resilience.transactions as t
    where t.status = 'active'
        and t.owner_role = resilience._caller_role()
        and t.owner_sub is not distinct from resilience._caller_sub()
    order by t.started_at;
$$;

-- An image (attributes c<attnum>) with the table's column names.
create or replace function resilience._image_json(relation regclass, image jsonb)
returns jsonb
language sql
stable
set search_path = ''
as $$
    select case when image is null then null else (
        select pg_catalog.jsonb_object_agg(a.attname, e.value)
        from pg_catalog.jsonb_each(image) as e
        inner join pg_catalog.pg_attribute as a
            on a.attrelid = relation and 'c' operator(pg_catalog.||) a.attnum = e.key and not a.attisdropped
    ) end;
$$;

-- The images of a transaction, for inspection by resilience_admin only:
-- images hold rows the owner may not read (cascades under another user's
-- RLS, columns without a SELECT grant). One object per image row, with the
-- table's current column names.
create or replace function resilience.tx_images(tx_id uuid)
returns setof jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    managed record;
begin
    if not resilience._is_admin() then
        raise exception using
            errcode = '42501', message = 'tx_images is for members of resilience_admin';
    end if;
    for managed in
        select m.relation, m.image_table from resilience.managed_tables as m
        where m.image_table is not null
            and m.relation in (select s.relation from resilience.tx_statements as s where s.tx_id = tx_images.tx_id)
    loop
        return query execute pg_catalog.format(
            $q$select pg_catalog.jsonb_build_object('table', $2::text, 'seq', i.seq,
                'operation', case i.op when 'i' then 'insert' when 'u' then 'update' when 'd' then 'delete'
                    when 'l' then 'lock' else 'claim' end,
                'claim', i.claim,
                'before', resilience._image_json($2, pg_catalog.to_jsonb(i.b)),
                'after', resilience._image_json($2, pg_catalog.to_jsonb(i.a)))
            from %s as i where i.tx_id = $1 order by i.seq$q$, managed.image_table)
        using tx_id, managed.relation;
    end loop;
end;
$$;

-- Every claim held, across the image tables (for `status` and inspection;
-- not granted to clients).
create or replace function resilience._claims()
returns table (relation regclass, tx_id uuid, key jsonb)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    managed record;
begin
    for managed in
        select m.relation, m.image_table, m.descriptor -> 'key' as key_names
        from resilience.managed_tables as m where m.image_table is not null
    loop
        return query execute pg_catalog.format(
            $q$select $1, i.tx_id, (select pg_catalog.jsonb_object_agg(k.name, pg_catalog.to_jsonb(i) -> ('k' || k.ord))
                from pg_catalog.jsonb_array_elements_text($2) with ordinality as k (name, ord))
            from %s as i where i.claim$q$, managed.image_table)
        using managed.relation, managed.key_names;
    end loop;
end;
$$;

-- How many image rows the image tables hold (inspection).
create or replace function resilience._image_count()
returns bigint
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    image regclass;
    counted bigint;
    total bigint := 0;
begin
    for image in select m.image_table from resilience.managed_tables as m where m.image_table is not null loop
        execute pg_catalog.format('select pg_catalog.count(*) from %s', image) into counted;
        total := total + counted;
    end loop;
    return total;
end;
$$;
