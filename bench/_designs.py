"""Bench-local alternative designs (issue 11 item 3): what the contract's
guarantees cost when built other ways, on tables of the benchmark's own
scratch database, with none of the package's code. Each keeps the
guarantees that matter for the figure it is compared with:

* a write joins a logical transaction only after a check that the
  transaction exists, belongs to the caller and is active (row share-locked
  in a bench-local `floor_tx`);
* every written row gets a durable restore point (its before image, and its
  after image or something that detects drift) and a claim on its key that a
  concurrent transaction cannot take (a unique index);
* rollback restores set-based and only rows still equal to their after image.

They omit what is not on the measured path's critical contract (audit rows,
statement log, savepoints, RLS-aware returning). The designs at the end
(`contract_lock`, `contract_insert`) are the exception: they keep the whole
contract and therefore run over a table the package manages. The SQL is templated with
psycopg.sql (identifiers only).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

# Shared by every design: the transactions a floor write checks.
COMMON = (
    """
    create table floor_tx (id uuid primary key, owner text not null, status text not null,
        expires_at timestamptz not null)
    """,
    "create sequence floor_seq",
    # The transaction check every design performs (exists, owner, active).
    """
    create function floor_check(p_tx uuid) returns uuid language plpgsql as $$
    declare
        found_id uuid;
    begin
        select t.id into found_id from floor_tx t
        where t.id = p_tx and t.owner = current_user and t.status = 'active'
            and t.expires_at > clock_timestamp()
        for share;
        if found_id is null then
            raise exception using errcode = 'RZ001', message = 'no such transaction';
        end if;
        return found_id;
    end $$
    """,
    # The logical transaction a plain write belongs to: floor.tx (set by a
    # floor function) or PostgREST's header; null when none.
    """
    create function floor_current_tx() returns uuid language plpgsql stable as $$
    declare
        v text := current_setting('floor.tx', true);
        h text;
    begin
        if v is null or v = '' then
            h := current_setting('request.headers', true);
            if h is not null and strpos(h, 'x-resilience-tx') > 0 then
                v := h::jsonb ->> 'x-resilience-tx';
            end if;
        end if;
        return nullif(v, '')::uuid;
    end $$
    """,
    # Does any claim exist on this table (bench-local claimed-tables flag)?
    "create table floor_claimed (relation regclass primary key)",
    # A running undo's own writes pass the guard: an unguessable token in
    # floor.restoring that is present in floor_tokens (a client cannot fake it).
    "create table floor_tokens (token uuid primary key)",
    """
    create function floor_restoring() returns boolean language sql stable as $$
        select exists (select 1 from floor_tokens t
            where t.token::text = nullif(current_setting('floor.restoring', true), ''))
    $$
    """,
    """
    create function floor_begin_restore() returns void language sql as $$
        with t as (insert into floor_tokens values (gen_random_uuid()) returning token)
        select set_config('floor.restoring', t.token::text, true) from t
    $$
    """,
    """
    create function floor_empty() returns trigger language plpgsql as $$
    begin
        return null;
    end $$
    """,
    # What the contract adds to every captured statement: its journal row
    # (LIFO rollback) and its audit row, indexed like the package's.
    "create table floor_journal (tx uuid, seq bigint, relation regclass, operation text,"
    " row_count bigint, primary key (tx, seq))",
    """
    create table floor_audit (id bigint generated always as identity primary key,
        at timestamptz not null default clock_timestamp(), event text not null, tx uuid,
        actor text not null, detail jsonb not null)
    """,
    "create index on floor_audit (at)",
    "create index on floor_audit (tx) where tx is not null",
)


def new_floor_tx(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute(
        "insert into floor_tx values (gen_random_uuid(), current_user, 'active',"
        " now() + interval '1 day') returning id"
    ).fetchone()
    assert row is not None
    return row[0]


def make_common(conn: psycopg.Connection[Any]) -> None:
    for statement in (*COMMON, DYNAMIC_INSERT):
        conn.execute(statement)


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def run(conn: psycopg.Connection[Any], template: str, **names: str) -> None:
    """Execute template with {names} as identifiers; event, events and
    referencing (our own constants) as SQL."""
    fragments = ("event", "events", "referencing")
    conn.execute(
        sql.SQL(template).format(
            **{k: sql.SQL(v) if k in fragments else ident(v) for k, v in names.items()}
        )
    )


# --- Design T: images typed as the table's own row type, the image row is
# the claim (partial unique index on the key), statement-level capture from
# transition tables; rollback: one UPDATE/DELETE from the image table where
# the row still *= its after image.
TYPED_IMAGE = """
create table {img} (tx uuid not null, seq bigint not null, claim boolean, k bigint,
    b {t}, a {t});
create unique index on {img} (k) where claim;
create index on {img} (tx, seq);
create function {cap}() returns trigger language plpgsql as $$
declare
    v_tx uuid := floor_current_tx();
    v_seq bigint;
    v_first boolean;
begin
    if v_tx is null then
        -- A plain write: only claimed keys are off limits.
        if exists (select 1 from floor_claimed c where c.relation = tg_relid)
            and not floor_restoring() then
            if tg_op = 'INSERT' then
                perform 1 from new_rows n, {img} i where i.claim and i.k = n.id;
            else
                perform 1 from old_rows o, {img} i where i.claim and i.k = o.id;
            end if;
            if found then
                raise exception using errcode = '55P03', message = 'claimed';
            end if;
        end if;
        return null;
    end if;
    perform floor_check(v_tx);
    v_seq := nextval('floor_seq');
    insert into floor_claimed values (tg_relid) on conflict do nothing;
    if tg_op = 'INSERT' then
        insert into {img} (tx, seq, claim, k, a)
        select v_tx, v_seq, true, n.id, row(n.*)::{t} from new_rows n;
    else
        -- The first image of a key in the transaction claims it; when the
        -- transaction has no image of this table yet, every row is a first.
        v_first := not exists (select 1 from {img} e where e.tx = v_tx);
        insert into {img} (tx, seq, claim, k, b, a)
        select v_tx, v_seq,
            case when v_first then true
                when exists (select 1 from {img} e where e.claim and e.tx = v_tx and e.k = (w.b).id)
                then null else true end,
            (w.b).id, w.b, w.a
        from (select unnest(array(select row(o.*)::{t} from old_rows o)) as b,
                     unnest(array(select row(n.*)::{t} from new_rows n)) as a) w;
    end if;
{record}
    return null;
end $$;
create function {undo}(p_tx uuid) returns bigint language plpgsql as $$
declare
    done bigint;
    expected bigint;
begin
    perform floor_check(p_tx);
    perform floor_begin_restore();
    -- One pass: restore the rows that still equal their after image; if
    -- any image found no such row, a row drifted: raise, and the database
    -- transaction undoes the restore (all or nothing).
    update {t} t set ({cols}) = ({bcols}) from {img} i
    where i.tx = p_tx and i.b is not null and t.id = i.k and t *= i.a;
    get diagnostics done = row_count;
    delete from {img} i where i.tx = p_tx and i.b is not null;
    get diagnostics expected = row_count;
    if done <> expected then
        raise exception using errcode = 'RZ005', message = 'drifted';
    end if;
    delete from {t} t using {img} i where i.tx = p_tx and i.b is null and t.id = i.k and t *= i.a;
    delete from {img} i where i.tx = p_tx;
    return done;
end $$;
"""

# --- Design J: jsonb images in one shared table + a separate claims table
# keyed by (relation, key); rollback through jsonb_populate_record.
JSONB_IMAGE = """
create table {img} (tx uuid not null, seq bigint not null, k bigint, b jsonb, a jsonb);
create index on {img} (tx, seq);
create table {claims} (relation regclass, k bigint, tx uuid not null, primary key (relation, k));
create function {cap}() returns trigger language plpgsql as $$
declare
    v_tx uuid := floor_current_tx();
    v_seq bigint;
begin
    if v_tx is null then
        if exists (select 1 from floor_claimed c where c.relation = tg_relid)
            and not floor_restoring() then
            perform 1 from old_rows o, {claims} c where c.relation = tg_relid and c.k = o.id;
            if found then
                raise exception using errcode = '55P03', message = 'claimed';
            end if;
        end if;
        return null;
    end if;
    perform floor_check(v_tx);
    v_seq := nextval('floor_seq');
    insert into floor_claimed values (tg_relid) on conflict do nothing;
    insert into {claims} (relation, k, tx) select tg_relid, n.id, v_tx from new_rows n
    on conflict (relation, k) do nothing;
    if exists (select 1 from new_rows n, {claims} c
               where c.relation = tg_relid and c.k = n.id and c.tx <> v_tx) then
        raise exception using errcode = '55P03', message = 'claimed';
    end if;
    insert into {img} (tx, seq, k, b, a)
    select v_tx, v_seq, (w.b ->> 'id')::bigint, w.b, w.a
    from (select unnest(array(select to_jsonb(o) from old_rows o)) as b,
                 unnest(array(select to_jsonb(n) from new_rows n)) as a) w;
    return null;
end $$;
create function {undo}(p_tx uuid) returns bigint language plpgsql as $$
declare
    done bigint;
    expected bigint;
begin
    perform floor_check(p_tx);
    perform floor_begin_restore();
    update {t} t set ({cols}) = ({rcols})
    from {img} i, jsonb_populate_record(null::{t}, i.b) r
    where i.tx = p_tx and t.id = i.k and to_jsonb(t) = i.a;
    get diagnostics done = row_count;
    delete from {img} i where i.tx = p_tx;
    get diagnostics expected = row_count;
    if done <> expected then
        raise exception using errcode = 'RZ005', message = 'drifted';
    end if;
    delete from {claims} c where c.tx = p_tx;
    return done;
end $$;
"""


# What the contract adds to every captured statement: its journal row and
# its audit row (one statement, as the package writes them).
RECORD = """
    with j as (
        insert into floor_journal values (v_tx, v_seq, tg_relid::regclass, lower(tg_op),
            (select count(*) from new_rows))
    )
    insert into floor_audit (event, tx, actor, detail)
    values ('execute', v_tx, current_user, jsonb_build_object('table', tg_relid::regclass::text,
        'operation', lower(tg_op), 'rows', (select count(*) from new_rows)));
"""


def typed_image(
    conn: psycopg.Connection[Any], table: str, columns: list[str], *, recorded: bool = False
) -> None:
    """Design T on `table` (id bigint key): image table, capture trigger
    (insert and update), undo function floor_undo_<table>(tx); `recorded`:
    the capture also writes each statement's journal and audit rows."""
    names = {
        "t": table,
        "img": f"{table}_img",
        "cap": f"{table}_cap",
        "undo": f"floor_undo_{table}",
    }
    template = sql.SQL(TYPED_IMAGE).format(
        record=sql.SQL(RECORD if recorded else ""),
        cols=sql.SQL(", ").join(ident(c) for c in columns),
        bcols=sql.SQL(", ").join(sql.SQL("(i.b).{}").format(ident(c)) for c in columns),
        **{k: ident(v) for k, v in names.items()},
    )
    conn.execute(template)
    for event, referencing in (
        ("insert", "new table as new_rows"),
        ("update", "old table as old_rows new table as new_rows"),
    ):
        run(
            conn,
            "create trigger {trg} after {event} on {t} referencing {referencing}"
            " for each statement execute function {cap}()",
            trg=f"{table}_{event}",
            t=table,
            cap=names["cap"],
            event=event,
            referencing=referencing,
        )


def jsonb_image(conn: psycopg.Connection[Any], table: str, columns: list[str]) -> None:
    """Design J on `table`: update capture only, undo floor_undo_<table>(tx)."""
    names = {
        "t": table,
        "img": f"{table}_img",
        "claims": f"{table}_claims",
        "cap": f"{table}_cap",
        "undo": f"floor_undo_{table}",
    }
    template = sql.SQL(JSONB_IMAGE).format(
        cols=sql.SQL(", ").join(ident(c) for c in columns),
        rcols=sql.SQL(", ").join(sql.SQL("r.{}").format(ident(c)) for c in columns),
        **{k: ident(v) for k, v in names.items()},
    )
    conn.execute(template)
    run(
        conn,
        "create trigger {trg} after update on {t} referencing old table as old_rows"
        " new table as new_rows for each statement execute function {cap}()",
        trg=f"{table}_update",
        t=table,
        cap=names["cap"],
    )


# --- Row-level designs: one AFTER ROW trigger (no transition tables) writing
# the image and claim of each row; the claim guard of a plain write is a
# BEFORE ROW check of the key against the claim index.
ROW_LEVEL = """
create table {img} (tx uuid not null, seq bigint not null, claim boolean, k bigint,
    b {t}, a {t});
create unique index on {img} (k) where claim;
create function {cap}() returns trigger language plpgsql as $$
declare
    v_tx uuid := floor_current_tx();
begin
    if v_tx is null then
        if exists (select 1 from floor_claimed c where c.relation = tg_relid)
            and exists (select 1 from {img} i where i.claim and i.k = old.id) then
            raise exception using errcode = '55P03', message = 'claimed';
        end if;
        return null;
    end if;
    perform floor_check(v_tx);
    insert into floor_claimed values (tg_relid) on conflict do nothing;
    if tg_op = 'INSERT' then
        insert into {img} (tx, seq, claim, k, a) values (v_tx, 0, true, new.id, new);
    else
        insert into {img} (tx, seq, claim, k, b, a) values (v_tx, 0, true, old.id, old, new);
    end if;
    return null;
end $$;
"""


def row_level(conn: psycopg.Connection[Any], table: str, events: str = "insert or update") -> None:
    """Row-level capture + guard on `table` (AFTER ROW)."""
    names = {"t": table, "img": f"{table}_img", "cap": f"{table}_cap"}
    conn.execute(sql.SQL(ROW_LEVEL).format(**{k: ident(v) for k, v in names.items()}))
    run(
        conn,
        "create trigger {trg} after {events} on {t} for each row execute function {cap}()",
        trg=f"{table}_row",
        t=table,
        cap=names["cap"],
        events=events,
    )


# --- tx_execute-like entry points for single-row insert and lock.
STATIC_INSERT = """
create function {fn}(p_tx uuid, p_data jsonb) returns jsonb language plpgsql as $$
declare
    r jsonb;
begin
    perform floor_check(p_tx);
    perform set_config('floor.tx', p_tx::text, true);
    insert into {t} as t select * from jsonb_populate_record(null::{t}, p_data)
    returning to_jsonb(t) into r;
    perform set_config('floor.tx', '', true);
    return r;
end $$;
create function {dispatch}(p_tx uuid, p_table text, p_op text, p_data jsonb) returns jsonb
language plpgsql as $$
begin
    case p_table || ':' || p_op
        when {tname} || ':insert' then return {fn}(p_tx, p_data);
        else raise exception using errcode = '22023', message = 'unknown table or operation';
    end case;
end $$;
"""

DYNAMIC_INSERT = """
create function floor_dynamic_execute(p_tx uuid, p_table text, p_data jsonb) returns jsonb
language plpgsql as $$
declare
    result jsonb;
begin
    perform floor_check(p_tx);
    perform set_config('floor.tx', p_tx::text, true);
    execute format('insert into %I select * from jsonb_populate_record(null::%I, $1)'
        ' returning to_jsonb(%I)', p_table, p_table, p_table) into result using p_data;
    perform set_config('floor.tx', '', true);
    return result;
end $$
"""

LOCK = """
create table {img} (tx uuid not null, seq bigint not null, claim boolean, k bigint, b {t});
create unique index on {img} (k) where claim;
create function {fn}(p_tx uuid, p_id bigint) returns bigint language plpgsql as $$
declare
    n bigint;
begin
    perform floor_check(p_tx);
    insert into floor_claimed values ({tname}::regclass) on conflict do nothing;
    with l as (select t from {t} t where t.id = p_id for update nowait)
    insert into {img} (tx, seq, claim, k, b)
    select p_tx, nextval('floor_seq'), true, (l.t).id, l.t from l;
    get diagnostics n = row_count;
    return n;
end $$;
"""


# The same, with the journal and audit rows every captured statement writes.
LOCK_RECORDED = """
create function {fn}(p_tx uuid, p_id bigint) returns bigint language plpgsql as $$
declare
    n bigint;
    v_seq bigint := nextval('floor_seq');
begin
    perform floor_check(p_tx);
    insert into floor_claimed values ({tname}::regclass) on conflict do nothing;
    with l as (select t from {t} t where t.id = p_id for update nowait)
    insert into {img} (tx, seq, claim, k, b)
    select p_tx, v_seq, true, (l.t).id, l.t from l;
    get diagnostics n = row_count;
    with j as (insert into floor_journal values (p_tx, v_seq, {tname}::regclass, 'lock', n))
    insert into floor_audit (event, tx, actor, detail)
    values ('execute', p_tx, current_user, jsonb_build_object('table', {tname}, 'operation', 'lock',
        'rows', n));
    return n;
end $$;
"""


def static_insert(conn: psycopg.Connection[Any], table: str) -> str:
    """A CASE dispatcher floor_dispatch_<table>(tx, table, op, data) calling
    a static per-table insert function (plan cached); the table's capture
    trigger (typed_image) writes image + claim."""
    dispatch = f"floor_dispatch_{table}"
    conn.execute(
        sql.SQL(STATIC_INSERT).format(
            fn=ident(f"floor_insert_{table}"),
            dispatch=ident(dispatch),
            t=ident(table),
            tname=sql.Literal(table),
        )
    )
    return dispatch


def lock_function(conn: psycopg.Connection[Any], table: str, *, recorded: bool = False) -> str:
    """The one-function lock of `table` (FOR UPDATE NOWAIT + claim) and its
    image table; `recorded`: the same writing the journal and audit rows too
    (on the image table the plain one created)."""
    fn = f"floor_lock_recorded_{table}" if recorded else f"floor_lock_{table}"
    conn.execute(
        sql.SQL(LOCK_RECORDED if recorded else LOCK).format(
            fn=ident(fn),
            t=ident(table),
            img=ident(f"{table}_lockimg"),
            tname=sql.Literal(table),
        )
    )
    return fn


# Designs that keep the whole contract, over a table the package manages
# (its image table, claims, journal and audit rows, capture trigger), so that
# a target missed by `tx_execute` is also measured against them in the same
# run (issue 11 item 3), not only against the floors above, which leave out
# the lazy reap probe, the check by role and JWT subject, the caller's
# privileges and the second index of the image table.

# The one-function lock of table {t} (key id bigint), over the package's
# image table {img} and row type {row}: everything the package's lock by
# primary key does, in one SECURITY DEFINER body. It checks the owner's
# privileges but cannot apply the caller's RLS (it runs as the package
# owner), so a table with RLS takes the general path. {cut} ends it early
# (bench/anatomy.py measures each step).
CONTRACT_LOCK = """
create function {fn}(p_tx uuid, p_match jsonb, out locked_rows jsonb, out locked_count int8)
language plpgsql volatile security definer set search_path = ''
set plan_cache_mode = force_generic_plan as $f$
#variable_conflict use_variable
declare
    v_tx resilience.transactions;
    v_root pg_catalog.regclass := {tname}::pg_catalog.regclass;
    v_seq pg_catalog.int8;
    v_rows pg_catalog.int8;
    v_first pg_catalog.bool;
begin
    if {cut} = 'entry' then return; end if;
    perform resilience._reap_if_expired();
    if {cut} = 'reap' then return; end if;
    v_tx := resilience._tx_for_capture(p_tx::pg_catalog.text);
    if {cut} = 'check' then return; end if;
    if not (pg_catalog.has_table_privilege(v_tx.owner_role, v_root, 'SELECT')
        and pg_catalog.has_any_column_privilege(v_tx.owner_role, v_root, 'UPDATE'))
        or (select c.relrowsecurity from pg_catalog.pg_class as c where c.oid = v_root)
    then
        return;
    end if;
    if {cut} = 'privileges' then return; end if;
    insert into resilience.claimed_tables (relation, tx_id) values (v_root, v_tx.id)
    on conflict do nothing;
    get diagnostics v_rows = row_count;
    v_first := v_rows > 0;
    if {cut} = 'claimed table' then return; end if;
    v_seq := pg_catalog.nextval('resilience.restore_point_seq');
    with l as (
        select t.* from {t} as t, pg_catalog.jsonb_to_record(p_match) as m (id bigint)
        where t.id = m.id for update of t nowait
    ), i as (
        insert into {img} (tx_id, seq, op, claim, k1, b)
        select v_tx.id, v_seq, 'l',
            case when v_first then true
                when exists (select 1 from {img} as e
                    where e.claim and e.tx_id = v_tx.id and e.k1 operator(pg_catalog.=) l.id)
                then null else true end,
            l.id, row({row_columns})::{row}
        from l returning 1
    )
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(l.*)), '[]'),
        (select pg_catalog.count(*) from i)
    into locked_rows, locked_count from l;
    if {cut} = 'lock and image' then return; end if;
    v_rows := locked_count;
    with s as (
        insert into resilience.tx_statements (tx_id, seq, relation, operation, row_count)
        values (v_tx.id, v_seq, v_root, 'lock', v_rows)
    )
    insert into resilience.audit_log (event, tx_id, actor_role, actor_sub, detail)
    values ('execute', v_tx.id, v_tx.owner_role, v_tx.owner_sub, pg_catalog.jsonb_build_object(
        'table', v_root::pg_catalog.text, 'operation', 'lock', 'rows', v_rows, 'via', 'tx_execute',
        'duration_ms', pg_catalog.round(
            extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp())
            * 1000, 3)));
end $f$
"""

# A static per-table insert over the managed table {t} (plan cached):
# tx_execute's preparation (the lazy reap probe, the transaction check before
# the write, the registry read) and the transaction id setting; the
# package's own capture trigger does the rest (the check again, typed image
# and claim, journal, audit). It does not apply column defaults (the
# benchmarks name every column) nor filter RETURNING by column grants.
CONTRACT_INSERT = """
create function {fn}(p_tx uuid, p_data jsonb) returns jsonb
language plpgsql volatile security invoker set search_path = ''
set plan_cache_mode = force_generic_plan as $f$
declare
    r pg_catalog.jsonb;
begin
    perform resilience._execute_prepare(p_tx, {tname}::pg_catalog.regclass);
    perform pg_catalog.set_config('resilience.tx_id', p_tx::pg_catalog.text, true);
    insert into {t} as t select * from pg_catalog.jsonb_populate_record(null::{t}, p_data)
    returning pg_catalog.to_jsonb(t.*) into r;
    perform pg_catalog.set_config('resilience.tx_id', '', true);
    return pg_catalog.jsonb_build_object('success', true, 'data', pg_catalog.jsonb_build_array(r),
        'count', 1);
end $f$
"""


def _image_of(conn: psycopg.Connection[Any], table: str) -> tuple[str, str]:
    row = conn.execute(
        "select image_table::text, image_type::text from resilience.managed_tables"
        " where relation = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None, f"{table} is not managed"
    return row[0], row[1]


def contract_lock(
    conn: psycopg.Connection[Any], table: str, columns: list[str], *, cut: str = "all"
) -> str:
    """The one-function lock of the managed `table` (public, key id), cut
    after step `cut` ("all": the whole contract); returns its name."""
    image, row_type = _image_of(conn, table)
    fn = f"resilience.contract_lock_{table}_{cut.replace(' ', '_')}"
    conn.execute(
        sql.SQL(CONTRACT_LOCK).format(
            fn=sql.SQL(fn),
            t=sql.Identifier("public", table),
            tname=sql.Literal(f"public.{table}"),
            img=sql.SQL(image),
            row=sql.SQL(row_type),
            row_columns=sql.SQL(", ").join(sql.Identifier("l", c) for c in columns),
            cut=sql.Literal(cut),
        )
    )
    return fn


def contract_insert(conn: psycopg.Connection[Any], table: str) -> str:
    """The static per-table insert over the managed `table` (public)."""
    fn = f"resilience.contract_insert_{table}"
    conn.execute(
        sql.SQL(CONTRACT_INSERT).format(
            fn=sql.SQL(fn),
            t=sql.Identifier("public", table),
            tname=sql.Literal(f"public.{table}"),
        )
    )
    return fn


# tx_execute's lock by primary key without its dispatch: the same
# preparation (lazy reap probe, the transaction check before the lock, the
# registry read), then the table's generated lock by key {lock}, called by
# name (no statement built, no dynamic EXECUTE).
CONTRACT_LOCK_BY_KEY = """
create function {fn}(p_tx uuid, p_match jsonb, out locked_rows jsonb, out locked_count int8)
language plpgsql volatile security invoker set search_path = '' as $f$
begin
    perform resilience._execute_prepare(p_tx, {tname}::pg_catalog.regclass);
    select l.locked_rows, l.locked_count into locked_rows, locked_count
    from {lock}(p_tx, p_match) as l;
end $f$
"""


def contract_lock_by_key(conn: psycopg.Connection[Any], table: str) -> str:
    """The managed `table`'s generated lock by key behind tx_execute's
    preparation, called statically; returns the function's name."""
    fn = f"resilience.contract_lock_by_key_{table}"
    conn.execute(
        sql.SQL(CONTRACT_LOCK_BY_KEY).format(
            fn=sql.SQL(fn),
            tname=sql.Literal(f"public.{table}"),
            lock=sql.SQL(lock_by_key(conn, table)),
        )
    )
    return fn


def lock_by_key(conn: psycopg.Connection[Any], table: str) -> str:
    """The managed `table`'s generated lock by primary key (what tx_execute's
    lock calls after its dispatch)."""
    row = conn.execute(
        "select descriptor ->> 'lock_by_key' from resilience.managed_tables"
        " where relation = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None and row[0], f"{table} has no lock by key"
    return str(row[0])
