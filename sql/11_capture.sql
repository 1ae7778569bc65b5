-- Capture and claims (v2): typed per-table images.
--
-- manage_table(t) generates, for table t, in schema resilience:
-- * a row type `_row_<n>`: one attribute c<attnum> per column of t, in the
--   column's own type (a domain's base type, so that a NOT NULL domain does
--   not forbid the empty image of an insert). Attribute names are ours, so no
--   column name a user picks can collide with them;
-- * an image table `_img_<n>`: (tx_id, seq, op, claim, k1..km, b, a): the
--   before image b and after image a of each captured row, typed, and the
--   row's primary key k1..km. A partial unique index on (k1..km) WHERE claim
--   IS the claim: the first image of a key in a transaction claims it, one
--   insert per captured row;
-- * a capture trigger function `_capture_<n>` (static SQL over the transition
--   tables, plan cached), an undo function `_undo_<n>` and a lock function
--   `_lock_<n>`, all with the table's columns baked in: no SQL text is built
--   from the catalog on a write or a rollback.
-- The registry (managed_tables, keyed by regclass) records what was generated
-- and the table's shape; a captured write on a table whose shape changed
-- since fails with RZ007 naming manage_table (where event triggers are
-- installed, DDL regenerates at once: sql/superuser/20_managed_tables.sql).
--
-- Every generated body sets `#variable_conflict use_variable` and qualifies
-- every column reference with a table alias, and its variables are v_-named:
-- a user's column name never resolves to anything of ours.

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

-- 55P03 naming the table, the holder and its expiry; never a row's values
-- (the writer may not be allowed to read the claimed row). Nobody waits.
create or replace function resilience._claim_conflict(relation regclass, holder uuid)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    expires timestamptz;
    expired boolean;
begin
    select t.expires_at into expires from resilience.transactions as t where t.id = holder;
    expired := expires <= pg_catalog.clock_timestamp();
    raise exception using
        errcode = '55P03',
        message = pg_catalog.format(
            'a row of table %s is claimed by logical transaction %s (expires %s%s)',
            relation, coalesce(holder::text, '(another writer)'), coalesce(expires::text, '?'),
            case when expired then ', expired: the next tx_reap rolls it back' else '' end),
        detail = pg_catalog.jsonb_build_object(
            'table', relation::text, 'holder', holder, 'expires_at', expires)::text,
        hint = case when expired
            then 'Call resilience.tx_reap() and retry; through PostgREST, set db-pre-request to resilience.tx_pre_request.'
            else 'Retry once the holder commits or rolls back.' end;
end;
$$;

-- The generated code that reads, before a statement's claims are written,
-- whether they may conflict (v_may_conflict, _sql_claiming): another
-- transaction holds claims on the table, or its primary key is deferrable
-- (a key written twice then waits on the claim index, not on the table's
-- key). And whether this is the transaction's first statement on the table
-- (v_first: the one whose marker row goes in; two calls at once insert it
-- once). For the capture and lock functions.
create or replace function resilience._sql_claim_marker()
returns text
language sql
immutable
set search_path = ''
as $$
    select $code$
    select coalesce(pg_catalog.bool_or(c.tx_id = v_tx_id), false),
        coalesce(pg_catalog.bool_or(c.tx_id <> v_tx_id), false) or exists (
            select 1 from pg_catalog.pg_constraint as k
            where k.conrelid = v_root and k.contype = 'p' and k.condeferrable)
    into v_first, v_may_conflict
    from resilience.claimed_tables as c where c.relation = v_root;
    if v_first then
        v_first := false;
    else
        insert into resilience.claimed_tables (relation, tx_id) values (v_root, v_tx_id) on conflict do nothing;
        get diagnostics v_rows = row_count;
        v_first := v_rows > 0;
    end if;
$code$::text;
$$;

-- The generated code that writes a statement's claims (`writes`, which sets
-- v_rows), for the capture and lock functions. A key claimed already makes
-- the claiming insert fail on the claim index: 55P03 naming the holder
-- (`holder_probe` sets v_holder, null for a key the statement holds
-- twice), nobody waits for a logical transaction. The exception block that
-- turns unique_violation into 55P03 is a subtransaction with its own XID,
-- so a statement whose rows hold each key once (`keys_once`: a boolean of
-- the generated code) enters it only when another transaction holds
-- claims on the table or its primary key is deferrable (v_may_conflict,
-- read with the statement's claimed_tables row), or the isolation is not
-- READ COMMITTED: a batch of writes and locks
-- in one database transaction then stays under the 64 subtransactions a
-- backend can cache (past them, every other session's snapshots overflow
-- to pg_subtrans). Otherwise such a statement cannot conflict: a claim on
-- a key it wrote was made by a database transaction that wrote or locked
-- that key and committed before this statement could, so the probe's
-- newer snapshot sees its claimed_tables row. The exception: a table whose
-- primary key was dropped unseen (no event trigger) can hold two rows with
-- one key; a statement on both, or two transactions on one each at the
-- same moment, get 23505 instead of 55P03.
create or replace function resilience._sql_claiming(keys_once text, writes text, holder_probe text)
returns text
language sql
immutable
set search_path = ''
as $$
    select pg_catalog.concat_ws(E'\n',
        '    if ' operator(pg_catalog.||) keys_once operator(pg_catalog.||) ' and not v_may_conflict',
        '        and pg_catalog.current_setting(''transaction_isolation'') = ''read committed''',
        '    then',
        writes,
        '    else',
        '        begin',
        writes,
        '        exception when unique_violation then',
        holder_probe,
        '            perform resilience._claim_conflict(v_root, v_holder);',
        '        end;',
        '    end if;');
$$;

-- The logical transaction a write belongs to, checked: it exists, the caller
-- owns it, it is active and unexpired (RZ001 / RZ002 / RZ003). Share-locked
-- so that no commit, rollback or reap finishes it while a statement
-- captures into it. Called only by SECURITY DEFINER functions (so it runs
-- as the owner already): no SECURITY DEFINER; every name is qualified.
-- Its own planner settings, because its callers differ: the generated
-- functions plan with enable_seqscan off, _execute_prepare with the
-- caller's settings, and a plan cached under one setting and costed
-- against the other made one of them plan the check again on every call
-- (a sixth of a `tx_execute` lock's backend time, docs/benchmarks.md).
create or replace function resilience._tx_for_capture(tx_text text)
returns resilience.transactions
language plpgsql
volatile
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
    tx resilience.transactions;
begin
    if tx_text operator(pg_catalog.!~) '^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$'
    then
        raise exception using
            errcode = 'RZ001', message = pg_catalog.format('logical transaction %L not found', tx_text);
    end if;
    -- One query (the caller helpers inline into it): a transaction of
    -- another role or user is not found, and not locked either.
    select t.* into tx from resilience.transactions as t
    where t.id operator(pg_catalog.=) tx_text::pg_catalog.uuid
        and t.owner_role operator(pg_catalog.=) resilience._caller_role()
        and t.owner_sub is not distinct from resilience._caller_sub()
    for share;
    if not found then
        raise exception using
            errcode = 'RZ001',
            message = pg_catalog.format('logical transaction %s not found', tx_text),
            hint = 'It does not exist or belongs to another role/user.';
    end if;
    if tx.status operator(pg_catalog.<>) 'active' or tx.expires_at operator(pg_catalog.<=) pg_catalog.clock_timestamp() then
        perform resilience._require_active(tx);
    end if;
    return tx;
end;
$$;

-- The shape of a table as generated code depends on it: its columns (name,
-- type and the type's name, generated, identity, dropped), its primary
-- key, its owner (who owns the undo and may read the images), for a
-- partitioned table its partitions (each carries the triggers), and for
-- an ordinary one its inheritance children (refused). Names are
-- quoted: a column name with ':' or ',' in it must not make two shapes equal.
create or replace function resilience._table_shape(relation regclass)
returns text
language sql
stable
set search_path = ''
as $$
    select pg_catalog.concat_ws('|',
        (select pg_catalog.format('%I.%I', n.nspname, c.relname) from pg_catalog.pg_class as c
            inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace where c.oid = relation),
        (select c.relowner::text from pg_catalog.pg_class as c where c.oid = relation),
        (select pg_catalog.string_agg(pg_catalog.concat_ws(':', a.attnum, pg_catalog.quote_ident(a.attname), a.atttypid,
                pg_catalog.format_type(a.atttypid, a.atttypmod),
                a.atttypmod, a.attcollation, a.attgenerated, a.attidentity), ',' order by a.attnum)
            from pg_catalog.pg_attribute as a
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped),
        (select i.indkey::text from pg_catalog.pg_index as i where i.indrelid = relation and i.indisprimary),
        (select pg_catalog.string_agg(p.relid::oid::text, ',' order by p.relid::oid)
            from pg_catalog.pg_partition_tree(relation) as p where p.level > 0),
        -- An inheritance child added since (the table is then refused).
        (select pg_catalog.string_agg('inherited by ' || h.inhrelid::text, ',' order by h.inhrelid)
            from pg_catalog.pg_inherits as h
            inner join pg_catalog.pg_class as c on c.oid = h.inhparent and c.relkind = 'r'
            where h.inhparent = relation));
$$;

-- Does DDL regenerate managed tables' code at once: is our DDL event trigger
-- installed and enabled (ENABLE ALWAYS: it fires in replica mode too)?
-- Called only by SECURITY DEFINER functions (no SET clause, names qualified).
create or replace function resilience._ddl_regenerates()
returns boolean
language plpgsql
stable
as $$
begin
    return exists (
        select 1 from pg_catalog.pg_event_trigger as e
        where e.evtname operator(pg_catalog.=) 'resilience_managed_ddl_end'
            and e.evtenabled operator(pg_catalog.=) 'A'
    );
end;
$$;

-- RZ007 unless the table still has the shape its generated code was made
-- for. Where our DDL event trigger is installed and enabled (it fires in
-- replica mode too: ENABLE ALWAYS) DDL regenerates at once, so the shape is
-- compared only without it, or when it could not regenerate (shape null).
-- False when the table is no longer managed (a
-- detached partition keeps its triggers until DDL tracking or manage_table
-- removes them). Called only by SECURITY DEFINER functions; names qualified.
create or replace function resilience._require_shape(relation regclass)
returns boolean
language plpgsql
stable
as $$
declare
    stored text;
begin
    select m.shape into stored from resilience.managed_tables as m
    where m.relation operator(pg_catalog.=) _require_shape.relation;
    if not found then
        return false;
    end if;
    if (stored is null or not resilience._ddl_regenerates())
        and stored is distinct from resilience._table_shape(relation)
    then
        raise exception using
            errcode = 'RZ007',
            message = pg_catalog.format('managed table %s changed since manage_table', relation),
            hint = pg_catalog.format(
                'Run select resilience.manage_table(%L) as its owner (event triggers do it at once where installed).',
                relation::pg_catalog.text);
    end if;
    return true;
end;
$$;

-- The trigger functions by which a foreign key's ON DELETE (operation
-- 'DELETE') or ON UPDATE ('UPDATE') action CASCADE, SET NULL or SET DEFAULT
-- changes the referencing rows: what capture refuses where nothing captures
-- them, and what an insert's undo must not set off. SQL and immutable, so
-- that it is inlined into the callers' plans; operators qualified, as it
-- pins no search_path (that would stop the inlining).
create or replace function resilience._fk_action_functions(operation text)
returns oid[]
language sql
immutable
as $$
    select case when operation operator(pg_catalog.=) 'DELETE'
        then array['pg_catalog."RI_FKey_cascade_del"'::pg_catalog.regproc,
            'pg_catalog."RI_FKey_setnull_del"'::pg_catalog.regproc,
            'pg_catalog."RI_FKey_setdefault_del"'::pg_catalog.regproc]::pg_catalog.oid []
        when operation operator(pg_catalog.=) 'UPDATE'
        then array['pg_catalog."RI_FKey_cascade_upd"'::pg_catalog.regproc,
            'pg_catalog."RI_FKey_setnull_upd"'::pg_catalog.regproc,
            'pg_catalog."RI_FKey_setdefault_upd"'::pg_catalog.regproc]::pg_catalog.oid []
        else '{}'::pg_catalog.oid [] end
$$;

-- FK actions (ON DELETE / ON UPDATE CASCADE, SET NULL, SET DEFAULT) of a
-- statement on this table that reach a table we do not manage: nothing
-- captures those rows, so a rollback could not bring them back. Null when
-- there are none (the triggers of the table and of its partitions); else
-- [{"child", "fk", "columns": the referenced columns}]. Called only by the
-- generated capture functions (SECURITY DEFINER); names qualified.
create or replace function resilience._uncaptured_actions(relation regclass, operation text)
returns jsonb
language plpgsql
stable
as $$
begin
    -- plpgsql, not sql: the session keeps the plan (it runs for every
    -- captured UPDATE and DELETE)
    return (select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
        'child', g.tgconstrrelid::regclass::text, 'fk', c.conname,
        'columns', (select pg_catalog.jsonb_agg(a.attname) from pg_catalog.pg_attribute as a
            where a.attrelid operator(pg_catalog.=) c.confrelid
                and a.attnum operator(pg_catalog.=) any (c.confkey))))
    from pg_catalog.pg_trigger as g
    inner join pg_catalog.pg_constraint as c on c.oid operator(pg_catalog.=) g.tgconstraint
    -- (pg_partition_tree lists nothing for a table that is not partitioned)
    where (g.tgrelid operator(pg_catalog.=) relation
            or g.tgrelid operator(pg_catalog.=) any (array(
                select p.relid from pg_catalog.pg_partition_tree(relation) as p)))
        and g.tgfoid operator(pg_catalog.=) any (resilience._fk_action_functions(operation))
        and not exists (
            select 1 from resilience.managed_tables as m
            where m.relation operator(pg_catalog.=)
                coalesce(pg_catalog.pg_partition_root(g.tgconstrrelid), g.tgconstrrelid)::regclass));
end;
$$;

-- 0A000 (like TRUNCATE: the statement is refused, nothing is lost) when
-- such an action may have fired: a DELETE that deleted rows (the action
-- leaves no trace to tell whether a child row was reached), an UPDATE that
-- changed a referenced column of a row (old and new rows pair by position,
-- as in the capture). Names qualified, no SET clause (see above).
create or replace function resilience._refuse_uncaptured_actions(
    relation regclass, operation text, actions jsonb, old_rows jsonb[], new_rows jsonb[]
)
returns void
language plpgsql
stable
as $$
declare
    hit jsonb;
begin
    if operation operator(pg_catalog.=) 'DELETE' then
        if pg_catalog.cardinality(old_rows) operator(pg_catalog.>) 0 then
            hit := actions operator(pg_catalog.->) 0;
        end if;
    else
        select x.e into hit
        from pg_catalog.jsonb_array_elements(actions) as x (e)
        where exists (
            select 1
            from rows from (pg_catalog.unnest(old_rows), pg_catalog.unnest(new_rows)) as w (b, a),
                pg_catalog.jsonb_array_elements_text(x.e operator(pg_catalog.->) 'columns') as k (name)
            where (w.b operator(pg_catalog.->>) k.name) is distinct from (w.a operator(pg_catalog.->>) k.name))
        limit 1;
    end if;
    if hit is not null then
        raise exception using
            errcode = '0A000',
            message = pg_catalog.format(
                'this %s of %s reaches table %s through foreign key %s, which pgresilience does not manage: '
                'a logical transaction could not restore those rows', pg_catalog.lower(operation), relation,
                hit operator(pg_catalog.->>) 'child', hit operator(pg_catalog.->>) 'fk'),
            hint = pg_catalog.format('Manage that table too: select resilience.manage_table(%L);',
                hit operator(pg_catalog.->>) 'child');
    end if;
end;
$$;

-- TRUNCATE fires no capture: refuse it inside a logical transaction (it
-- could not be rolled back) and while rows of the table are claimed.
create or replace function resilience._guard_truncate()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if not resilience._restoring() and (
        coalesce(pg_catalog.current_setting('resilience.tx_id', true), '') <> ''
        or coalesce(nullif(pg_catalog.current_setting('request.headers', true), '')::jsonb ->> 'x-resilience-tx', '') <> ''
    ) then
        raise exception using
            errcode = '0A000',
            message = pg_catalog.format('truncate of %s cannot be part of a logical transaction', tg_relid::regclass),
            hint = 'Delete the rows instead: deletes are captured and can be rolled back.';
    end if;
    if exists (
        select 1 from resilience.claimed_tables as c
        where c.relation = coalesce(pg_catalog.pg_partition_root(tg_relid), tg_relid)::regclass
    ) and not resilience._restoring()
    then
        raise exception using
            errcode = '55P03',
            message = pg_catalog.format(
                'table %s has rows claimed by active logical transactions: truncate refused',
                tg_relid::regclass);
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

-- Drop our triggers from this one table (a partition has its own).
create or replace function resilience._drop_triggers(relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    ours name;
begin
    for ours in
        select t.tgname from pg_catalog.pg_trigger as t
        where t.tgrelid = relation
            and not t.tgisinternal
            and t.tgname in ('resilience_capture_insert', 'resilience_capture_update',
                'resilience_capture_delete', 'resilience_guard_truncate')
    loop
        execute pg_catalog.format('drop trigger %I on %s', ours, relation);
    end loop;
end;
$$;

-- Has this one table (not its partitions) exactly our four triggers, as
-- _generate creates them, calling this capture function? A regeneration then
-- leaves them: dropping and re-creating them takes an ACCESS EXCLUSIVE lock on
-- the app's table, and every install regenerates every managed table, so an
-- install would queue behind the app's open transactions, and every reader
-- of the table behind the install.
create or replace function resilience._capture_triggers_in_place(target regclass, capture_fn regprocedure)
returns boolean
language sql
stable
set search_path = ''
as $$
    select pg_catalog.count(*) = 4
    from pg_catalog.pg_trigger as t
    -- tgtype: 2 before, 4 insert, 8 delete, 16 update, 32 truncate; a
    -- statement trigger has bit 1 unset.
    inner join (values
        ('resilience_capture_insert'::name, capture_fn::oid, 4::smallint, null::name, 'new_rows'::name),
        ('resilience_capture_update', capture_fn::oid, 16, 'old_rows', 'new_rows'),
        ('resilience_capture_delete', capture_fn::oid, 8, 'old_rows', null),
        ('resilience_guard_truncate', 'resilience._guard_truncate()'::regprocedure::oid, 34, null, null)
    ) as w (tgname, tgfoid, tgtype, tgoldtable, tgnewtable)
        on t.tgname = w.tgname and t.tgfoid = w.tgfoid and t.tgtype = w.tgtype
        and t.tgoldtable is not distinct from w.tgoldtable
        and t.tgnewtable is not distinct from w.tgnewtable
    where t.tgrelid = target
        and not t.tgisinternal
        and t.tgenabled = 'O'
        and t.tgnargs = 0
        and t.tgqual is null
        and pg_catalog.cardinality(t.tgattr::smallint []) = 0
$$;

-- The type a column's values are imaged in, every domain layer peeled off
-- (pg_type.typbasetype of a domain over a domain names the inner domain),
-- with the type modifier that applies: a domain's CHECK may call a function
-- of the table owner's, which must never run inside our SECURITY DEFINER
-- capture or lock (as the package owner), and a NOT NULL domain must not
-- forbid the empty image of an insert.
create or replace function resilience._base_type(type_oid oid, type_mod integer)
returns table (base_oid oid, base_mod integer)
language plpgsql
stable
set search_path = ''
as $$
begin
    -- (plpgsql: the session keeps the plan; a sql function with a SET
    -- clause is planned again at every call)
    return query
    with recursive layer (oid, typmod, depth) as (
        select type_oid, type_mod, 0
        union all
        select t.typbasetype, t.typtypmod, l.depth + 1
        from layer as l inner join pg_catalog.pg_type as t on t.oid = l.oid
        where t.typtype = 'd'
    )
    select l.oid, l.typmod from layer as l order by l.depth desc limit 1;
end;
$$;

-- Can `=` compare values of this type (a default btree or hash operator
-- class for it, its base type, or the polymorphic class it belongs to)? A
-- match filter on any other column (json, point, xml, json[]) is refused
-- with 22023 instead of failing as generated SQL.
create or replace function resilience._has_equality(type_oid oid)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
declare
    ty record;
begin
    select t.oid, t.typtype, t.typcategory, t.typelem, t.typbasetype into ty
    from pg_catalog.pg_type as t where t.oid = type_oid;
    if ty.typtype = 'd' then
        return resilience._has_equality(ty.typbasetype);
    end if;
    if ty.typcategory = 'A' and ty.typelem <> 0 then
        return resilience._has_equality(ty.typelem);
    end if;
    -- A type without a class of its own compares with the class of a type
    -- it is binary-coercible to (varchar with text's, cidr with inet's),
    -- as `=` does.
    return exists (
        select 1 from pg_catalog.pg_opclass as o
        inner join pg_catalog.pg_am as a on a.oid = o.opcmethod
        where a.amname in ('btree', 'hash') and o.opcdefault
            and (o.opcintype = any (array[ty.oid, case ty.typtype
                when 'e' then 'pg_catalog.anyenum'::regtype
                when 'r' then 'pg_catalog.anyrange'::regtype
                when 'm' then 'pg_catalog.anymultirange'::regtype
                when 'c' then 'pg_catalog.record'::regtype
            end]) or exists (
                select 1 from pg_catalog.pg_cast as c
                where c.castsource = ty.oid and c.casttarget = o.opcintype
                    and c.castmethod = 'b' and c.castcontext = 'i'
            )));
end;
$$;

-- The `=` that `col = value` resolves to in SQL for values of this (base)
-- type, schema-qualified: the operator taking the type on both sides,
-- pg_catalog's first as the parser looks there first. Under our empty
-- search_path a bare `=` finds only pg_catalog's, so an extension type's
-- own (citext's, case-insensitive) would silently give way to text's
-- through an implicit cast. Null when there is none (varchar, arrays,
-- enums): a bare `=` then resolves in pg_catalog as it does in SQL. Only the
-- type's own operator counts (its schema, its owner): one another role
-- created elsewhere must not run in every caller's match.
create or replace function resilience._equality_operator(type_oid oid)
returns text
language sql
stable
set search_path = ''
as $$
    select pg_catalog.format('operator(%I.=)', n.nspname)
    from pg_catalog.pg_operator as o
    inner join pg_catalog.pg_namespace as n on n.oid = o.oprnamespace
    inner join pg_catalog.pg_type as t on t.oid = type_oid
    where o.oprname = '=' and o.oprleft = type_oid and o.oprright = type_oid
        and o.oprresult = 'pg_catalog.bool'::pg_catalog.regtype
        and (n.nspname = 'pg_catalog' or (o.oprnamespace = t.typnamespace and o.oprowner = t.typowner))
    order by n.nspname <> 'pg_catalog'
    limit 1;
$$;

-- What tx_execute and tx_run build statements from: the table's quoted name,
-- its columns, key, identity ALWAYS and generated columns. Stored in the
-- registry for managed tables (read per call instead of the catalog).
create or replace function resilience._describe(relation regclass)
returns jsonb
language sql
stable
set search_path = ''
as $$
    select pg_catalog.jsonb_build_object(
        'target', (select pg_catalog.format('%I.%I', n.nspname, c.relname)
            from pg_catalog.pg_class as c
            inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
            where c.oid = relation),
        'columns', (select coalesce(pg_catalog.jsonb_agg(a.attname order by a.attnum), '[]')
            from pg_catalog.pg_attribute as a
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped),
        'key', (select coalesce(pg_catalog.jsonb_agg(a.attname order by k.ord), '[]')
            from pg_catalog.pg_index as i
            cross join lateral pg_catalog.unnest(i.indkey::int2 []) with ordinality as k (attnum, ord)
            inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
            where i.indrelid = relation and i.indisprimary),
        'identity_always', (select coalesce(pg_catalog.jsonb_agg(a.attname order by a.attnum), '[]')
            from pg_catalog.pg_attribute as a
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped and a.attidentity = 'a'),
        'generated', (select coalesce(pg_catalog.jsonb_agg(a.attname order by a.attnum), '[]')
            from pg_catalog.pg_attribute as a
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped and a.attgenerated <> ''),
        -- Columns a match filter may name (their type has an equality).
        'comparable', (select coalesce(pg_catalog.jsonb_agg(a.attname order by a.attnum), '[]')
            from pg_catalog.pg_attribute as a
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped
                and resilience._has_equality(a.atttypid)),
        -- Column types as the table declares them (domains included), for
        -- reading client JSON into exactly the columns it names.
        'types', (select coalesce(pg_catalog.jsonb_object_agg(a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)),
                '{}')
            from pg_catalog.pg_attribute as a
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped),
        -- The types a match filter reads its values in: the base type
        -- without a modifier, as `col = value` compares in SQL (a value is
        -- not rounded to numeric(6,2) or timestamp(0) first, nor checked by
        -- a domain, so it matches only rows that equal it).
        'match_types', (select coalesce(pg_catalog.jsonb_object_agg(a.attname,
                    pg_catalog.format_type(b.base_oid, -1)), '{}')
            from pg_catalog.pg_attribute as a
            cross join lateral resilience._base_type(a.atttypid, a.atttypmod) as b
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped),
        -- The operator a match filter compares them with, where `=` alone
        -- would not find it (_equality_operator).
        'match_ops', (select coalesce(pg_catalog.jsonb_object_agg(a.attname, e.op), '{}')
            from pg_catalog.pg_attribute as a
            cross join lateral resilience._base_type(a.atttypid, a.atttypmod) as b
            cross join lateral resilience._equality_operator(b.base_oid) as e (op)
            where a.attrelid = relation and a.attnum > 0 and not a.attisdropped and e.op is not null),
        'lock', (select m.lock_function::oid::regproc::text from resilience.managed_tables as m
            where m.relation = _describe.relation)
    );
$$;

-- Refuse what cannot be managed: not a table, a partition or inheritance
-- child (manage the parent), a package table, no primary key.
create or replace function resilience._require_manageable(relation regclass)
returns void
language plpgsql
stable
set search_path = ''
as $$
declare
    target record;
begin
    select n.nspname, c.relkind, c.relispartition into target
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
    where c.oid = relation;
    if target.relkind not in ('r', 'p') or target.nspname in ('resilience', 'pg_catalog', 'information_schema')
        or target.nspname operator(pg_catalog.~) '^pg_temp'
    then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('%s cannot be managed: only ordinary application tables can', relation);
    end if;
    if exists (select 1 from pg_catalog.pg_inherits as h where h.inhrelid = relation) then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('%s is a partition or an inheritance child', relation),
            hint = pg_catalog.format('Manage its parent %s: capture on the parent covers every partition.',
                (select h.inhparent::regclass from pg_catalog.pg_inherits as h where h.inhrelid = relation limit 1));
    end if;
    -- Inheritance children take their own statements, which the parent's
    -- triggers never see (partitions are covered: they get the triggers).
    if target.relkind = 'r' and exists (select 1 from pg_catalog.pg_inherits as h where h.inhparent = relation) then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('%s has inheritance children, whose writes could bypass its claims', relation),
            hint = 'Use declarative partitioning (capture on a partitioned table covers every partition).';
    end if;
    if not exists (select 1 from pg_catalog.pg_index as i where i.indrelid = relation and i.indisprimary) then
        raise exception using
            errcode = '22023',
            message = pg_catalog.format('table %s has no primary key', relation),
            hint = 'Logical transactions identify rows by primary key: add one, then call manage_table again.';
    end if;
end;
$$;

-- Grant a generated helper that tx_execute calls to whoever may call
-- tx_execute (resilience_user and the roles privileges are mirrored to).
create or replace function resilience._grant_like_tx_execute(helper regprocedure)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    grantee text;
begin
    execute pg_catalog.format('revoke all on function %s from public', helper);
    for grantee in
        select r.rolname from pg_catalog.pg_proc as p
        cross join lateral pg_catalog.aclexplode(p.proacl) as acl
        inner join pg_catalog.pg_roles as r on r.oid = acl.grantee
        where p.oid = 'resilience.tx_execute(uuid, text, text, jsonb, jsonb)'::regprocedure
            and acl.privilege_type = 'EXECUTE'
    loop
        execute pg_catalog.format('grant execute on function %s to %I', helper, grantee);
    end loop;
end;
$$;


-- Generated SQL fragments: `p.a, p.b` and `l.x op r.y and ...` over name lists.
create or replace function resilience._sql_list(prefix text, names text[])
returns text
language sql
immutable
set search_path = ''
as $$
    select pg_catalog.string_agg(prefix operator(pg_catalog.||) pg_catalog.quote_ident(u.name), ', ' order by u.ord)
    from pg_catalog.unnest(names) with ordinality as u (name, ord);
$$;

create or replace function resilience._sql_keys_equal(
    left_prefix text, left_names text[], operators text[], right_prefix text, right_names text[]
)
returns text
language sql
immutable
set search_path = ''
as $$
    select pg_catalog.string_agg(pg_catalog.format('%s%I %s %s%I', left_prefix, u.l, u.op, right_prefix, u.r),
        ' and ' order by u.ord)
    from rows from (pg_catalog.unnest(left_names), pg_catalog.unnest(operators), pg_catalog.unnest(right_names))
        with ordinality as u (l, op, r, ord);
$$;

-- A table's primary key as generated code names it: its columns, their
-- row-image attributes (c<attnum>) and image key columns (k<position>),
-- each with the equality operator of the key index's operator class (so
-- that a claim means what the key means), the image key columns' definitions
-- and operator classes, and the key as jsonb_build_object arguments.
-- (plpgsql, one generic plan: a session plans this query once; a rollback's
-- foreign-key checks run it once per table.)
create or replace function resilience._primary_key(
    relation regclass,
    out names text[], out attrs text[], out image_cols text[], out operators text[],
    out definitions text, out opclasses text, out key_json text
)
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
    select pg_catalog.array_agg(a.attname::text order by k.ord),
        pg_catalog.array_agg('c' || a.attnum order by k.ord),
        pg_catalog.array_agg('k' || k.ord order by k.ord),
        pg_catalog.array_agg(pg_catalog.format('operator(%I.%s)', opn.nspname, op.oprname) order by k.ord),
        pg_catalog.string_agg(pg_catalog.format('k%s %s%s', k.ord,
                pg_catalog.format_type(bt.base_oid, bt.base_mod),
                coalesce((select pg_catalog.format(' collate %I.%I', cn.nspname, co.collname)
                    from pg_catalog.pg_collation as co
                    inner join pg_catalog.pg_namespace as cn on cn.oid = co.collnamespace
                    where co.oid = i.indcollation[k.ord - 1]), '')), ', ' order by k.ord),
        pg_catalog.string_agg(pg_catalog.format('k%s %I.%I', k.ord, ocn.nspname, oc.opcname), ', ' order by k.ord),
        pg_catalog.string_agg(pg_catalog.format('%L, i.k%s', a.attname, k.ord), ', ' order by k.ord)
    into names, attrs, image_cols, operators, definitions, opclasses, key_json
    from pg_catalog.pg_index as i
    cross join lateral pg_catalog.unnest(i.indkey::int2 []) with ordinality as k (attnum, ord)
    inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
    cross join lateral resilience._base_type(a.atttypid, a.atttypmod) as bt
    inner join pg_catalog.pg_opclass as oc on oc.oid = i.indclass[k.ord - 1]
    inner join pg_catalog.pg_namespace as ocn on ocn.oid = oc.opcnamespace
    inner join pg_catalog.pg_amop as ao on ao.amopfamily = oc.opcfamily and ao.amopstrategy = 3
        and ao.amoplefttype = oc.opcintype and ao.amoprighttype = oc.opcintype
    inner join pg_catalog.pg_operator as op on op.oid = ao.amopopr
    inner join pg_catalog.pg_namespace as opn on opn.oid = op.oprnamespace
    where i.indrelid = relation and i.indisprimary;
end;
$$;

-- The columns a client may name in an insert (not generated, not GENERATED
-- ALWAYS AS IDENTITY) and those of them without a default, sorted as
-- tx_execute sorts a row's keys: the two rows a table's generated insert
-- function takes (_generate). A new default regenerates it (the event
-- trigger compares `required` with the registry's).
create or replace function resilience._insert_columns(relation regclass, out insertable text[], out required text[])
language sql
stable
set search_path = ''
as $$
    select coalesce(pg_catalog.array_agg(a.attname::text order by a.attname::text), '{}'),
        coalesce(pg_catalog.array_agg(a.attname::text order by a.attname::text)
            filter (where not a.atthasdef and a.attidentity = ''), '{}')
    from pg_catalog.pg_attribute as a
    where a.attrelid = relation and a.attnum > 0 and not a.attisdropped
        and a.attgenerated = '' and a.attidentity <> 'a';
$$;

-- (Re)generate a managed table's row type, image table, functions and
-- triggers from the catalog. Images already captured are kept: columns added
-- since become new (null) attributes; a changed column type or primary key
-- can be regenerated only while the table has no images (RZ007 otherwise).
create or replace function resilience._generate(relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $gen$
declare
    reg resilience.managed_tables;
    base text;
    row_type text;
    row_relid oid;
    image text;
    capture_fn text;
    undo_fn text;
    lock_fn text;
    lock_by_key_fn text;
    insert_row_fn text;
    insertable text [];
    required text [];
    row_into constant text := 'pg_catalog.jsonb_build_array(pg_catalog.to_jsonb(t.*)) into inserted_rows';
    described jsonb;
    key_names text [];
    target text;
    has_images boolean := false;
    col record;
    -- The primary key: column names, their row-type attributes (c<attnum>),
    -- image key columns (k<n>) and equality operators.
    kn text [];
    kc text [];
    kk text [];
    kop text [];
    -- The old key of an updated row, as the update's image insert returns it.
    kok text [];
    partitioned boolean;
    k_defs text;
    k_opclasses text;
    key_json text;
    row_of_o text;
    row_of_n text;
    row_of_t text;
    restore_cols text;
    restore_vals text;
    update_cols text;
    update_vals text;
    overriding text;
    claim_of text;
    guard text;
    record_statement text;
    part record;
    reshaped bigint;
    key_moved boolean := false;
    table_owner name;
    lent_create boolean;
begin
    perform resilience._require_manageable(relation);
    -- Our own DDL below must not make the event triggers regenerate again.
    perform pg_catalog.set_config('resilience.generating', 'on', true);
    select m.* into reg from resilience.managed_tables as m where m.relation = _generate.relation;
    reshaped := reg.reshaped_at_seq;
    select pg_catalog.format('%I.%I', n.nspname, c.relname) into target
    from pg_catalog.pg_class as c inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
    where c.oid = relation;

    -- Names are kept across regenerations and dump/restore; a new one comes
    -- from the table's oid, made unique.
    if reg.image_table is not null then
        base := pg_catalog.substr((select c.relname from pg_catalog.pg_class as c where c.oid = reg.image_table), 6);
        execute pg_catalog.format('select exists (select 1 from %s)', reg.image_table) into has_images;
    else
        base := relation::oid::text;
        while pg_catalog.to_regclass(pg_catalog.format('resilience.%I', '_img_' || base)) is not null
            or pg_catalog.to_regtype(pg_catalog.format('resilience.%I', '_row_' || base)) is not null
        loop
            base := base || '_';
        end loop;
    end if;
    row_type := pg_catalog.format('resilience.%I', '_row_' || base);
    image := pg_catalog.format('resilience.%I', '_img_' || base);
    capture_fn := pg_catalog.format('resilience.%I', '_capture_' || base);
    undo_fn := pg_catalog.format('resilience.%I', '_undo_' || base);
    lock_fn := pg_catalog.format('resilience.%I', '_lock_' || base);
    lock_by_key_fn := pg_catalog.format('resilience.%I', '_lock_by_key_' || base);
    insert_row_fn := pg_catalog.format('resilience.%I', '_insert_row_' || base);

    -- The key (with the equality of its index's operator class, so that
    -- the claim index means what the key means).
    select k.names, k.attrs, k.image_cols, k.operators, k.definitions, k.opclasses, k.key_json
    into kn, kc, kk, kop, k_defs, k_opclasses, key_json
    from resilience._primary_key(relation) as k;
    kok := array(select 'o' || k from pg_catalog.unnest(kk) as k);
    partitioned := (select c.relkind = 'p' from pg_catalog.pg_class as c where c.oid = relation);

    row_relid := (select t.typrelid from pg_catalog.pg_type as t where t.oid = pg_catalog.to_regtype(row_type));
    -- A primary key replaced by one on other columns of the same types (the
    -- key definitions below compare types only): images held are keyed, and
    -- claim, by the old key. Kept only while every image's key is its row's
    -- key under the new one (a key change's claim of the old key: the old
    -- image of its statement), else the claims would guard other rows.
    if has_images then
        if exists (
            select 1 from pg_catalog.unnest(kc) as k (attname)
            where not exists (
                select 1 from pg_catalog.pg_attribute as r
                where r.attrelid = row_relid and r.attname = k.attname and not r.attisdropped)
        ) then
            key_moved := true;
        else
            execute pg_catalog.format(
                'select exists (select 1 from %1$s as i where case i.op '
                'when ''k'' then not exists (select 1 from %1$s as u where u.tx_id = i.tx_id and u.seq = i.seq '
                'and u.op = ''u'' and row(%2$s) is not distinct from row(%3$s)) '
                'when ''d'' then row(%2$s) is distinct from row(%4$s) '
                'when ''l'' then row(%2$s) is distinct from row(%4$s) '
                'else row(%2$s) is distinct from row(%5$s) end)',
                image, resilience._sql_list('i.', kk), resilience._sql_list('(u.b).', kc),
                resilience._sql_list('(i.b).', kc), resilience._sql_list('(i.a).', kc))
            into key_moved;
        end if;
    end if;

    -- Start over (when no images are to be kept) if a column's type or the
    -- key changed; otherwise only add what is missing.
    if key_moved or exists (
        select 1 from pg_catalog.pg_attribute as a
        cross join lateral resilience._base_type(a.atttypid, a.atttypmod) as bt
        inner join pg_catalog.pg_attribute as r on r.attrelid = row_relid and r.attname = 'c' || a.attnum
        where a.attrelid = relation and a.attnum > 0 and not a.attisdropped
            and (r.atttypid, r.atttypmod) is distinct from (bt.base_oid, bt.base_mod)
    ) or (pg_catalog.to_regclass(image) is not null and k_defs is distinct from (
        select pg_catalog.string_agg(pg_catalog.format('%s %s%s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                coalesce((select pg_catalog.format(' collate %I.%I', cn.nspname, co.collname)
                    from pg_catalog.pg_collation as co
                    inner join pg_catalog.pg_namespace as cn on cn.oid = co.collnamespace
                    where co.oid = a.attcollation), '')), ', ' order by a.attnum)
        from pg_catalog.pg_attribute as a
        where a.attrelid = pg_catalog.to_regclass(image) and a.attname ~ '^k[0-9]+$' and not a.attisdropped
    )) then
        if has_images then
            raise exception using
                errcode = 'RZ007',
                message = pg_catalog.format(
                    'cannot regenerate the capture of %s: a column type or its primary key changed '
                    'while logical transactions hold images of it', relation),
                hint = 'Finish (commit or roll back) those transactions, then run manage_table again.';
        end if;
        execute pg_catalog.format('drop table if exists %s', image);
        execute pg_catalog.format('drop type if exists %s', row_type);
    end if;

    -- Columns dropped since the last generation (fewer live columns have an
    -- attribute than the registry's descriptor listed): the values images
    -- hold of them cannot come back, so the rows imaged before conflict.
    if has_images and (
        select pg_catalog.count(*) from pg_catalog.pg_attribute as r
        inner join pg_catalog.pg_attribute as a
            on a.attrelid = relation and 'c' || a.attnum = r.attname and a.attnum > 0 and not a.attisdropped
        where r.attrelid = row_relid and r.attnum > 0 and not r.attisdropped
    ) < pg_catalog.jsonb_array_length(reg.descriptor -> 'columns') then
        reshaped := (select s.last_value from resilience.restore_point_seq as s);
    end if;

    -- The row type: one attribute per column (by attnum), in its base type.
    for col in
        select a.attnum, pg_catalog.format_type(bt.base_oid, bt.base_mod) as typ,
            coalesce((select pg_catalog.format(' collate %I.%I', cn.nspname, co.collname)
                from pg_catalog.pg_collation as co
                inner join pg_catalog.pg_namespace as cn on cn.oid = co.collnamespace
                where co.oid = a.attcollation), '') as coll
        from pg_catalog.pg_attribute as a
        cross join lateral resilience._base_type(a.atttypid, a.atttypmod) as bt
        where a.attrelid = relation and a.attnum > 0 and not a.attisdropped
        order by a.attnum
    loop
        if pg_catalog.to_regtype(row_type) is null then
            execute pg_catalog.format('create type %s as (%I %s%s)', row_type, 'c' || col.attnum, col.typ, col.coll);
        elsif not exists (
            select 1 from pg_catalog.pg_attribute as r
            where r.attrelid = (select t.typrelid from pg_catalog.pg_type as t where t.oid = pg_catalog.to_regtype(row_type))
                and r.attname = 'c' || col.attnum and not r.attisdropped
        ) then
            execute pg_catalog.format('alter type %s add attribute %I %s%s', row_type, 'c' || col.attnum,
                col.typ, col.coll);
            -- Images taken before lack this column: their rows conflict.
            if has_images then
                reshaped := (select s.last_value from resilience.restore_point_seq as s);
            end if;
        end if;
    end loop;
    row_relid := (select t.typrelid from pg_catalog.pg_type as t where t.oid = pg_catalog.to_regtype(row_type));

    if pg_catalog.to_regclass(image) is null then
        execute pg_catalog.format(
            'create table %s (tx_id uuid not null, seq bigint not null, op "char" not null, claim boolean, '
            '%s, b %s, a %s)', image, k_defs, row_type, row_type);
        execute pg_catalog.format('create unique index %I on %s (%s) where claim',
            '_img_' || base || '_claims', image, k_opclasses);
        execute pg_catalog.format('create index %I on %s (tx_id, seq)', '_img_' || base || '_tx', image);
        execute pg_catalog.format('alter table %s enable row level security', image);
        execute pg_catalog.format('revoke all on %s from public', image);
    end if;

    -- A row as the row type: live columns by name, attributes of columns
    -- dropped since as null.
    select pg_catalog.string_agg(case when a.attname is null then 'null' else pg_catalog.format('o.%I', a.attname) end,
            ', ' order by r.attnum),
        pg_catalog.string_agg(case when a.attname is null then 'null' else pg_catalog.format('n.%I', a.attname) end,
            ', ' order by r.attnum),
        pg_catalog.string_agg(case when a.attname is null then 'null' else pg_catalog.format('t.%I', a.attname) end,
            ', ' order by r.attnum)
    into row_of_o, row_of_n, row_of_t
    from pg_catalog.pg_attribute as r
    left join pg_catalog.pg_attribute as a
        on a.attrelid = relation and 'c' || a.attnum = r.attname and a.attnum > 0 and not a.attisdropped
    where r.attrelid = row_relid and r.attnum > 0 and not r.attisdropped;
    row_of_o := pg_catalog.format('row(%s)::%s', row_of_o, row_type);
    row_of_n := pg_catalog.format('row(%s)::%s', row_of_n, row_type);
    row_of_t := pg_catalog.format('row(%s)::%s', row_of_t, row_type);

    -- What a restore writes: no generated column; an identity ALWAYS column
    -- only on re-insert (overriding system value), never in an update.
    select pg_catalog.string_agg(pg_catalog.format('%I', a.attname), ', ' order by a.attnum),
        pg_catalog.string_agg(pg_catalog.format('(i.b).%I', 'c' || a.attnum), ', ' order by a.attnum),
        pg_catalog.string_agg(pg_catalog.format('%I', a.attname), ', ' order by a.attnum)
            filter (where a.attidentity <> 'a'),
        pg_catalog.string_agg(pg_catalog.format('(i.b).%I', 'c' || a.attnum), ', ' order by a.attnum)
            filter (where a.attidentity <> 'a'),
        case when pg_catalog.bool_or(a.attidentity = 'a') then 'overriding system value' else '' end
    into restore_cols, restore_vals, update_cols, update_vals, overriding
    from pg_catalog.pg_attribute as a
    where a.attrelid = relation and a.attnum > 0 and not a.attisdropped and a.attgenerated = '';

    -- The claim an image row takes: the first image of a key in a
    -- transaction claims it (always so for the transaction's first statement
    -- on the table); %s is the alias the key is read from. The lookup goes
    -- through the claim index (one entry per key): the transaction test is
    -- written so that no index can use it, or an index on tx_id would walk
    -- every image of the transaction, on every statement.
    claim_of := pg_catalog.format(
        'case when v_first then true when exists (select 1 from %s as e where e.claim and %%s '
        'and (e.tx_id = v_tx_id) is true) then null else true end', image);

    -- The statement's journal row and its audit row, in one statement (the
    -- capture and lock functions end with it; both run for every captured
    -- statement). The actor is the transaction's owner, whom
    -- _tx_for_capture has just checked to be the caller (as _audit would
    -- record it). Reads v_tx, v_seq, v_root, v_rows, v_op, v_via.
    record_statement := $record$
    with s as (
        insert into resilience.tx_statements (tx_id, seq, relation, operation, row_count)
        values (v_tx.id, v_seq, v_root, v_op, v_rows)
    )
    insert into resilience.audit_log (event, tx_id, actor_role, actor_sub, detail)
    values ('execute', v_tx.id, v_tx.owner_role, v_tx.owner_sub, pg_catalog.jsonb_build_object(
        'table', v_root::pg_catalog.text, 'operation', v_op, 'rows', v_rows, 'via', v_via,
        'duration_ms', pg_catalog.round(
            extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp()) * 1000, 3)));$record$;

    -- Who holds a claim on a key this statement wrote (old and new keys)?
    -- Driven by the statement's rows, one index probe each (the other way
    -- round, the planner scans every claim of the table). Twice: counting
    -- our own claims (a plain write) or not.
    guard := $guard$
        if tg_op = 'INSERT' then
            select x.tx_id into v_holder from new_rows as n
            cross join lateral (select i.tx_id from %1$s as i where i.claim%4$s and %2$s limit 1) as x
            limit 1;
        elsif tg_op = 'DELETE' then
            select x.tx_id into v_holder from old_rows as o
            cross join lateral (select i.tx_id from %1$s as i where i.claim%4$s and %3$s limit 1) as x
            limit 1;
        else
            select h.tx_id into v_holder from (
                select x.tx_id from old_rows as o
                cross join lateral (select i.tx_id from %1$s as i where i.claim%4$s and %3$s limit 1) as x
                union all
                select x.tx_id from new_rows as n
                cross join lateral (select i.tx_id from %1$s as i where i.claim%4$s and %2$s limit 1) as x
            ) as h
            limit 1;
        end if;$guard$;

    execute pg_catalog.format($body$
create or replace function %1$s()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
-- Claims are looked up by key through the claim index. The session plans
-- these lookups once; an image table then often looks empty to the planner
-- (vacuumed between transactions), and a sequential scan planned then would
-- read every image of every transaction on each statement for as long as
-- the session lives.
set enable_seqscan = off
as $capture$
#variable_conflict use_variable
declare
    v_root pg_catalog.regclass;
    v_tx_text pg_catalog.text;
    v_headers pg_catalog.text;
    v_restoring pg_catalog.text;
    v_tx resilience.transactions;
    v_tx_id pg_catalog.uuid;
    v_via pg_catalog.text;
    v_seq pg_catalog.int8;
    v_rows pg_catalog.int8;
    v_first pg_catalog.bool;
    v_holder pg_catalog.uuid;
    v_may_conflict pg_catalog.bool;
    v_current pg_catalog.bool;
    v_old_rows pg_catalog.int8;
    v_op pg_catalog.text;
    v_actions pg_catalog.jsonb;
begin
    -- What this write is (inline, not a helper: it runs for every statement
    -- on the table): captured into a logical transaction (tx_execute's
    -- setting, or PostgREST's x-resilience-tx header), our own restore
    -- (nothing to do), or a plain write, which only a table with claims
    -- needs to check. The common plain write (no claims on the table)
    -- leaves after one probe, before any variable is set: each expression
    -- plpgsql evaluates costs on every call (it is set up again in each
    -- transaction), and this runs for every statement on the table. A
    -- plain write to a table with claims goes on to the guard with
    -- v_tx_text null, and no second probe.
    if coalesce(pg_catalog.current_setting('resilience.tx_id', true), '') = ''
        and pg_catalog.strpos(coalesce(pg_catalog.current_setting('request.headers', true), ''), 'x-resilience-tx') = 0
    then
        if not exists (
            select 1 from resilience.claimed_tables as c
            where c.relation = coalesce(pg_catalog.pg_partition_root(tg_relid), tg_relid))
        then
            return null;
        end if;
    else
        v_tx_text := pg_catalog.current_setting('resilience.tx_id', true);
        v_via := 'tx_execute';
        if v_tx_text is null or v_tx_text = '' then
            -- (the header names x-resilience-tx: the test above)
            v_headers := pg_catalog.current_setting('request.headers', true);
            v_tx_text := v_headers::pg_catalog.jsonb ->> 'x-resilience-tx';
            v_via := 'header';
            if (v_tx_text is null or v_tx_text = '') and not exists (
                select 1 from resilience.claimed_tables as c
                where c.relation = coalesce(pg_catalog.pg_partition_root(tg_relid), tg_relid))
            then
                return null;
            end if;
        end if;
    end if;
    v_root := coalesce(pg_catalog.pg_partition_root(tg_relid), tg_relid)::pg_catalog.regclass;
    v_restoring := pg_catalog.current_setting('resilience.restoring', true);
    -- Two statements: the token probe can only scan (text against uuid),
    -- so it is planned for each run; only a restore's own writes run it.
    if v_restoring <> '' then
        if exists (select 1 from resilience.restore_tokens as r where r.token::pg_catalog.text = v_restoring) then
            return null;
        end if;
    end if;
    if v_tx_text is null or v_tx_text = '' then
        -- A plain write: only claimed rows are off limits. It only needs
        -- the key columns the guard compares; a stale shape is the
        -- capture's concern, not this writer's. (No managed_tables probe:
        -- a table with claims is managed, unmanage_table refuses it.)
%18$s
        if v_holder is not null then
            perform resilience._claim_conflict(v_root, v_holder);
        end if;
        return null;
    end if;
    v_op := pg_catalog.lower(tg_op);
    v_rows := 0;
    v_tx := resilience._tx_for_capture(v_tx_text);
    v_tx_id := v_tx.id;
    -- One probe: is the table still managed, and does DDL regenerate this
    -- code at once (our event trigger on, shape known)? Only otherwise is
    -- the shape compared (RZ007 when it changed).
    select m.shape is not null and resilience._ddl_regenerates() into v_current
    from resilience.managed_tables as m where m.relation = v_root;
    if not found or (not v_current and not resilience._require_shape(v_root)) then
        return null;
    end if;
    -- Rows an FK action changed in a table we do not manage: refused. Inline
    -- first probe (one index scan of this table's triggers): is any table
    -- referencing this one with an action at all?
    if tg_op <> 'INSERT' and exists (
        select 1 from pg_catalog.pg_trigger as g
        where %23$s and g.tgfoid = any (resilience._fk_action_functions(tg_op))
    ) then
        v_actions := resilience._uncaptured_actions(tg_relid::pg_catalog.regclass, tg_op);
        -- (two statements: a DELETE has no new_rows to even plan)
        if v_actions is not null and tg_op = 'DELETE' then
            perform resilience._refuse_uncaptured_actions(tg_relid::pg_catalog.regclass, tg_op, v_actions,
                array(select pg_catalog.to_jsonb(o.*) from old_rows as o), null);
        elsif v_actions is not null then
            perform resilience._refuse_uncaptured_actions(tg_relid::pg_catalog.regclass, tg_op, v_actions,
                array(select pg_catalog.to_jsonb(o.*) from old_rows as o),
                array(select pg_catalog.to_jsonb(n.*) from new_rows as n));
        end if;
    end if;

    v_seq := pg_catalog.nextval('resilience.restore_point_seq');
    -- v_first and v_may_conflict (_sql_claim_marker).
$body$ || resilience._sql_claim_marker() || $body$
    -- A key claimed already: 55P03 (_sql_claiming). The primary key keeps
    -- the keys of an insert's or a delete's rows apart; an update's rows
    -- can hold one twice (a cascade into its own table puts a row in the
    -- transition tables twice), so only an update of one row is sure not to.
    if tg_op = 'UPDATE' then
        select pg_catalog.count(*) into v_rows from (select from new_rows as n limit 2) as r;
    end if;
$body$ || resilience._sql_claiming('(tg_op <> ''UPDATE'' or v_rows <= 1)', $writes$
        if tg_op = 'INSERT' then
            insert into %2$s (tx_id, seq, op, claim, %5$s, a)
            select v_tx_id, v_seq, 'i', %6$s, %7$s, %8$s
            from new_rows as n;
            get diagnostics v_rows = row_count;
        elsif tg_op = 'DELETE' then
            insert into %2$s (tx_id, seq, op, claim, %5$s, b)
            select v_tx_id, v_seq, 'd', %9$s, %10$s, %11$s
            from old_rows as o;
            get diagnostics v_rows = row_count;
        else
            -- Old and new rows pair by position: PostgreSQL appends a row's
            -- two versions to the transition tables in the same call.
%22$s
            with u as (
                insert into %2$s (tx_id, seq, op, claim, %5$s, b, a)
                select v_tx_id, v_seq, 'u', %12$s, %13$s, w.b, w.a
                from (
                    -- Two set-returning functions in one select list run in
                    -- lockstep (in FROM, a composite would be expanded).
                    select pg_catalog.unnest(array(select %11$s from old_rows as o)) as b,
                        pg_catalog.unnest(array(select %8$s from new_rows as n)) as a
                ) as w
                returning %5$s, %21$s
            ),
            -- A key change claims the old key too (a claim-only row).
            k as (
                insert into %2$s (tx_id, seq, op, claim, %5$s)
                select v_tx_id, v_seq, 'k', %14$s, %15$s
                from u
                where not (%16$s)
                    and not exists (select 1 from u as e where %17$s)
            )
            select pg_catalog.count(*) into v_rows from u;
        end if;$writes$, '%19$s') || $body$
    -- v_rows: an insert or delete wrote one image per row; an update
    -- counted its rows above (the claim-only rows of key changes are extra).
%20$s
    return null;
end;
$capture$
$body$,
        capture_fn,                                                          -- 1
        image,                                                               -- 2
        resilience._sql_keys_equal('i.', kk, kop, 'n.', kn),                 -- 3
        resilience._sql_keys_equal('i.', kk, kop, 'o.', kn),                 -- 4
        resilience._sql_list('', kk),                                        -- 5
        pg_catalog.format(claim_of, resilience._sql_keys_equal('e.', kk, kop, 'n.', kn)),       -- 6
        resilience._sql_list('n.', kn),                                      -- 7
        row_of_n,                                                            -- 8
        pg_catalog.format(claim_of, resilience._sql_keys_equal('e.', kk, kop, 'o.', kn)),       -- 9
        resilience._sql_list('o.', kn),                                      -- 10
        row_of_o,                                                            -- 11
        pg_catalog.format(claim_of, resilience._sql_keys_equal('e.', kk, kop, '(w.a).', kc)),   -- 12
        resilience._sql_list('(w.a).', kc),                                  -- 13
        pg_catalog.format(claim_of, resilience._sql_keys_equal('e.', kk, kop, 'u.', kok)),      -- 14
        resilience._sql_list('u.', kok),                                     -- 15
        resilience._sql_keys_equal('u.', kok, kop, 'u.', kk),                -- 16
        resilience._sql_keys_equal('e.', kk, kop, 'u.', kok),                -- 17
        pg_catalog.format(guard, image, resilience._sql_keys_equal('i.', kk, kop, 'n.', kn),
            resilience._sql_keys_equal('i.', kk, kop, 'o.', kn), ''),         -- 18
        pg_catalog.format(guard, image, resilience._sql_keys_equal('i.', kk, kop, 'n.', kn),
            resilience._sql_keys_equal('i.', kk, kop, 'o.', kn), ' and i.tx_id <> v_tx_id'),   -- 19
        record_statement,                                                    -- 20
        -- The old key only, not the whole before image.
        (select pg_catalog.string_agg(pg_catalog.format('(b).%I as %I', x.c, x.o), ', ' order by x.ord)
            from rows from (pg_catalog.unnest(kc), pg_catalog.unnest(kok)) with ordinality as x (c, o, ord)),  -- 21
        -- Unless a BEFORE INSERT trigger of the partition a row moved to
        -- dropped it: then old and new rows do not pair, and the statement
        -- is refused. Only a partitioned table can move rows.
        case when partitioned then $check$
            select pg_catalog.count(*), (select pg_catalog.count(*) from old_rows) into v_rows, v_old_rows
            from new_rows;
            if v_rows <> v_old_rows then
                raise exception using
                    errcode = '0A000',
                    message = pg_catalog.format(
                        'an UPDATE of %s that a trigger made drop moved rows (%s old rows, %s new) '
                        'cannot be part of a logical transaction', v_root, v_old_rows, v_rows),
                    hint = 'A BEFORE INSERT trigger of the destination partition returned NULL for a moved row.';
            end if;$check$ else '' end,                                      -- 22
        -- Whose triggers: a statement on a partitioned table fires the
        -- capture of the table it names, while PostgreSQL 14 puts the
        -- action triggers of a referenced partitioned table on its
        -- partitions only.
        case when partitioned
            then 'g.tgrelid in (select p.relid from pg_catalog.pg_partition_tree(tg_relid) as p)'
            else 'g.tgrelid = tg_relid' end);                               -- 23
    execute pg_catalog.format('revoke all on function %s() from public', capture_fn);

    -- Undo one captured statement, set-based. A row is restored only while
    -- it still equals its after-image, compared with *= (binary equality of
    -- every column: -0 is not 0, 1.0 is not 1.00, json text as written,
    -- independent of session settings). Optimistic: when every row was
    -- restored there is nothing to look for; otherwise the rows not
    -- accounted for (not in their before-state, e.g. by an FK cascade undone
    -- earlier) are the conflicts, and the caller (_undo) raises RZ005,
    -- which discards this step too. With force, the conflicts are looked up
    -- first (they are reported) and overwritten. Returns the restored count
    -- and the conflicting keys.
    execute pg_catalog.format($body$
create or replace function %1$s(p_tx pg_catalog.uuid, p_seq pg_catalog.int8, p_op pg_catalog.text,
    p_force pg_catalog.bool)
returns pg_catalog.jsonb
language plpgsql
volatile
security definer
set search_path = ''
-- A step's images are read through the (tx_id, seq) index and its rows
-- through the table's key: a plan a session made while the image table
-- looked empty scanned every image for every step (a rollback of 3,000
-- statements after a few small ones: 1.4-2.1 s instead of 0.3-0.6 s).
set enable_seqscan = off
as $undo$
#variable_conflict use_variable
declare
    v_done pg_catalog.int8 := 0;
    v_expected pg_catalog.int8;
    v_conflicts pg_catalog.jsonb;
begin
    -- A restore must see every row of the table. Row-level security that
    -- applies to the table owner (FORCE ROW LEVEL SECURITY, no BYPASSRLS)
    -- would hide rows from it: a hidden inserted row would look undone, a
    -- hidden updated one like a conflict that force cannot overwrite.
    if pg_catalog.row_security_active(%15$L::pg_catalog.regclass) then
        raise exception using
            errcode = '42501',
            message = pg_catalog.format('cannot restore rows of %%s: row-level security applies to its owner %%I',
                %15$L, current_user),
            hint = 'A restore must see every row: ALTER TABLE ... NO FORCE ROW LEVEL SECURITY, or BYPASSRLS for the owner.';
    end if;
    select pg_catalog.count(*) into v_expected from %3$s as i where i.tx_id = p_tx and i.seq = p_seq
        and i.op = pg_catalog.left(p_op, 1)::"char" and p_op <> 'keys';
    if p_op = 'insert' then
        if p_force then
            select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(%6$s)) into v_conflicts
            from %3$s as i
            where i.tx_id = p_tx and i.seq = p_seq and i.op = 'i'
                and exists (select 1 from %2$s as t where %4$s and not (%5$s operator(pg_catalog.*=) i.a));
        end if;
        delete from %2$s as t using %3$s as i
        where i.tx_id = p_tx and i.seq = p_seq and i.op = 'i' and %4$s
            and (p_force or %5$s operator(pg_catalog.*=) i.a);
        get diagnostics v_done = row_count;
        if not p_force and v_done < v_expected then
            -- Rows still there differ from their after-image (absent ones
            -- are already undone).
            select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(%6$s)) into v_conflicts
            from %3$s as i
            where i.tx_id = p_tx and i.seq = p_seq and i.op = 'i'
                and exists (select 1 from %2$s as t where %4$s);
        end if;
    elsif p_op = 'delete' then
        if p_force then
            select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(%6$s)) into v_conflicts
            from %3$s as i
            where i.tx_id = p_tx and i.seq = p_seq and i.op = 'd'
                and exists (select 1 from %2$s as t where %4$s and not (%5$s operator(pg_catalog.*=) i.b));
            update %2$s as t set (%10$s) = row(%11$s) from %3$s as i
            where i.tx_id = p_tx and i.seq = p_seq and i.op = 'd' and %4$s
                and not (%5$s operator(pg_catalog.*=) i.b);
        end if;
        insert into %15$s (%7$s) %8$s
        select %9$s from %3$s as i
        where i.tx_id = p_tx and i.seq = p_seq and i.op = 'd'
            and not exists (select 1 from %2$s as t where %4$s);
        get diagnostics v_done = row_count;
        if not p_force and v_done < v_expected then
            -- Keys taken meanwhile by rows other than the deleted ones.
            select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(%6$s)) into v_conflicts
            from %3$s as i
            where i.tx_id = p_tx and i.seq = p_seq and i.op = 'd'
                and not exists (select 1 from %2$s as t where %4$s and %5$s operator(pg_catalog.*=) i.b);
        end if;
    elsif p_op = 'update' then
        if p_force then
            select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(%6$s)) into v_conflicts
            from %3$s as i
            where i.tx_id = p_tx and i.seq = p_seq and i.op = 'u'
                and not exists (select 1 from %2$s as t where %12$s and %5$s operator(pg_catalog.*=) i.a)
                and not exists (select 1 from %2$s as t where %13$s and %5$s operator(pg_catalog.*=) i.b);
        end if;
        update %2$s as t set (%10$s) = row(%11$s) from %3$s as i
        where i.tx_id = p_tx and i.seq = p_seq and i.op = 'u' and %12$s
            and (p_force or %5$s operator(pg_catalog.*=) i.a);
        get diagnostics v_done = row_count;
        -- An identity ALWAYS column cannot be written back by an update: a
        -- row whose value changed is then not in its before-state either.
        if not p_force and (v_done < v_expected or %14$s) then
            -- Restored rows now equal their before-image, and so do rows
            -- already back; the others changed behind the claims.
            select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(%6$s)) into v_conflicts
            from %3$s as i
            where i.tx_id = p_tx and i.seq = p_seq and i.op = 'u'
                and not exists (select 1 from %2$s as t where %13$s and %5$s operator(pg_catalog.*=) i.b);
        end if;
    elsif p_op = 'keys' then
        -- The statement's keys (the first 20), to name the rows of an error.
        select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(%6$s)) into v_conflicts
        from (select * from %3$s as e where e.tx_id = p_tx and e.seq = p_seq and e.op <> 'k' limit 20) as i;
    end if;
    return pg_catalog.jsonb_build_object('restored_rows', v_done,
        'conflicts', coalesce(v_conflicts, '[]'::pg_catalog.jsonb));
end;
$undo$
$body$,
        undo_fn,                                                             -- 1
        -- ONLY: rows of an inheritance child (one added since; the table is
        -- then refused) are never the table's rows, whatever their key.
        case when partitioned then target else 'only ' || target end,        -- 2
        image,                                                               -- 3
        resilience._sql_keys_equal('t.', kn, kop, 'i.', kk),                 -- 4
        row_of_t,                                                            -- 5
        key_json,                                                            -- 6
        restore_cols,                                                        -- 7
        overriding,                                                          -- 8
        restore_vals,                                                        -- 9
        coalesce(update_cols, restore_cols),                                 -- 10
        coalesce(update_vals, restore_vals),                                 -- 11
        resilience._sql_keys_equal('t.', kn, kop, '(i.a).', kc),             -- 12
        resilience._sql_keys_equal('t.', kn, kop, '(i.b).', kc),             -- 13
        case when overriding <> '' then 'true' else 'false' end,             -- 14
        target);                                                             -- 15
    execute pg_catalog.format('revoke all on function %s(uuid, bigint, text, boolean) from public', undo_fn);
    -- The undo writes the table, so the table's own triggers fire: they
    -- must run with the table owner's rights, not the package owner's. The
    -- undo function belongs to the table owner (who may read the images of
    -- its own table); _undo refuses to call it once it is no longer
    -- SECURITY DEFINER.
    begin
        table_owner := (select r.rolname from pg_catalog.pg_class as c
            inner join pg_catalog.pg_roles as r on r.oid = c.relowner where c.oid = relation);
        -- ALTER ... OWNER wants the new owner to have CREATE on the schema:
        -- lent for this statement only (a superuser needs none).
        lent_create := not pg_catalog.has_schema_privilege(table_owner, 'resilience', 'CREATE');
        if lent_create then
            execute pg_catalog.format('grant create on schema resilience to %I', table_owner);
        end if;
        execute pg_catalog.format('alter function %s(uuid, bigint, text, boolean) owner to %I', undo_fn,
            table_owner);
        if lent_create then
            execute pg_catalog.format('revoke create on schema resilience from %I', table_owner);
        end if;
        execute pg_catalog.format('grant usage on schema resilience to %I',
            (select r.rolname from pg_catalog.pg_class as c inner join pg_catalog.pg_roles as r on r.oid = c.relowner
                where c.oid = relation));
        execute pg_catalog.format('grant select on %s to %I', image,
            (select r.rolname from pg_catalog.pg_class as c inner join pg_catalog.pg_roles as r on r.oid = c.relowner
                where c.oid = relation));
        -- RLS is on and the image table is ours: without a policy a table
        -- owner that is neither us nor BYPASSRLS reads no image, and its undo
        -- would restore nothing and call that a success. (Re-created only
        -- when it changed: no lock on the image table at every install.)
        perform resilience._policy(image::regclass, ('_img_' || base || '_owner')::name,
            pg_catalog.format('create policy %I on %s for select to %I using (true)',
                '_img_' || base || '_owner', image,
                (select r.rolname from pg_catalog.pg_class as c
                    inner join pg_catalog.pg_roles as r on r.oid = c.relowner
                    where c.oid = relation)));
    exception when insufficient_privilege then
        -- The undo would run as the package owner, and so would the
        -- table's triggers: a table owner's code with our rights. Refused.
        raise exception using
            errcode = '42501',
            message = pg_catalog.format(
                '%s cannot be managed: its undo (and the table''s triggers) would run as the package owner %I (%s)',
                relation, current_user, sqlerrm),
            hint = pg_catalog.format(
                'A superuser runs grant %I to %I (the package owner may then hand the undo to the table owner), '
                'or installs pgresilience as a superuser.', table_owner, current_user);
    end;

    -- lock: claim rows the caller's own statement locked (FOR UPDATE, under
    -- its privileges and RLS). Only rows whose xmax is this very database
    -- transaction are taken, and only for a caller with the UPDATE privilege
    -- FOR UPDATE needs, so a caller cannot claim rows it could not lock.
    execute pg_catalog.format($body$
create or replace function %1$s(p_tx pg_catalog.uuid, p_tableoids pg_catalog.oid [], p_ctids pg_catalog.tid [])
returns pg_catalog.int8
language plpgsql
volatile
security definer
set search_path = ''
-- A TID scan's custom plan looks cheaper than the generic one, so without
-- this every call would plan the image insert again (measured: 30%% of a
-- lock's backend time).
set plan_cache_mode = force_generic_plan
-- Claims are looked up through the claim index (as in the capture).
set enable_seqscan = off
as $lock$
#variable_conflict use_variable
declare
    v_tx resilience.transactions := resilience._tx_for_capture(p_tx::pg_catalog.text);
    v_tx_id pg_catalog.uuid := v_tx.id;
    -- The managed table (DDL that renames it regenerates this function).
    v_root pg_catalog.regclass := %10$L::pg_catalog.regclass;
    v_seq pg_catalog.int8 := pg_catalog.nextval('resilience.restore_point_seq');
    v_rows pg_catalog.int8;
    v_first pg_catalog.bool;
    v_holder pg_catalog.uuid;
    v_may_conflict pg_catalog.bool;
    v_op pg_catalog.text := 'lock';
    v_via pg_catalog.text := 'tx_execute';
    v_row_security pg_catalog.text := pg_catalog.current_setting('row_security');
    v_ignored pg_catalog.text;
    -- All rows in one table (always so unless partitioned): ctid and tableoid
    -- then name each row exactly, with no need to pair them.
    v_one_table pg_catalog.bool := coalesce(p_tableoids[1] operator(pg_catalog.=) all (p_tableoids), false);
begin
    -- Nothing locked, nothing claimed, nothing to record.
    if coalesce(pg_catalog.cardinality(p_ctids), 0) = 0 then
        return 0;
    end if;
    -- Who may not lock rows of the table (SELECT ... FOR UPDATE needs UPDATE
    -- on a column) claims none: this transaction's xmax on a row also comes
    -- from the FOR KEY SHARE of a foreign-key check, which asks nothing.
    if not pg_catalog.has_any_column_privilege(v_tx.owner_role, v_root, 'UPDATE') then
        raise exception using
            errcode = '42501',
            message = pg_catalog.format('permission denied to lock rows of table %%s', v_root),
            hint = 'Locking rows needs the UPDATE privilege on one of the table''s columns, as SELECT ... FOR UPDATE does.';
    end if;
    -- v_first and v_may_conflict (_sql_claim_marker).
$body$ || resilience._sql_claim_marker() || $body$
    -- It reads the table as the package owner: the table's RLS policies (its
    -- owner's code) must never run with our rights. A package owner they
    -- apply to (not superuser, not BYPASSRLS, not the table owner) gets
    -- 42501. Set here, not as the function's SET clause: the transaction
    -- check above runs under the caller's setting, as it does in
    -- tx_execute, or PostgreSQL plans its query again on every call (a
    -- query on a table with RLS is planned for one row_security value).
    -- Put back by hand below: a local setting made inside a function
    -- outlives it unless the function's own SET clause names it.
    -- (By assignment: a PERFORM is a whole query, about 1.4 us more.)
    v_ignored := pg_catalog.set_config('row_security', 'off', true);
$body$ || resilience._sql_claiming('pg_catalog.cardinality(p_ctids) = 1', $writes$
        insert into %2$s (tx_id, seq, op, claim, %5$s, b)
        select v_tx_id, v_seq, 'l', %6$s, %7$s, %8$s
        from %3$s as t
        where t.ctid operator(pg_catalog.=) any (p_ctids) and t.tableoid operator(pg_catalog.=) any (p_tableoids)
            and (v_one_table or (t.tableoid, t.ctid) in (
                select * from rows from (pg_catalog.unnest(p_tableoids), pg_catalog.unnest(p_ctids))))
            and t.xmax operator(pg_catalog.=) pg_catalog.pg_current_xact_id()::pg_catalog.xid;
        get diagnostics v_rows = row_count;$writes$, $holder$
        select x.tx_id into v_holder from %3$s as t
        cross join lateral (select i.tx_id from %2$s as i where i.claim and i.tx_id <> v_tx_id and %4$s limit 1) as x
        where t.ctid operator(pg_catalog.=) any (p_ctids) and t.tableoid operator(pg_catalog.=) any (p_tableoids)
            and (v_one_table or (t.tableoid, t.ctid) in (
                select * from rows from (pg_catalog.unnest(p_tableoids), pg_catalog.unnest(p_ctids))))
        limit 1;$holder$) || $body$
    v_ignored := pg_catalog.set_config('row_security', v_row_security, true);
    -- Exactly the rows passed: each (tableoid, ctid) pair was locked by this
    -- statement. Pairs are matched as pairs when they span partitions (ctids
    -- and tableoids matched apart would take another partition's row at the
    -- same ctid that this database transaction locked earlier, and could
    -- even balance the count against a passed row whose lock is a
    -- subtransaction's); one table, the common case, needs no pairing join.
    if v_rows <> coalesce(pg_catalog.cardinality(p_ctids), 0) then
        raise exception using
            errcode = '55P03',
            message = pg_catalog.format('lock on %%s: rows must be locked by this statement', v_root);
    end if;
%9$s
    return v_rows;
end;
$lock$
$body$,
        lock_fn,                                                             -- 1
        image,                                                               -- 2
        target,                                                              -- 3
        resilience._sql_keys_equal('i.', kk, kop, 't.', kn),                 -- 4
        resilience._sql_list('', kk),                                        -- 5
        pg_catalog.format(claim_of, resilience._sql_keys_equal('e.', kk, kop, 't.', kn)),       -- 6
        resilience._sql_list('t.', kn),                                      -- 7
        row_of_t,                                                            -- 8
        record_statement,                                                    -- 9
        target);                                                             -- 10
    perform resilience._grant_like_tx_execute(pg_catalog.format('%s(uuid, oid[], tid[])', lock_fn)::regprocedure);

    -- Triggers on the table and on every partition (a statement on a
    -- partition fires only the partition's triggers).
    for part in
        select relation as target union select p.relid::regclass from pg_catalog.pg_partition_tree(relation) as p
    loop
        continue when resilience._capture_triggers_in_place(part.target, (capture_fn || '()')::regprocedure);
        perform resilience._drop_triggers(part.target);
        execute pg_catalog.format(
            'create trigger resilience_capture_insert after insert on %s '
            'referencing new table as new_rows for each statement execute function %s()', part.target, capture_fn);
        execute pg_catalog.format(
            'create trigger resilience_capture_update after update on %s '
            'referencing old table as old_rows new table as new_rows for each statement execute function %s()',
            part.target, capture_fn);
        execute pg_catalog.format(
            'create trigger resilience_capture_delete after delete on %s '
            'referencing old table as old_rows for each statement execute function %s()', part.target, capture_fn);
        execute pg_catalog.format(
            'create trigger resilience_guard_truncate before truncate on %s '
            'for each statement execute function resilience._guard_truncate()', part.target);
    end loop;

    insert into resilience.managed_tables as m (relation, managed_by, image_table, image_type,
        capture_function, undo_function, lock_function, shape, reshaped_at_seq)
    values (_generate.relation, resilience._caller_role(), image::regclass, row_type::regtype,
        (capture_fn || '()')::regprocedure, (undo_fn || '(uuid, bigint, text, boolean)')::regprocedure,
        (lock_fn || '(uuid, oid[], tid[])')::regprocedure, resilience._table_shape(_generate.relation),
        case when has_images then reshaped end)
    on conflict on constraint managed_tables_pkey do update set image_table = excluded.image_table,
        image_type = excluded.image_type,
        capture_function = excluded.capture_function, undo_function = excluded.undo_function,
        lock_function = excluded.lock_function, shape = excluded.shape,
        reshaped_at_seq = excluded.reshaped_at_seq;
    described := resilience._describe(_generate.relation);

    -- lock by primary key, the common call, written out once here so that
    -- PostgreSQL keeps its plan for the session: the statement tx_execute
    -- would build for a match naming exactly the key (the same condition,
    -- record definition and NOWAIT), then the lock function. tx_execute
    -- takes it when the caller may read the whole row (the general path
    -- returns only the granted columns otherwise); any other match gets
    -- null back and takes the general path.
    select pg_catalog.array_agg(k.name order by k.name) into key_names
    from pg_catalog.jsonb_array_elements_text(described -> 'key') as k (name);
    if (described -> 'comparable') @> (described -> 'key') then
        execute pg_catalog.format($body$
create or replace function %1$s(p_tx pg_catalog.uuid, p_match pg_catalog.jsonb,
    out locked_rows pg_catalog.jsonb, out locked_count pg_catalog.int8)
language plpgsql
volatile
security invoker
set search_path = ''
set plan_cache_mode = force_generic_plan
-- By key, through the primary key: a plan made while the table was small
-- would otherwise scan it for the whole session.
set enable_seqscan = off
as $lock_by_key$
#variable_conflict use_variable
declare
    v_tableoids pg_catalog.oid [];
    v_ctids pg_catalog.tid [];
begin
    if pg_catalog.jsonb_typeof(p_match) is distinct from 'object' or not p_match ?& %2$L::pg_catalog.text []
        or p_match - %2$L::pg_catalog.text [] <> '{}'::pg_catalog.jsonb
    then
        return;
    end if;
    -- Set-based like the general path (which this must equal even where
    -- the key stopped being unique, e.g. a dropped primary key that no
    -- event trigger saw).
    select coalesce(pg_catalog.jsonb_agg(l.j), '[]'), coalesce(pg_catalog.array_agg(l.o), '{}'),
        coalesce(pg_catalog.array_agg(l.c), '{}')
    into locked_rows, v_tableoids, v_ctids
    from (
        select t.tableoid as o, t.ctid as c, pg_catalog.to_jsonb(t.*) as j
        from %3$s as t, pg_catalog.jsonb_to_record(p_match) as m %4$s
        where %5$s
        for update of t nowait
    ) as l;
    locked_count := %6$s(p_tx, v_tableoids, v_ctids);
end;
$lock_by_key$
$body$,
            lock_by_key_fn,                                                  -- 1
            key_names::text,                                                 -- 2
            target,                                                          -- 3
            resilience._match_definition(described, key_names),             -- 4
            resilience._match_sql(described,
                (select pg_catalog.jsonb_object_agg(k, 0) from pg_catalog.unnest(key_names) as k)),  -- 5
            lock_fn);                                                        -- 6
        perform resilience._grant_like_tx_execute(pg_catalog.format('%s(uuid, jsonb)', lock_by_key_fn)::regprocedure);
        described := described || pg_catalog.jsonb_build_object('lock_by_key', lock_by_key_fn);
    else
        execute pg_catalog.format('drop function if exists %s(uuid, jsonb)', lock_by_key_fn);
    end if;

    -- insert of one row object, the common call, written out the same way:
    -- the statement tx_execute would build for a row naming every column a
    -- client may insert, and the one for a row naming all of them but those
    -- with a default (identity, serial, now()). Any other row gets null back
    -- and takes the general path; the statement is the same either way, so
    -- defaults, triggers, grants and RLS behave the same.
    select c.insertable, c.required into insertable, required from resilience._insert_columns(relation) as c;
    if insertable <> '{}' then
        execute pg_catalog.format($body$
create or replace function %1$s(p_data pg_catalog.jsonb,
    out inserted_rows pg_catalog.jsonb, out inserted_count pg_catalog.int8)
language plpgsql
volatile
security invoker
set search_path = ''
-- No plan_cache_mode here: a SET clause holds for the whole call, so user
-- triggers, defaults and RLS functions would run under it too, unlike a
-- plain INSERT (the general path). plpgsql keeps the plan either way.
as $insert_row$
begin
    if pg_catalog.jsonb_typeof(p_data) is distinct from 'object' then
        return;
    end if;
    if p_data ?& %2$L::pg_catalog.text [] and p_data - %2$L::pg_catalog.text [] = '{}'::pg_catalog.jsonb then
        %3$s;
    elsif %4$L::pg_catalog.text [] <> '{}' and p_data ?& %4$L::pg_catalog.text []
        and p_data - %4$L::pg_catalog.text [] = '{}'::pg_catalog.jsonb
    then
        %5$s;
    else
        return;
    end if;
    -- No row: a BEFORE trigger skipped it (count 0, as the general path says).
    inserted_count := case when inserted_rows is null then 0 else 1 end;
end;
$insert_row$
$body$,
            insert_row_fn,                                                   -- 1
            insertable::text,                                                -- 2
            resilience._insert_row_sql(described, insertable, row_into),     -- 3
            required::text,                                                  -- 4
            case when required in ('{}', insertable) then 'return'
                else resilience._insert_row_sql(described, required, row_into) end);  -- 5
        perform resilience._grant_like_tx_execute(pg_catalog.format('%s(jsonb)', insert_row_fn)::regprocedure);
        described := described || pg_catalog.jsonb_build_object('insert_row', insert_row_fn);
    else
        execute pg_catalog.format('drop function if exists %s(jsonb)', insert_row_fn);
    end if;
    described := described || pg_catalog.jsonb_build_object('insert_required', pg_catalog.to_jsonb(required));
    update resilience.managed_tables as m set descriptor = described
    where m.relation = _generate.relation;
    perform pg_catalog.set_config('resilience.generating', '', true);
end;
$gen$;

create or replace function resilience.manage_table(table_name regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if table_name is null then
        raise exception using errcode = '22023', message = 'table_name must not be null';
    end if;
    perform resilience._require_table_owner(table_name);
    perform resilience._generate(table_name);
end;
$$;

-- Drop what _generate made for a table (its triggers first).
create or replace function resilience._forget(relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    reg resilience.managed_tables;
begin
    select m.* into reg from resilience.managed_tables as m where m.relation = _forget.relation;
    if exists (select 1 from pg_catalog.pg_class as c where c.oid = relation) then
        perform resilience._drop_triggers(t.target)
        from (select relation union select p.relid::regclass from pg_catalog.pg_partition_tree(relation) as p)
            as t (target);
    end if;
    -- And from partitions detached since (without our event triggers, or
    -- before they released them): they still call its capture function.
    perform resilience._release_detached(relation);
    if reg.capture_function is not null then
        execute pg_catalog.format('drop function if exists %s', reg.capture_function);
        execute pg_catalog.format('drop function if exists %s', reg.undo_function);
        execute pg_catalog.format('drop function if exists %s', reg.lock_function);
    end if;
    if reg.descriptor ? 'lock_by_key' then
        execute pg_catalog.format('drop function if exists %s(uuid, jsonb)', reg.descriptor ->> 'lock_by_key');
    end if;
    if reg.descriptor ? 'insert_row' then
        execute pg_catalog.format('drop function if exists %s(jsonb)', reg.descriptor ->> 'insert_row');
    end if;
    if reg.image_table is not null then
        execute pg_catalog.format('drop table if exists %s', reg.image_table);
    end if;
    if reg.image_type is not null then
        execute pg_catalog.format('drop type if exists %s', reg.image_type);
    end if;
    delete from resilience.managed_tables as m where m.relation = _forget.relation;
    delete from resilience.claimed_tables as c where c.relation = _forget.relation;
end;
$$;

-- The first active logical transaction holding claims on a managed table,
-- null when none: what unmanage_table, DETACH and ATTACH PARTITION are
-- refused on (55006). Called only by SECURITY DEFINER functions; names
-- qualified.
create or replace function resilience._claim_holder(relation regclass)
returns uuid
language sql
stable
as $$
    select c.tx_id
    from resilience.claimed_tables as c
    inner join resilience.transactions as t on t.id operator(pg_catalog.=) c.tx_id
    where c.relation operator(pg_catalog.=) _claim_holder.relation and t.status operator(pg_catalog.=) 'active'
    order by t.started_at
    limit 1;
$$;

create or replace function resilience.unmanage_table(table_name regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    perform resilience._require_table_owner(table_name);
    -- A call in flight may be claiming rows of the table right now, its
    -- claims not yet visible: wait for the table's writers first (their calls
    -- hold it; _forget's drops would wait for them anyway, after the check),
    -- so that the check below sees what they claimed.
    execute pg_catalog.format('lock table %s in share row exclusive mode', table_name);
    if resilience._claim_holder(table_name) is not null then
        raise exception using
            errcode = '55006',
            message = pg_catalog.format('table %s has rows claimed by active logical transactions', table_name),
            hint = 'Commit or roll them back first.';
    end if;
    perform resilience._forget(table_name);
end;
$$;

-- Partitions detached from a managed table: our triggers stay on a table
-- that leaves the tree (_generate made them on each partition), so they
-- name the tables detached since. They leave as plain tables, our triggers
-- dropped, unless the DETACH that just ran holds the table's ACCESS
-- EXCLUSIVE lock while a logical transaction holds claims on the table:
-- then it is refused (55006), as unmanage_table is. PostgreSQL's own
-- DETACH waits for that lock, i.e. for every transaction that wrote any
-- partition; claims are the logical transactions' row locks, and the rows
-- of a partition detached from under them would leave their claims and
-- undo (a deleted row would have no partition to come back to). A DETACH
-- ... CONCURRENTLY (or FINALIZE) takes the parent's SHARE UPDATE EXCLUSIVE
-- lock only: PostgreSQL committed the partition's detach-pending state
-- before this runs, and a refusal would leave it there, its rows hidden
-- from the table's undo; it is let through (docs/transactions.md, known
-- limitations). Called by the DDL event trigger after each ALTER TABLE of
-- a managed table (a raise undoes the DETACH), and by _forget.
create or replace function resilience._release_detached(relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    capture_function regprocedure;
    detached regclass[];
    target regclass;
    trigger_name name;
    holder uuid;
begin
    select m.capture_function into capture_function
    from resilience.managed_tables as m where m.relation = _release_detached.relation;
    if capture_function is null then
        return;
    end if;
    detached := array(
        select distinct t.tgrelid::regclass from pg_catalog.pg_trigger as t
        where t.tgfoid = capture_function
            and t.tgrelid <> relation
            and t.tgrelid not in (select p.relid from pg_catalog.pg_partition_tree(relation) as p));
    if pg_catalog.cardinality(detached) = 0 then
        return;
    end if;
    -- The statement that detached one (its own savepoint or not): this
    -- transaction holds ACCESS EXCLUSIVE on the detached table and on the
    -- table it left. A table detached earlier (without our event triggers)
    -- is only released.
    if (
        select pg_catalog.bool_or(l.relation = any (detached::oid[]))
            and pg_catalog.bool_or(l.relation in (
                select p.relid from pg_catalog.pg_partition_tree(_release_detached.relation) as p))
        from pg_catalog.pg_locks as l
        where l.pid = pg_catalog.pg_backend_pid() and l.locktype = 'relation'
            and l.mode = 'AccessExclusiveLock' and l.granted)
    then
        holder := resilience._claim_holder(relation);
        if holder is not null then
            raise exception using
                errcode = '55006',
                message = pg_catalog.format(
                    'table %s has rows claimed by logical transaction %s: no partition can be detached from it',
                    relation, holder),
                detail = pg_catalog.jsonb_build_object(
                    'table', relation::text, 'detached', pg_catalog.to_jsonb(detached::text[]), 'holder', holder)::text,
                hint = 'Commit or roll back the logical transactions writing the table first, as PostgreSQL''s '
                    'DETACH PARTITION waits for the transactions writing it.';
        end if;
    end if;
    -- Ours by function, not by name: a renamed one would keep the capture
    -- function from being dropped with the table's registry.
    for target, trigger_name in
        select t.tgrelid::regclass, t.tgname from pg_catalog.pg_trigger as t
        where t.tgrelid = any (detached::oid[]) and not t.tgisinternal
            and (t.tgfoid = capture_function or t.tgname = 'resilience_guard_truncate')
    loop
        execute pg_catalog.format('drop trigger %I on %s', trigger_name, target);
    end loop;
end;
$$;

-- A managed table attached as a partition of another table (ATTACH
-- PARTITION) or made an inheritance child (ALTER TABLE ... INHERIT): a
-- statement on its new parent fires the parent's statement triggers, not
-- its own, so its capture and claim guard would be passed by (manage_table
-- refuses a partition for that reason). Refused (55006; a raise undoes the
-- DDL), claims or not: a REPEATABLE READ snapshot may predate a claim, so
-- "no claims" cannot be told at every isolation level, and unmanaging it on
-- the way would drop images that transactions still need to roll back.
-- unmanage_table first (it waits for the table's writers and sees every
-- claim). Called by the DDL event trigger with the managed tables the DDL
-- touched that have a parent now.
create or replace function resilience._refuse_attached(relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    parent regclass := (
        select h.inhparent::regclass from pg_catalog.pg_inherits as h
        where h.inhrelid = _refuse_attached.relation limit 1);
    holder uuid := resilience._claim_holder(relation);
begin
    if parent is null then
        return;
    end if;
    raise exception using
        errcode = '55006',
        message = pg_catalog.format(
            'table %s is managed by pgresilience: it cannot become a partition or inheritance child of %s%s',
            relation, parent,
            case when holder is not null
                then pg_catalog.format(' (logical transaction %s holds claims on it)', holder) else '' end),
        detail = pg_catalog.jsonb_build_object(
            'table', relation::text, 'parent', parent::text, 'holder', holder)::text,
        hint = pg_catalog.format(
            'Run select resilience.unmanage_table(%L) first (once no logical transaction holds claims on it); '
            'a managed partitioned table captures all its partitions.', relation::text);
end;
$$;

-- Regenerate a managed table's code, or, when that cannot be done now
-- (images of a changed key or type are held), say so and forget its shape:
-- captured writes then compare shapes again and fail with RZ007 until
-- manage_table (or tx_execute, once the images are gone) regenerates it.
-- Used where nothing may fail: every install, and the DDL event triggers.
create or replace function resilience._regenerate(relation regclass)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    perform resilience._generate(relation);
exception when others then
    update resilience.managed_tables as m set shape = null where m.relation = _regenerate.relation;
    raise warning 'pgresilience: capture of % not regenerated (%); captured writes fail with RZ007 until '
        'resilience.manage_table(%) is run', relation, sqlerrm, pg_catalog.quote_literal(relation::text);
end;
$$;
