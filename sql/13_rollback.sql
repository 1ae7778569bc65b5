-- Rollback: undo captured statements in reverse order (LIFO) inside ONE
-- database transaction. Each captured statement is undone by one set-based
-- statement, the way it was applied. Before undoing a statement its rows must
-- still equal the recorded after-images (an inserted/updated row unchanged, a
-- deleted key still absent); otherwise nothing is restored (RZ005, detail =
-- the conflicting rows) unless force => true.

-- `t.k1 = k.k1 and ...` over the primary key columns.
create or replace function resilience._key_join_sql(relation regclass)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return (
        select pg_catalog.string_agg(pg_catalog.format('t.%1$I = k.%1$I', a.attname), ' and ' order by k.ord)
        from pg_catalog.pg_index as i
        cross join lateral pg_catalog.unnest(i.indkey::int2 []) with ordinality as k (attnum, ord)
        inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
        where i.indrelid = relation and i.indisprimary
    );
end;
$$;

-- Columns a restore writes: stored generated columns are recomputed, and an
-- identity GENERATED ALWAYS column cannot be updated (re-inserts use
-- OVERRIDING SYSTEM VALUE, so they keep it).
create or replace function resilience._restorable_columns(relation regclass, for_update boolean)
returns text[]
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return (
        select pg_catalog.array_agg(a.attname::text order by a.attnum)
        from pg_catalog.pg_attribute as a
        where a.attrelid = relation and a.attnum > 0 and not a.attisdropped
            and a.attgenerated = ''
            and not (for_update and a.attidentity = 'a')
    );
end;
$$;

-- The rows of one captured statement that were changed outside the logical
-- transaction: an inserted/updated row that no longer equals its after-image,
-- a deleted key that is back with other values. A row already back in its
-- before-state counts as restored, not as a conflict: FK cascades run by an
-- earlier undo step (a parent re-inserted, a key changed back) get there
-- first, and so does the optimistic restore of _undo_batch. Null when none.
create or replace function resilience._undo_conflicts(
    tx_id uuid, batch_seq bigint, relid oid, operation text, target text, key_join text
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    conflicts jsonb;
begin
    if operation = 'insert' then
        execute pg_catalog.format(
            'select pg_catalog.jsonb_agg(r.key_after) from resilience.restore_points as r '
            'cross join lateral pg_catalog.jsonb_populate_record(null::%1$s, r.key_after) as k '
            'inner join %1$s as t on %2$s where r.tx_id = $1 and r.seq = $2 '
            'and pg_catalog.to_jsonb(t) operator(pg_catalog.<>) r.after',
            target, key_join)
        into conflicts using tx_id, batch_seq;
    elsif operation = 'delete' then
        execute pg_catalog.format(
            'select pg_catalog.jsonb_agg(r.key_before) from resilience.restore_points as r '
            'cross join lateral pg_catalog.jsonb_populate_record(null::%1$s, r.key_before) as k '
            'inner join %1$s as t on %2$s where r.tx_id = $1 and r.seq = $2 '
            'and pg_catalog.to_jsonb(t) operator(pg_catalog.<>) r.before',
            target, key_join)
        into conflicts using tx_id, batch_seq;
    else
        -- Equal to its after-image, or back at its before-image (under its
        -- old key if the key changed).
        execute pg_catalog.format(
            'select pg_catalog.jsonb_agg(r.key_after) from resilience.restore_points as r '
            'cross join lateral pg_catalog.jsonb_populate_record(null::%1$s, r.key_after) as k '
            'left join %1$s as t on %2$s '
            'where r.tx_id = $1 and r.seq = $2 and not ('
            '(t.ctid is not null and (pg_catalog.to_jsonb(t) operator(pg_catalog.=) r.after '
            'or pg_catalog.to_jsonb(t) operator(pg_catalog.=) r.before)) '
            'or (t.ctid is null and exists (select 1 from '
            'pg_catalog.jsonb_populate_record(null::%1$s, r.key_before) as k, %1$s as t '
            'where %2$s and pg_catalog.to_jsonb(t) operator(pg_catalog.=) r.before)))',
            target, key_join)
        into conflicts using tx_id, batch_seq;
    end if;
    if conflicts is null then
        return null;
    end if;
    return (
        select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
            'table', relid::regclass::text, 'operation', operation, 'seq', batch_seq, 'key', k))
        from pg_catalog.jsonb_array_elements(conflicts) as k
    );
end;
$$;

-- Undo one captured statement (one batch of restore points) with ONE
-- set-based statement. Without force it is optimistic: the restore itself
-- only touches rows still equal to their after-image (delete, update) or
-- keys still free (re-insert); only when it restored fewer rows than the
-- batch holds does it look for conflicts (rows already back in their
-- before-state are not conflicts) and raise RZ005, which undoes the whole
-- rollback. With force, conflicting rows are overwritten and reported.
-- Returns {"restored_rows", "conflicts"}.
create or replace function resilience._undo_batch(
    tx_id uuid, batch_seq bigint, relid oid, operation text, force boolean
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    target text;
    key_join text;
    cols text [];
    -- Every column, and the type a column's image value is cast to (null:
    -- read it from jsonb_populate_record instead, see below).
    col_names text [];
    col_casts text [];
    needs_record boolean;
    key_from text := '';
    after_check text;
    value_list text;
    col_list text;
    record_join text;
    set_list text;
    conflicts jsonb;
    expected bigint;
    affected bigint := 0;
begin
    select pg_catalog.format('%I.%I', n.nspname, c.relname) into target
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
    where c.oid = relid;
    if target is null then
        conflicts := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'table', relid::text, 'operation', operation, 'seq', batch_seq, 'reason', 'table dropped'));
        if not force then
            perform resilience._raise_undo_conflict(tx_id, conflicts);
        end if;
        return pg_catalog.jsonb_build_object('restored_rows', 0, 'conflicts', conflicts);
    end if;
    -- A column of a plain scalar type (base, enum, range; no array, no
    -- json(b), no domain, no type whose cast from text is a function) is
    -- read from an image as `(image ->> 'col')::type`: what
    -- jsonb_populate_record does for such a column (the scalar's text through
    -- the type's input function), without building a whole record per row
    -- (100,000-row rollback: ~790 -> ~650 ms). Other columns still go through
    -- jsonb_populate_record, which converts arrays, composites and domains
    -- structurally.
    select pg_catalog.array_agg(a.attname::text order by a.attnum),
        pg_catalog.array_agg(
            case when ty.typtype in ('b', 'e', 'r', 'm') and ty.typcategory <> 'A'
                and ty.oid not in ('pg_catalog.json'::regtype, 'pg_catalog.jsonb'::regtype)
                and not exists (
                    select 1 from pg_catalog.pg_cast as pc
                    where pc.castsource = 'pg_catalog.text'::regtype and pc.casttarget = ty.oid
                        and pc.castmethod <> 'b')
            then pg_catalog.format_type(a.atttypid, a.atttypmod) end
            order by a.attnum)
    into col_names, col_casts
    from pg_catalog.pg_attribute as a
    inner join pg_catalog.pg_type as ty on ty.oid = a.atttypid
    where a.attrelid = relid and a.attnum > 0 and not a.attisdropped;
    -- Join on the primary key, read from image `key_after` (alias k when a
    -- key column is not castable).
    select pg_catalog.string_agg(
            case when col_casts[pg_catalog.array_position(col_names, a.attname::text)] is not null
                then pg_catalog.format('t.%1$I = (r.key_after operator(pg_catalog.->>) %2$L)::%3$s',
                    a.attname, a.attname, col_casts[pg_catalog.array_position(col_names, a.attname::text)])
                else pg_catalog.format('t.%1$I = k.%1$I', a.attname) end,
            ' and ' order by k.ord),
        pg_catalog.bool_or(col_casts[pg_catalog.array_position(col_names, a.attname::text)] is null)
    into key_join, needs_record
    from pg_catalog.pg_index as i
    cross join lateral pg_catalog.unnest(i.indkey::int2 []) with ordinality as k (attnum, ord)
    inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where i.indrelid = relid and i.indisprimary;
    if needs_record then
        key_from := pg_catalog.format(
            'cross join lateral pg_catalog.jsonb_populate_record(null::%s, r.key_after) as k ', target);
    end if;
    -- row_no runs 1..n within a batch: the batch's size, from one index probe
    -- (written as order by/limit: max() was planned as a scan of the batch).
    select r.row_no into expected
    from resilience.restore_points as r where r.tx_id = _undo_batch.tx_id and r.seq = batch_seq
    order by r.row_no desc
    limit 1;
    if force then
        conflicts := resilience._undo_conflicts(
            tx_id, batch_seq, relid, operation, target, resilience._key_join_sql(relid::regclass));
    end if;
    -- The optimistic check "the row still equals its after-image" is
    -- to_jsonb(t) = r.after. When the batch's images hold exactly the
    -- table's current columns (one look at its first image: a statement's
    -- images all have the same columns), it is evaluated per column instead,
    -- without building a jsonb of every row (100,000 rows: ~100 ms):
    -- columns of types whose equality is the equality of their jsonb values
    -- (integers, numeric, boolean, uuid, date, timestamp(tz), text and
    -- varchar compared under collation "C", i.e. bytewise) are compared
    -- typed with the image's value cast back; every other column as jsonb,
    -- to_jsonb(t.col) = r.after -> 'col' (the very values to_jsonb(t)
    -- holds). A row that fails the check is looked at by _undo_conflicts,
    -- which still compares whole images.
    if not force and operation <> 'delete' and (
        select pg_catalog.array_agg(k.key order by k.key)
        from pg_catalog.jsonb_object_keys((
            select r.after from resilience.restore_points as r
            where r.tx_id = _undo_batch.tx_id and r.seq = batch_seq
            order by r.row_no
            limit 1)) as k (key)
    ) = (select pg_catalog.array_agg(c order by c) from pg_catalog.unnest(col_names) as c) then
        select pg_catalog.string_agg(
                case
                    when a.atttypid in ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype,
                        'pg_catalog.int8'::regtype, 'pg_catalog.numeric'::regtype,
                        'pg_catalog.bool'::regtype, 'pg_catalog.uuid'::regtype, 'pg_catalog.date'::regtype,
                        'pg_catalog.timestamp'::regtype, 'pg_catalog.timestamptz'::regtype)
                    then pg_catalog.format(
                        '(t.%1$I operator(pg_catalog.=) (r.after operator(pg_catalog.->>) %2$L)::%3$s '
                        'or (t.%1$I is null and r.after operator(pg_catalog.->>) %2$L is null))',
                        a.attname, a.attname, pg_catalog.format_type(a.atttypid, null))
                    when a.atttypid in ('pg_catalog.text'::regtype, 'pg_catalog.varchar'::regtype)
                    then pg_catalog.format(
                        '(t.%1$I collate pg_catalog."C" operator(pg_catalog.=) '
                        '(r.after operator(pg_catalog.->>) %2$L) collate pg_catalog."C" '
                        'or (t.%1$I is null and r.after operator(pg_catalog.->>) %2$L is null))',
                        a.attname, a.attname)
                    else pg_catalog.format(
                        'coalesce(pg_catalog.to_jsonb(t.%1$I), ''null''::pg_catalog.jsonb) '
                        'operator(pg_catalog.=) (r.after operator(pg_catalog.->) %2$L)',
                        a.attname, a.attname)
                end,
                ' and ' order by a.attnum)
        into after_check
        from pg_catalog.pg_attribute as a
        where a.attrelid = relid and a.attnum > 0 and not a.attisdropped;
    end if;
    if after_check is null then
        after_check := 'pg_catalog.to_jsonb(t) operator(pg_catalog.=) r.after';
    end if;
    if operation <> 'insert' then
        cols := resilience._restorable_columns(relid::regclass, operation = 'update');
        -- The restored values, read from the before-image (alias b where a
        -- column is not castable).
        select pg_catalog.string_agg(
                case when col_casts[pg_catalog.array_position(col_names, c)] is not null
                    then pg_catalog.format('(r.before operator(pg_catalog.->>) %L)::%s',
                        c, col_casts[pg_catalog.array_position(col_names, c)])
                    else pg_catalog.format('b.%I', c) end,
                ', ' order by o),
            pg_catalog.bool_or(col_casts[pg_catalog.array_position(col_names, c)] is null)
        into value_list, needs_record
        from pg_catalog.unnest(cols) with ordinality as u (c, o);
        select pg_catalog.string_agg(pg_catalog.format('%I', c), ', ') into col_list
        from pg_catalog.unnest(cols) as c;
        record_join := case when needs_record then pg_catalog.format(
            'cross join lateral pg_catalog.jsonb_populate_record(null::%s, r.before) as b ', target)
            else '' end;
    end if;

    if operation = 'insert' then
        execute pg_catalog.format(
            'delete from %1$s as t using resilience.restore_points as r '
            '%2$s'
            'where r.tx_id = $1 and r.seq = $2 and %3$s%4$s',
            target, key_from, key_join,
            case when force then '' else ' and ' || after_check end)
        using tx_id, batch_seq;
    elsif operation = 'update' then
        execute pg_catalog.format(
            'update %1$s as t set (%2$s) = row(%3$s) from resilience.restore_points as r '
            '%4$s%5$s'
            'where r.tx_id = $1 and r.seq = $2 and %6$s%7$s',
            target,
            col_list,
            value_list,
            record_join,
            key_from, key_join,
            case when force then '' else ' and ' || after_check end)
        using tx_id, batch_seq;
    else
        if force and conflicts is not null then
            -- Overwrite whatever took the key meanwhile.
            select pg_catalog.format('(%s) do update set (%s) = row(%s)',
                    (select pg_catalog.string_agg(pg_catalog.format('%I', a.attname), ', ')
                        from pg_catalog.pg_index as i
                        inner join pg_catalog.pg_attribute as a
                            on a.attrelid = i.indrelid and a.attnum = any (i.indkey::int2 [])
                        where i.indrelid = relid and i.indisprimary),
                    pg_catalog.string_agg(pg_catalog.format('%I', c), ', '),
                    pg_catalog.string_agg(pg_catalog.format('excluded.%I', c), ', '))
            into set_list
            from pg_catalog.unnest(resilience._restorable_columns(relid::regclass, true)) as c;
        end if;
        execute pg_catalog.format(
            'insert into %1$s as t (%2$s) overriding system value select %3$s '
            'from resilience.restore_points as r '
            '%4$s'
            'where r.tx_id = $1 and r.seq = $2 order by r.row_no on conflict %5$s',
            target,
            col_list,
            value_list,
            record_join,
            -- Keys already back as they were stay.
            case when force and conflicts is not null then set_list else 'do nothing' end)
        using tx_id, batch_seq;
    end if;
    get diagnostics affected = row_count;

    if not force and affected < coalesce(expected, 0) then
        -- Fewer rows restored than captured: already back in their
        -- before-state (fine), or changed behind the guards (a conflict).
        conflicts := resilience._undo_conflicts(
            tx_id, batch_seq, relid, operation, target, resilience._key_join_sql(relid::regclass));
        if conflicts is not null then
            perform resilience._raise_undo_conflict(tx_id, conflicts);
        end if;
    end if;
    return pg_catalog.jsonb_build_object('restored_rows', affected, 'conflicts', coalesce(conflicts, '[]'::jsonb));
end;
$$;

-- RZ005: the rollback would overwrite rows changed outside the transaction.
create or replace function resilience._raise_undo_conflict(tx_id uuid, conflicts jsonb)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    raise exception using
        errcode = 'RZ005',
        message = pg_catalog.format(
            'rollback of logical transaction %s conflicts with %s row(s) changed outside it; nothing was restored',
            tx_id, pg_catalog.jsonb_array_length(conflicts)),
        detail = pg_catalog.jsonb_build_object('conflicts', conflicts)::text,
        hint = 'Inspect the rows, then roll back with force => true to overwrite them.';
end;
$$;

-- Undo every restore point of tx_id with seq > after_seq, newest first.
-- PostgreSQL queues an FK cascade's statement AFTER the statement that caused
-- it, so strict LIFO can try to re-insert a child before its parent: a step
-- failing with foreign_key_violation is retried after the others, until a
-- pass makes no progress. Returns {"restored_rows", "conflicts"}.
create or replace function resilience._undo(tx_id uuid, after_seq bigint, force boolean)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    undo_token uuid := pg_catalog.gen_random_uuid();
    pending jsonb;
    postponed jsonb;
    step jsonb;
    outcome jsonb;
    conflicts jsonb := '[]'::jsonb;
    restored bigint := 0;
    last_error text;
    last_state text;
begin
    -- Our own restore statements must be neither captured nor claim-blocked.
    insert into resilience.restore_tokens (token) values (undo_token);
    perform pg_catalog.set_config('resilience.restoring', undo_token::text, true);

    -- The captured statements, newest first: a skip scan of the primary key
    -- (one probe per statement, not a read of every captured row).
    with recursive batch as (
        (
            select r.seq, r.relation::oid as relid, r.operation
            from resilience.restore_points as r
            where r.tx_id = _undo.tx_id and r.seq > after_seq
            order by r.seq
            limit 1
        )
        union all
        select later.seq, later.relid, later.operation
        from batch
        cross join lateral (
            select r.seq, r.relation::oid as relid, r.operation
            from resilience.restore_points as r
            where r.tx_id = _undo.tx_id and r.seq > batch.seq
            order by r.seq
            limit 1
        ) as later
    )
    select coalesce(pg_catalog.jsonb_agg(b order by b.seq desc), '[]'::jsonb) into pending
    from batch as b;

    while pg_catalog.jsonb_array_length(pending) > 0 loop
        postponed := '[]'::jsonb;
        for step in select e from pg_catalog.jsonb_array_elements(pending) as e loop
            begin
                outcome := resilience._undo_batch(
                    tx_id, (step ->> 'seq')::bigint, (step ->> 'relid')::oid, step ->> 'operation', force);
                restored := restored + (outcome ->> 'restored_rows')::bigint;
                conflicts := conflicts || coalesce(outcome -> 'conflicts', '[]'::jsonb);
            exception when foreign_key_violation then
                get stacked diagnostics last_error = message_text, last_state = returned_sqlstate;
                postponed := postponed || pg_catalog.jsonb_build_array(step);
            end;
        end loop;
        if pg_catalog.jsonb_array_length(postponed) = pg_catalog.jsonb_array_length(pending) then
            raise exception using errcode = last_state, message = last_error;
        end if;
        pending := postponed;
    end loop;

    delete from resilience.restore_tokens as r where r.token = undo_token;
    perform pg_catalog.set_config('resilience.restoring', '', true);
    return pg_catalog.jsonb_build_object('restored_rows', restored, 'conflicts', conflicts);
end;
$$;

create or replace function resilience.tx_rollback(tx_id uuid, reason text default null, force boolean default false)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tx resilience.transactions := resilience._tx_locked(tx_id, 'update', admin_ok => true);
    undo jsonb;
    finished timestamptz;
begin
    -- Rolling back twice is harmless: the first call did the work.
    if tx.status in ('rolled_back', 'timed_out') then
        return pg_catalog.jsonb_build_object(
            'success', true, 'status', tx.status, 'restored_rows', 0, 'conflicts', '[]'::jsonb);
    end if;
    if tx.status <> 'active' then
        raise exception using
            errcode = 'RZ002',
            message = pg_catalog.format('logical transaction %s is %s, not active', tx.id, tx.status);
    end if;
    undo := resilience._undo(tx.id, 0, coalesce(force, false));
    finished := pg_catalog.clock_timestamp();
    update resilience.transactions as t
    set status = 'rolled_back', finished_at = finished,
        outcome = pg_catalog.jsonb_build_object('reason', reason, 'forced_conflicts', undo -> 'conflicts')
    where t.id = tx.id;
    perform resilience._release_claims(tx.id);
    if undo -> 'conflicts' <> '[]'::jsonb then
        perform resilience._audit('conflict', tx.id, pg_catalog.jsonb_build_object(
            'conflicts', undo -> 'conflicts', 'forced', true));
    end if;
    perform resilience._audit('rollback', tx.id, pg_catalog.jsonb_build_object(
        'reason', reason, 'forced', coalesce(force, false),
        'restored_rows', undo -> 'restored_rows',
        'duration_ms', pg_catalog.round(extract(epoch from finished - tx.started_at) * 1000, 3)));
    return pg_catalog.jsonb_build_object(
        'success', true, 'status', 'rolled_back',
        'restored_rows', undo -> 'restored_rows', 'conflicts', undo -> 'conflicts');
end;
$$;

create or replace function resilience.tx_rollback_to(tx_id uuid, name text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tx resilience.transactions := resilience._tx_locked(tx_id, 'update');
    marker bigint;
    undo jsonb;
begin
    perform resilience._require_active(tx);
    select s.seq into marker from resilience.savepoints as s where s.tx_id = tx.id and s.name = tx_rollback_to.name;
    if marker is null then
        raise exception using
            errcode = 'RZ006',
            message = pg_catalog.format('savepoint %L not found in logical transaction %s', name, tx.id);
    end if;
    undo := resilience._undo(tx.id, marker, false);
    -- The undone statements leave the transaction, and so do the claims that
    -- only they held.
    with undone as (
        delete from resilience.restore_points as r
        where r.tx_id = tx.id and r.seq > marker
        returning r.relation, r.key_before, r.key_after
    ),
    released as (
        select u.relation, pg_catalog.jsonb_hash_extended(u.key_before, 0) as key_hash
        from undone as u where u.key_before is not null
        union
        select u.relation, pg_catalog.jsonb_hash_extended(u.key_after, 0) from undone as u where u.key_after is not null
        except
        select r.relation, pg_catalog.jsonb_hash_extended(r.key_before, 0) from resilience.restore_points as r
        where r.tx_id = tx.id and r.seq <= marker and r.key_before is not null
        except
        select r.relation, pg_catalog.jsonb_hash_extended(r.key_after, 0) from resilience.restore_points as r
        where r.tx_id = tx.id and r.seq <= marker and r.key_after is not null
    )
    delete from resilience.claims as c
    using released
    where c.relation = released.relation and c.key_hash = released.key_hash and c.tx_id = tx.id;
    delete from resilience.savepoints as s where s.tx_id = tx.id and s.seq > marker;
    perform resilience._audit('rollback', tx.id, pg_catalog.jsonb_build_object(
        'savepoint', name, 'restored_rows', undo -> 'restored_rows'));
    return pg_catalog.jsonb_build_object(
        'success', true, 'savepoint', name, 'restored_rows', undo -> 'restored_rows');
end;
$$;
