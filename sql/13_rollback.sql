-- Rollback: undo captured statements newest first (LIFO) inside ONE database
-- transaction: everything or nothing. Each statement is undone by its table's
-- generated undo function, set-based. A row is restored only while it still
-- equals its typed after-image (binary equality, *=); every other row is a
-- conflict, and so is every error while restoring (unique, FK, check, not
-- null, exclusion, a user trigger): RZ005 naming the rows and the
-- constraint, nothing restored. force => true overwrites drifted rows (it
-- cannot override a constraint).

-- May this role read the table's rows as stored (a SELECT grant and no row
-- level security)? Only then do errors and audit rows name row keys.
create or replace function resilience._keys_visible_to(relation regclass, role_name text)
returns boolean
language sql
stable
set search_path = ''
as $$
    select coalesce(pg_catalog.to_regrole(role_name) is not null
        and pg_catalog.has_table_privilege(pg_catalog.to_regrole(role_name), relation, 'SELECT')
        and not (select c.relrowsecurity from pg_catalog.pg_class as c where c.oid = relation), false);
$$;

-- RZ005: the rollback cannot restore these rows; nothing was restored.
create or replace function resilience._raise_undo_conflict(tx_id uuid, conflicts jsonb)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    -- A transaction of thousands of statements can conflict on all of them:
    -- the message names the first few steps and distinct reasons, the
    -- detail carries the first 100 conflicts and the total.
    total integer := pg_catalog.jsonb_array_length(conflicts);
    shown constant integer := 5;
begin
    raise exception using
        errcode = 'RZ005',
        message = pg_catalog.format(
            'rollback of logical transaction %s cannot restore %s%s: %s; nothing was restored',
            tx_id,
            (select pg_catalog.string_agg(pg_catalog.format('%s %s', c.e ->> 'operation', c.e ->> 'table')
                || case when c.e ->> 'seq' is not null then pg_catalog.format(' (seq %s)', c.e ->> 'seq') else '' end,
                ', ' order by c.n)
             from pg_catalog.jsonb_array_elements(conflicts) with ordinality as c (e, n) where c.n <= shown),
            case when total > shown then pg_catalog.format(' and %s more steps', total - shown) else '' end,
            (select pg_catalog.string_agg(r.reason, '; ')
             from (
                -- format() turns NULL into '': test the constraint itself.
                select distinct coalesce(
                    case when c ->> 'constraint' is not null
                        then pg_catalog.format('constraint %s: %s', c ->> 'constraint', c ->> 'error') end,
                    c ->> 'error', 'rows changed outside the transaction') as reason
                from pg_catalog.jsonb_array_elements(conflicts) as c
                limit shown
             ) as r)),
        detail = pg_catalog.jsonb_build_object(
            'conflicts', (select pg_catalog.jsonb_agg(c.e order by c.n)
                from pg_catalog.jsonb_array_elements(conflicts) with ordinality as c (e, n) where c.n <= 100),
            'conflict_count', total)::text,
        hint = 'Inspect the rows (tx_images, as resilience_admin); roll back with force => true to overwrite '
            'rows changed outside the transaction.';
end;
$$;

-- Rows of others that an undo step would change through a foreign key's
-- action, which no image brings back: such a step is refused (23503, the
-- foreign key named), never run silently. Deleting the rows an insert added
-- sets off ON DELETE CASCADE / SET NULL / SET DEFAULT on the rows
-- referencing them; giving an updated row its old key back sets off ON
-- UPDATE ones on the rows referencing the new key. Others' rows are those
-- written since (the inserted row was visible, the new key usable): rows
-- with an image of this transaction in the referencing table (a managed
-- one) are its own, restored by their own steps (its update's cascade, a
-- self-reference in the same statement), whatever the order the steps run
-- in, so every step of a table is checked at once, before the first runs.
-- The foreign keys are read at the rollback (one added since counts), the
-- referencing rows as the package owner: where it may not read them, it
-- cannot tell, and the undo goes on as PostgreSQL's action would.
-- Returns {"<seq>": {"fk", "message"}} for the refused steps of this table
-- and operation with seq > after_seq; {} for the usual table.
create or replace function resilience._fk_action_refusals(
    tx_id uuid, after_seq bigint, relation regclass, operation text
)
returns jsonb
language plpgsql
volatile
set search_path = ''
-- Planned once per session: custom plans of its catalog query (which
-- PostgreSQL keeps choosing here) cost a rollback ~1 ms per table.
set plan_cache_mode = force_generic_plan
-- Image tables are mostly empty when analyzed: the referencing rows' own
-- images are looked up by index, not scanned once per row.
set enable_seqscan = off
as $$
declare
    image regclass := (select m.image_table from resilience.managed_tables as m
        where m.relation = _fk_action_refusals.relation);
    fk record;
    child_key record;
    child_image regclass;
    theirs text;
    refused_seqs bigint [];
    refusals jsonb := '{}'::jsonb;
    own_key record;
begin
    -- No foreign key with such an action references the table (the usual
    -- case: one index probe), or it is no longer managed (its steps are
    -- reported as such).
    if image is null or not exists (
        select 1 from pg_catalog.pg_trigger as g
        where g.tgrelid = any (array(
                select relation union all select p.relid from pg_catalog.pg_partition_tree(relation) as p))
            and g.tgfoid = any (resilience._fk_action_functions(
                case operation when 'insert' then 'DELETE' else 'UPDATE' end))
    ) then
        return refusals;
    end if;
    -- The rows whose undo would set the actions off are locked first, as
    -- the undo would: a referencing row inserted meanwhile, not committed
    -- yet, holds a key share lock on them, so this waits for it, and the
    -- checks below (each statement a new snapshot) see it. Without the
    -- lock, the undo's own write would wait for it instead, after the
    -- checks, and the action would reach a row nothing checked.
    select k.names, k.image_cols, k.operators into own_key from resilience._primary_key(relation) as k;
    begin
        execute pg_catalog.format(
            'select from %s as t where exists (select 1 from %s as p where p.tx_id = $1 and p.seq > $2 '
            'and p.op = $3 and %s) for update of t', relation, image,
            resilience._sql_keys_equal('p.', own_key.image_cols, own_key.operators, 't.', own_key.names))
        using tx_id, after_seq, pg_catalog.left(operation, 1)::"char";
    exception when insufficient_privilege then
        null;  -- the undo takes the locks; the checks below still run
    end;
    for fk in
        with recursive up as (
            -- (a partitioned table's actions may be on its partitions only)
            select c.oid, c.conparentid
            from (select relation as relid union select p.relid from pg_catalog.pg_partition_tree(relation) as p) as r
            inner join pg_catalog.pg_trigger as g on g.tgrelid = r.relid
            inner join pg_catalog.pg_constraint as c on c.oid = g.tgconstraint
            where g.tgfoid = any (resilience._fk_action_functions(
                case operation when 'insert' then 'DELETE' else 'UPDATE' end))
            union
            select c.oid, c.conparentid from pg_catalog.pg_constraint as c
            inner join up on c.oid = up.conparentid
        )
        -- Image attributes are numbered by the managed (root) tables'
        -- columns: a constraint's own attribute numbers (a partition's, a
        -- dropped column before them) are mapped by name, the referencing
        -- table's to its managed root's (a before-image of it, for its owner).
        select c.conname, c.conrelid::regclass as child, k.refers, k.referred_before,
            -- An update whose referenced values kept their binary image sets
            -- nothing off: PostgreSQL compares a referenced key so (1.0 ->
            -- 1.00 cascades), not with its equality operator. A null on one
            -- side only counts as changed (on both, nothing refers to it).
            case when operation = 'insert' then 'true' else pg_catalog.format(
                'coalesce(not pg_catalog.record_image_eq(row(%s), row(%s)), true)', k.new_key, k.old_key)
            end as changed
        from up inner join pg_catalog.pg_constraint as c on c.oid = up.oid
        cross join lateral (
            select pg_catalog.string_agg(pg_catalog.format('(p.a).%I operator(%I.%s) t.%I', 'c' || ra.attnum,
                    n.nspname, o.oprname, fa.attname), ' and ' order by k.ord) as refers,
                pg_catalog.string_agg(pg_catalog.format('(p.a).%I operator(%I.%s) (i.b).%I', 'c' || ra.attnum,
                    n.nspname, o.oprname, 'c' || ca.attnum), ' and ' order by k.ord) as referred_before,
                pg_catalog.string_agg(pg_catalog.format('(p.a).%I', 'c' || ra.attnum), ', ' order by k.ord) as new_key,
                pg_catalog.string_agg(pg_catalog.format('(p.b).%I', 'c' || ra.attnum), ', ' order by k.ord) as old_key
            from rows from (pg_catalog.unnest(c.confkey), pg_catalog.unnest(c.conkey), pg_catalog.unnest(c.conpfeqop))
                with ordinality as k (pk, fk, op, ord)
            inner join pg_catalog.pg_operator as o on o.oid = k.op
            inner join pg_catalog.pg_namespace as n on n.oid = o.oprnamespace
            inner join pg_catalog.pg_attribute as pa on pa.attrelid = c.confrelid and pa.attnum = k.pk
            inner join pg_catalog.pg_attribute as ra on ra.attrelid = relation and ra.attname = pa.attname
            inner join pg_catalog.pg_attribute as fa on fa.attrelid = c.conrelid and fa.attnum = k.fk
            inner join pg_catalog.pg_attribute as ca
                on ca.attrelid = coalesce(pg_catalog.pg_partition_root(c.conrelid), c.conrelid)
                and ca.attname = fa.attname
        ) as k
        where up.conparentid = 0
    loop
        select m.image_table into child_image from resilience.managed_tables as m
        where m.relation = coalesce(pg_catalog.pg_partition_root(fk.child), fk.child);
        select k.names, k.image_cols, k.operators into child_key from resilience._primary_key(fk.child) as k;
        -- A referencing row is the transaction's own when its first image
        -- undone here (a written row's: an insert, update or delete) did
        -- not refer to the key yet: the transaction made the reference (its
        -- insert, its update, its update's cascade). A row that referred to
        -- it before the transaction's first image of it is others' (their
        -- row, which the transaction merely wrote since).
        -- A row's first image is its claim (one index probe), unless the
        -- claim is a lock, a key change's old key or older than the
        -- savepoint: then its first image after it (a scan of the
        -- transaction's images, on that rare path only).
        theirs := case when child_image is null or child_key.names is null or fk.referred_before is null then 'true'
            else pg_catalog.format('not exists (select 1 from %1$s as i where i.claim and %2$s and i.tx_id = $1 '
                'and case when i.seq > $2 and i.op in (''i'', ''u'', ''d'') then not coalesce(%3$s, false) '
                'else exists (select 1 from (select e.b from %1$s as e where e.tx_id = $1 and e.seq > $2 '
                'and e.op in (''i'', ''u'', ''d'') and %4$s order by e.seq limit 1) as i '
                'where not coalesce(%3$s, false)) end)',
                child_image,
                resilience._sql_keys_equal('i.', child_key.image_cols, child_key.operators, 't.', child_key.names),
                fk.referred_before,
                resilience._sql_keys_equal('e.', child_key.image_cols, child_key.operators, 't.', child_key.names))
            end;
        begin
            execute pg_catalog.format(
                'select pg_catalog.array_agg(distinct p.seq) from %s as p, %s as t where p.tx_id = $1 '
                'and p.seq > $2 and p.op = $3 and (%s) and %s and %s', image, fk.child, fk.changed, fk.refers, theirs)
            into refused_seqs using tx_id, after_seq, pg_catalog.left(operation, 1)::"char";
        exception when insufficient_privilege then
            refused_seqs := null;
        end;
        select refusals || coalesce(pg_catalog.jsonb_object_agg(r.seq::text, pg_catalog.jsonb_build_object(
                'fk', fk.conname,
                'message', pg_catalog.format(
                    case operation when 'insert' then 'deleting rows this transaction inserted into %s'
                        else 'giving rows of %s their old key back' end
                    || ' would change rows of %s written since, through foreign key %I',
                    relation, fk.child, fk.conname))), '{}'::jsonb)
        into refusals
        from pg_catalog.unnest(refused_seqs) as r (seq);
    end loop;
    return refusals;
end;
$$;

-- Undo every captured statement of tx_id with seq > after_seq, newest
-- first. PostgreSQL runs an FK cascade as a statement AFTER the one that
-- caused it, so strict LIFO can try to re-insert a child before its parent,
-- or find a cascaded row not yet back in its after-state: a step that fails
-- or finds rows not accounted for waits, and the waiting steps are tried
-- again after every step that succeeds (the step that brings the parent
-- back may be the very next one, and an older one may change the parent's
-- key again). Whatever still waits when every step was tried is the
-- conflict. Returns {"restored_rows", "conflicts"} (conflicts: forced ones).
-- The deferrable constraints an undo of these tables can meet, as lists
-- for SET CONSTRAINTS (schema-qualified names): the tables' own (unique,
-- primary key, exclusion, foreign keys, constraint triggers) and the foreign
-- keys that reference them; `initially_deferred` those of them declared
-- INITIALLY DEFERRED. A name that also names a constraint that is not
-- deferrable in its schema is left out (SET CONSTRAINTS would refuse it):
-- that constraint is then checked at each undo step. Null for none.
create or replace function resilience._deferrable_constraints(relations oid[])
returns table (names text, initially_deferred text)
language sql
stable
set search_path = ''
as $$
    select pg_catalog.string_agg(q.name, ', ' order by q.name),
        pg_catalog.string_agg(q.name, ', ' order by q.name) filter (where q.initially_deferred)
    from (
        select pg_catalog.format('%I.%I', n.nspname, c.conname) as name,
            pg_catalog.bool_or(c.condeferred) as initially_deferred
        from pg_catalog.pg_constraint as c
        inner join pg_catalog.pg_namespace as n on n.oid = c.connamespace
        where c.condeferrable and (c.conrelid = any (relations) or c.confrelid = any (relations))
            and not exists (
                select 1 from pg_catalog.pg_constraint as o
                where o.connamespace = c.connamespace and o.conname = c.conname and not o.condeferrable
            )
        group by n.nspname, c.conname
    ) as q;
$$;

create or replace function resilience._undo(tx_id uuid, after_seq bigint, force boolean)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    undo_token uuid := pg_catalog.gen_random_uuid();
    owner_role text := (select t.owner_role from resilience.transactions as t where t.id = _undo.tx_id);
    pending jsonb;
    next_step integer := 0;
    retry jsonb := '[]'::jsonb;
    waiting jsonb := '[]'::jsonb;
    step jsonb;
    outcome jsonb;
    report jsonb;
    drifted jsonb := '[]'::jsonb;
    restored bigint := 0;
    undo_fn regprocedure;
    reshaped bigint;
    failed_state text;
    failed_message text;
    failed_constraint text;
    failed_table text;
    failed_schema text;
    -- Steps whose undo would change others' rows through a foreign key's
    -- action (_fk_action_refusals): {"<seq>": {"fk", "message"}}.
    refusals jsonb := '{}'::jsonb;
    checked record;
    -- The deferrable constraints the undo can meet (_deferrable_constraints).
    deferrable_names text;
    initially_deferred_names text;
begin
    -- Our own restore statements are neither captured nor claim-blocked.
    insert into resilience.restore_tokens (token) values (undo_token);
    perform pg_catalog.set_config('resilience.restoring', undo_token::text, true);
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
            'seq', s.seq, 'relation', s.relation::oid, 'table', s.relation::text, 'operation', s.operation,
            'rows', s.row_count) order by s.seq desc), '[]'::jsonb)
    into pending
    from resilience.tx_statements as s
    where s.tx_id = _undo.tx_id and s.seq > after_seq and s.operation <> 'lock' and s.row_count > 0;
    -- Deferrable constraints are checked once, after the last step (below):
    -- the undo walks back through the states the transaction's own calls
    -- passed through inside one database transaction (a row moved in two
    -- statements past a deferred foreign key, a deferred unique swap), which
    -- only their commit had to satisfy. Only the constraints the undo can
    -- meet, and given back their declared deferral afterwards: the undo
    -- runs inside its caller's database transaction (a lazy reap inside
    -- another user's call), whose own deferred constraints (SET CONSTRAINTS
    -- ALL IMMEDIATE fired them, and kept them immediate for the rest of
    -- that transaction) are none of its business.
    select d.names, d.initially_deferred into deferrable_names, initially_deferred_names
    from resilience._deferrable_constraints((
        select pg_catalog.array_agg(distinct (e ->> 'relation')::oid)
        from pg_catalog.jsonb_array_elements(pending) as e)) as d;
    if deferrable_names is not null then
        execute pg_catalog.format('set constraints %s deferred', deferrable_names);
    end if;
    for checked in
        select distinct (e ->> 'relation')::oid::regclass as relation, e ->> 'operation' as operation
        from pg_catalog.jsonb_array_elements(pending) as e
        where e ->> 'operation' in ('insert', 'update')
            and exists (select 1 from pg_catalog.pg_class as c where c.oid = (e ->> 'relation')::oid)
    loop
        refusals := refusals || resilience._fk_action_refusals(tx_id, after_seq, checked.relation, checked.operation);
    end loop;

    -- Each success removes a step for good, and between two successes each
    -- step is tried at most once: this ends. The journal is walked by
    -- position (no copy per step); only waiting steps move between lists.
    loop
        if retry <> '[]'::jsonb then
            step := retry -> 0;
            retry := retry - 0;
        elsif next_step < pg_catalog.jsonb_array_length(pending) then
            step := pending -> next_step;
            next_step := next_step + 1;
        else
            exit;
        end if;
        report := null;
        -- Only while it is still SECURITY DEFINER (its owner, the table
        -- owner, could make it run as us).
        select m.undo_function, m.reshaped_at_seq into undo_fn, reshaped
        from resilience.managed_tables as m
        inner join pg_catalog.pg_proc as p on p.oid = m.undo_function and p.prosecdef
        where m.relation = (step ->> 'relation')::oid;
        -- A dropped table's rows cannot come back: force restores the other
        -- tables and reports its steps, as it does drifted rows.
        if undo_fn is null and force and not exists (
            select 1 from pg_catalog.pg_class as c where c.oid = (step ->> 'relation')::oid
        ) then
            drifted := drifted || pg_catalog.jsonb_build_array(step - 'relation' - 'rows'
                || pg_catalog.jsonb_build_object('error', 'table dropped'));
        elsif undo_fn is null then
            report := pg_catalog.jsonb_build_array(step - 'relation' - 'rows'
                || pg_catalog.jsonb_build_object('error', 'table dropped, no longer managed, or its undo altered'));
        -- Columns were added to or dropped from the table after these
        -- images were taken.
        elsif not force and (step ->> 'seq')::bigint <= reshaped then
            report := pg_catalog.jsonb_build_array(step - 'relation' - 'rows' || pg_catalog.jsonb_build_object(
                'error', 'columns were added to or dropped from the table after capture'));
        else
            begin
                if refusals ? (step ->> 'seq') then
                    raise exception using
                        errcode = '23503',
                        constraint = refusals -> (step ->> 'seq') ->> 'fk',
                        message = refusals -> (step ->> 'seq') ->> 'message';
                end if;
                execute pg_catalog.format('select %s($1, $2, $3, $4)', undo_fn::oid::regproc)
                into outcome
                using tx_id, (step ->> 'seq')::bigint, step ->> 'operation', force;
                restored := restored + (outcome ->> 'restored_rows')::bigint;
                -- One entry per row; its key only where the owner may read it.
                report := (
                    select pg_catalog.jsonb_agg((step - 'relation' - 'rows') || pg_catalog.jsonb_build_object(
                        'key', case when resilience._keys_visible_to((step ->> 'relation')::oid::regclass, owner_role)
                            then k.key end))
                    from pg_catalog.jsonb_array_elements(outcome -> 'conflicts') as k (key));
                -- Forced: the rows were overwritten, and are reported.
                if force then
                    drifted := drifted || coalesce(report, '[]'::jsonb);
                    report := null;
                end if;
            -- A row lock held elsewhere that a lock_timeout gave up on (a
            -- lazy reap's), a deadlock or a serialization failure (another
            -- write racing this undo) says nothing against the rows: no
            -- conflict, the caller decides (tx_reap leaves the transaction
            -- for later; tx_rollback's caller may retry).
            exception when lock_not_available or deadlock_detected or serialization_failure then
                raise;
            when others or assert_failure then
                get stacked diagnostics failed_state = returned_sqlstate, failed_message = message_text,
                    failed_constraint = constraint_name;
                execute pg_catalog.format('select %s($1, $2, $3, false)', undo_fn::oid::regproc)
                into outcome using tx_id, (step ->> 'seq')::bigint, 'keys';
                report := pg_catalog.jsonb_build_array(step - 'relation'
                    || pg_catalog.jsonb_build_object('sqlstate', failed_state, 'error', failed_message,
                        'constraint', nullif(failed_constraint, ''),
                        'keys', case when resilience._keys_visible_to((step ->> 'relation')::oid::regclass, owner_role)
                            then outcome -> 'conflicts' end));
            end;
        end if;
        if report is null then
            -- Done: what waited may go through now, newest first, before
            -- the older steps.
            if waiting <> '[]'::jsonb then
                retry := (select pg_catalog.jsonb_agg(w.e -> 'step' order by w.n)
                    from pg_catalog.jsonb_array_elements(waiting) with ordinality as w (e, n)) || retry;
                waiting := '[]'::jsonb;
            end if;
        else
            waiting := waiting || pg_catalog.jsonb_build_array(
                pg_catalog.jsonb_build_object('step', step, 'report', report));
        end if;
    end loop;
    -- Rows changed outside the transaction are never overwritten silently,
    -- and no step is skipped: nothing restored.
    if waiting <> '[]'::jsonb then
        perform resilience._raise_undo_conflict(tx_id, (
            select pg_catalog.jsonb_agg(r.e order by w.n, r.m)
            from pg_catalog.jsonb_array_elements(waiting) with ordinality as w (e, n),
                pg_catalog.jsonb_array_elements(w.e -> 'report') with ordinality as r (e, m)));
    end if;
    -- The deferred checks, here and not at commit, where no error could be
    -- turned into RZ005. No single step is to blame: the table and the
    -- constraint are named.
    begin
        if deferrable_names is not null then
            execute pg_catalog.format('set constraints %s immediate', deferrable_names);
        end if;
    exception when lock_not_available or deadlock_detected or serialization_failure then
        raise;
    when others then
        get stacked diagnostics failed_state = returned_sqlstate, failed_message = message_text,
            failed_constraint = constraint_name, failed_table = table_name, failed_schema = schema_name;
        perform resilience._raise_undo_conflict(tx_id, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'operation', 'deferred check', 'seq', null,
            'table', case when failed_table <> '' then pg_catalog.format('%I.%I', failed_schema, failed_table) end,
            'sqlstate', failed_state, 'error', failed_message, 'constraint', nullif(failed_constraint, ''))));
    end;
    if initially_deferred_names is not null then
        execute pg_catalog.format('set constraints %s deferred', initially_deferred_names);
    end if;

    delete from resilience.restore_tokens as r where r.token = undo_token;
    perform pg_catalog.set_config('resilience.restoring', '', true);
    return pg_catalog.jsonb_build_object('restored_rows', restored, 'conflicts', drifted);
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
    perform resilience._require_bounded('reason', reason, 1000);
    -- Rolling back twice is harmless: the first call did the work.
    if tx.status in ('rolled_back', 'timed_out') then
        return pg_catalog.jsonb_build_object(
            'success', true, 'status', tx.status, 'restored_rows', 0, 'conflicts', '[]'::jsonb);
    end if;
    -- A failed transaction (its undo conflicted at expiry) may be retried by
    -- an admin with force: its images were kept for that.
    -- (RAISE refuses a NULL option: a committed one gets no hint at all.)
    if tx.status = 'failed' and not (coalesce(force, false) and resilience._is_admin()) then
        raise exception using
            errcode = 'RZ002',
            message = pg_catalog.format('logical transaction %s is %s, not active', tx.id, tx.status),
            hint = 'A member of resilience_admin may retry it with force => true.';
    elsif tx.status not in ('active', 'failed') then
        raise exception using
            errcode = 'RZ002',
            message = pg_catalog.format('logical transaction %s is %s, not active', tx.id, tx.status);
    end if;
    -- Its 0.1.0 undo failed at the upgrade, whose revision 0005 then dropped
    -- 0.1.0's jsonb images: nothing is left to restore, and an empty undo
    -- must not read as a rollback.
    if tx.status = 'failed' and tx.outcome ->> 'reason' = 'upgrade to typed images: rollback failed' then
        raise exception using
            errcode = 'RZ005',
            message = pg_catalog.format('rollback of logical transaction %s cannot restore anything: its '
                'images were dropped by the upgrade from 0.1.0, when its rollback failed; nothing was restored',
                tx.id),
            detail = pg_catalog.jsonb_build_object('conflicts', pg_catalog.jsonb_build_array(
                pg_catalog.jsonb_build_object('reason', 'images dropped by the upgrade from 0.1.0',
                    'error', tx.outcome -> 'error'))),
            hint = 'The rows it changed stay as they are; the upgrade''s audit row (event conflict) names the error.';
    end if;
    -- Its claims were released when it failed: others' claims since win.
    if tx.status = 'failed' then
        perform resilience._reclaim(tx.id);
    end if;
    undo := resilience._undo(tx.id, 0, coalesce(force, false));
    finished := pg_catalog.clock_timestamp();
    update resilience.transactions as t
    set status = 'rolled_back', finished_at = finished,
        outcome = (coalesce(t.outcome, '{}'::jsonb) - 'reap_after')
            || pg_catalog.jsonb_build_object('reason', reason, 'forced_conflicts', undo -> 'conflicts')
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
    image regclass;
    kept boolean;
begin
    perform resilience._require_active(tx);
    select s.seq into marker from resilience.savepoints as s where s.tx_id = tx.id and s.name = tx_rollback_to.name;
    if marker is null then
        raise exception using
            errcode = 'RZ006',
            message = pg_catalog.format('savepoint %L not found in logical transaction %s', name, tx.id);
    end if;
    undo := resilience._undo(tx.id, marker, false);
    -- The undone statements leave the transaction, and so do the claims only
    -- they held: a claim is the first image of its key, so every image of a
    -- key claimed after the savepoint is after it too.
    -- A table left without images of the transaction has no claims of it
    -- either: it leaves claimed_tables (unmanage_table refused it with
    -- 55006, and plain writes probed its claims, until the transaction
    -- ended).
    for image in select resilience._tx_image_tables(tx.id) loop
        execute pg_catalog.format('delete from %s as i where i.tx_id = $1 and i.seq > $2', image)
        using tx.id, marker;
        execute pg_catalog.format('select exists (select 1 from %s as i where i.tx_id = $1)', image)
        into kept using tx.id;
        if not kept then
            delete from resilience.claimed_tables as c
            where c.tx_id = tx.id
                and c.relation = (select m.relation from resilience.managed_tables as m where m.image_table = image);
        end if;
    end loop;
    delete from resilience.tx_statements as s where s.tx_id = tx.id and s.seq > marker;
    delete from resilience.savepoints as s where s.tx_id = tx.id and s.seq > marker;
    perform resilience._audit('rollback', tx.id, pg_catalog.jsonb_build_object(
        'savepoint', name, 'restored_rows', undo -> 'restored_rows'));
    return pg_catalog.jsonb_build_object(
        'success', true, 'savepoint', name, 'restored_rows', undo -> 'restored_rows');
end;
$$;
