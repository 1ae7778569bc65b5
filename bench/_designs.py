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
statement log, savepoints, RLS-aware returning): they are floors. Two
groups of designs are not:

* `contract_lock`, `contract_insert`, `contract_lock_by_key` keep the whole
  contract of `tx_execute` and therefore run over a table the package
  manages;
* `contract_statement` and `contract_row` (the last section) keep the
  contract of a captured write on bench-local tables, by statement-level
  and by row-level capture, with one undo (`floor_undo`) over every table
  a transaction wrote; tests/transactions/test_bench_contract_designs.py
  checks them against a real ROLLBACK. Both capture with the writer's
  rights; `contract_separated` is the statement-level one with privilege
  separation (its capture and undo run as the owner of the images, as the
  package's do), and `contract_lock_separated` its lock behind
  tx_execute's signature, handed only the locked row's (tableoid, ctid).

The SQL is templated with psycopg.sql (identifiers only).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

# Shared by every design: the transactions a floor write checks.
COMMON = (
    """
    create table floor_tx (id uuid primary key, owner text not null, status text not null,
        expires_at timestamptz not null, owner_sub text)
    """,
    "create index floor_tx_expiring on floor_tx (expires_at) where status = 'active'",
    # Who calls, as the package tells it inside a SECURITY DEFINER function
    # (where current_user is the function's owner): the role set (or the
    # session's) and the JWT subject PostgREST sets.
    """
    create function floor_caller_role() returns text language sql stable as $$
        select case when current_setting('role') = 'none' then session_user::text
            else current_setting('role') end
    $$
    """,
    """
    create function floor_caller_sub() returns text language sql stable as $$
        select nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
    $$
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
    # The same by the caller's role and JWT subject, for the designs whose
    # capture runs as the owner of its images (privilege separation).
    """
    create function floor_check_caller(p_tx uuid) returns uuid language plpgsql as $$
    declare
        found_id uuid;
    begin
        select t.id into found_id from floor_tx t
        where t.id = p_tx and t.owner = floor_caller_role()
            and t.owner_sub is not distinct from floor_caller_sub()
            and t.status = 'active' and t.expires_at > clock_timestamp()
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
    # Privilege separation (a capture whose images, claims and journal
    # writers may neither read nor forge runs as their owner): the empty
    # trigger as SECURITY DEFINER with a pinned search path, and the same
    # with the one probe a plain write to a table without claims owes.
    """
    create function floor_empty_definer() returns trigger language plpgsql
    security definer set search_path = '' as $$
    begin
        return null;
    end $$
    """,
    """
    create function floor_probe_definer() returns trigger language plpgsql
    security definer set search_path = '' as $$
    begin
        if not exists (select 1 from public.floor_claimed as c where c.relation = tg_relid) then
            return null;
        end if;
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


# The transition tables a statement-level capture trigger declares, per event.
TRANSITION_TABLES = {
    "insert": "new table as new_rows",
    "update": "old table as old_rows new table as new_rows",
    "delete": "old table as old_rows",
}


def statement_triggers(
    conn: psycopg.Connection[Any], table: str, capture: str, events: tuple[str, ...]
) -> None:
    """One AFTER STATEMENT trigger <table>_<event> per event, declaring its
    transition tables, executing `capture`."""
    for event in events:
        run(
            conn,
            "create trigger {trg} after {event} on {t} referencing {referencing}"
            " for each statement execute function {cap}()",
            trg=f"{table}_{event}",
            t=table,
            cap=capture,
            event=event,
            referencing=TRANSITION_TABLES[event],
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
    statement_triggers(conn, table, names["cap"], ("insert", "update"))


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


# Designs that keep the contract of a captured write on bench-local tables
# (issue 11 item 3 for (a2), (b), (c) and (e), where only floors were built
# before): what a plain INSERT, UPDATE or DELETE on a managed table owes,
# built two other ways than the package builds it.
#
# * the transaction is checked (exists, owner, active, not expired) before
#   anything is captured (statement-level: before its images are written);
#   writes in a logical transaction come from the floor.tx setting or
#   PostgREST's x-resilience-tx header;
# * every row written gets an image typed as the table's row (before and
#   after) whose first row per key is the claim (partial unique index): a key
#   another transaction claims is refused with 55P03, never waited for; a
#   key change claims the old key too;
# * a plain write to a table with claims is refused on a claimed key (old or
#   new), also when the claim was taken while the write waited on a row
#   lock; TRUNCATE of a table with claims is refused; a restore's own writes
#   pass (floor_restoring);
# * a foreign key action (ON DELETE/UPDATE CASCADE, SET NULL, SET DEFAULT)
#   into a table without capture is refused (0A000): the undo could not
#   restore it;
# * every captured statement writes its journal row (the undo's order, any
#   number of tables) and its audit row;
# * the undo (floor_undo) goes back statement by statement, newest first,
#   over every table the transaction wrote; a statement whose rows are not
#   (yet) as it wrote them is retried after the others (a user trigger's
#   nested statement is numbered before the statement that fired it), and
#   if no statement can go back, RZ005: all or nothing. It releases the
#   claims and ends the transaction; the owner may undo an expired one (what
#   a reaper does).
#
# Left out (not on the measured paths, or a probe per call): the JWT subject
# in the owner check, a reaper, savepoints, RLS and column grants,
# partitioned tables. The row design's journal counts an upsert's rows under
# its UPDATE (its undo is exact).
#
# Two ways: statement-level capture over the transition tables (the images
# of a statement in one INSERT), and row-level capture (no transition
# tables: a BEFORE STATEMENT trigger checks the transaction once and pushes
# the statement's journal number on a per-transaction stack, an AFTER ROW
# trigger writes each image, an AFTER STATEMENT trigger writes the journal
# and audit rows). Both share the image table layout, the undo step and
# floor_undo.

CONTRACT_COMMON = """
create table if not exists floor_steps (relation regclass primary key,
    step regprocedure not null);
-- The trigger functions of the foreign key actions that write the
-- referencing table when a referenced row is deleted or updated.
create or replace function floor_fk_actions(p_op text) returns oid[] language sql immutable as $$
    select case p_op
        when 'DELETE' then array['"RI_FKey_cascade_del"'::regproc, '"RI_FKey_setnull_del"'::regproc,
            '"RI_FKey_setdefault_del"'::regproc]::oid[]
        else array['"RI_FKey_cascade_upd"'::regproc, '"RI_FKey_setnull_upd"'::regproc,
            '"RI_FKey_setdefault_upd"'::regproc]::oid[] end
$$;
-- Does statement p_op on p_relation fire a foreign key action writing a
-- table without capture?
create or replace function floor_uncaptured_actions(p_relation regclass, p_op text)
returns boolean language sql stable as $$
    select exists (select 1 from pg_trigger g
        where g.tgrelid = p_relation and g.tgfoid = any (floor_fk_actions(p_op))
            and not exists (select 1 from floor_steps s where s.relation = g.tgconstrrelid))
$$;
create or replace function floor_undo(p_tx uuid) returns bigint language plpgsql as $$
declare
    v_left bigint[];
    v_next bigint[];
    v_seq bigint;
    v_step regprocedure;
    n bigint;
    done bigint := 0;
begin
    perform 1 from floor_tx t
    where t.id = p_tx and t.owner = floor_caller_role()
        and t.owner_sub is not distinct from floor_caller_sub() and t.status = 'active'
    for update;
    if not found then
        raise exception using errcode = 'RZ001', message = 'no such transaction';
    end if;
    perform floor_begin_restore();
    select coalesce(array_agg(j.seq order by j.seq desc), '{}') into v_left
    from floor_journal j where j.tx = p_tx;
    while cardinality(v_left) > 0 loop
        v_next := '{}';
        foreach v_seq in array v_left loop
            select s.step into v_step from floor_journal j
            join floor_steps s on s.relation = j.relation
            where j.tx = p_tx and j.seq = v_seq;
            begin
                execute format('select %s($1, $2)', v_step::regproc) into n using p_tx, v_seq;
                done := done + n;
            exception when sqlstate 'RZ005' or unique_violation then
                v_next := v_next || v_seq;
            end;
        end loop;
        if cardinality(v_next) = cardinality(v_left) then
            raise exception using errcode = 'RZ005',
                message = format('%s statements have rows no longer as written',
                    cardinality(v_next));
        end if;
        v_left := v_next;
    end loop;
    delete from floor_journal j where j.tx = p_tx;
    update floor_tx set status = 'rolled_back' where id = p_tx;
    insert into floor_audit (event, tx, actor, detail)
    values ('rollback', p_tx, current_user, jsonb_build_object('rows', done));
    return done;
end $$;
-- The undo as the owner of the images (privilege separation: it restores
-- rows the caller may not write, as the package's does).
create or replace function floor_undo_separated(p_tx uuid) returns bigint language plpgsql
security definer set search_path = public, pg_temp as $$
begin
    return floor_undo(p_tx);
end $$;
"""

CONTRACT_IMAGES = """
create table {img} (tx uuid not null, seq bigint not null, claim boolean, k bigint,
    b {t}, a {t});
create unique index on {img} (k) where claim;
create index on {img} (tx, seq);
-- One statement back: its rows must still be as it wrote them (RZ005
-- otherwise; floor_undo retries it after the others).
create function {step}(p_tx uuid, p_seq bigint) returns bigint language plpgsql as $$
declare
    n bigint;
    restored bigint := 0;
    expected bigint;
begin
    update {t} t set ({cols}) = ({bcols}) from {img} i
    where i.tx = p_tx and i.seq = p_seq and i.b is not null and i.a is not null
        and t.id = (i.a).id and t *= i.a;
    get diagnostics n = row_count;
    restored := restored + n;
    delete from {t} t using {img} i
    where i.tx = p_tx and i.seq = p_seq and i.b is null and i.a is not null
        and t.id = (i.a).id and t *= i.a;
    get diagnostics n = row_count;
    restored := restored + n;
    insert into {t} select (i.b).* from {img} i
    where i.tx = p_tx and i.seq = p_seq and i.b is not null and i.a is null;
    get diagnostics n = row_count;
    restored := restored + n;
    select count(*) into expected from {img} i
    where i.tx = p_tx and i.seq = p_seq and (i.a is not null or i.b is not null);
    if restored <> expected then
        raise exception using errcode = 'RZ005',
            message = format('statement %s: %s of %s rows as written', p_seq, restored, expected);
    end if;
    delete from {img} i where i.tx = p_tx and i.seq = p_seq;
    return restored;
end $$;
insert into floor_steps values ({tname}::regclass, {stepname}::regprocedure)
on conflict (relation) do update set step = excluded.step;
create function {guard}() returns trigger language plpgsql as $$
begin
    if exists (select 1 from {img} i where i.claim) then
        raise exception using errcode = '55P03', message = 'the table has claims';
    end if;
    return null;
end $$;
create trigger {trg_truncate} before truncate on {t} for each statement execute function {guard}();
"""

# The claim an image row of key {key} takes in transaction v_tx: the first
# image of a key in the transaction claims it; a later one claims nothing.
# {first}: a test that shows every key is a first without the lookup. The
# lookup goes through the claim index (the transaction test is written so
# that no other index serves it), and the functions running it turn
# sequential scans off: planned once per session, an image table vacuumed
# between transactions looks empty, and a scan would read every image.
CLAIM_OF = (
    "case when {first} then true when exists (select 1 from {img} e where e.claim"
    " and e.k = {key} and (e.tx = v_tx) is true) then null else true end"
)

CONTRACT_STATEMENT = """
create function {cap}() returns trigger language plpgsql
{definer}set enable_seqscan = off as $$
declare
    v_tx uuid := floor_current_tx();
    v_seq bigint;
    v_rows bigint;
    v_first boolean;
begin
    if coalesce(current_setting('floor.restoring', true), '') <> '' and floor_restoring() then
        return null;
    end if;
    if v_tx is null then
        -- A plain write: only claimed keys (old or new) are off limits.
        if exists (select 1 from floor_claimed c where c.relation = tg_relid) then
            if tg_op = 'INSERT' then
                perform 1 from new_rows n
                where exists (select 1 from {img} i where i.claim and i.k = n.id);
            elsif tg_op = 'DELETE' then
                perform 1 from old_rows o
                where exists (select 1 from {img} i where i.claim and i.k = o.id);
            else
                perform 1 from (select o.id from old_rows o union all select n.id from new_rows n) w
                where exists (select 1 from {img} i where i.claim and i.k = w.id);
            end if;
            if found then
                raise exception using errcode = '55P03', message = 'claimed by another transaction';
            end if;
        end if;
        return null;
    end if;
    perform {check}(v_tx);
    if tg_op <> 'INSERT' and floor_uncaptured_actions(tg_relid, tg_op) then
        raise exception using errcode = '0A000',
            message = 'a foreign key action writes a table without capture';
    end if;
    v_seq := nextval('floor_seq');
    insert into floor_claimed values (tg_relid) on conflict do nothing;
    -- The transaction's first statement on the table: every key is a first.
    v_first := not exists (select 1 from {img} e where e.tx = v_tx);
    begin
        if tg_op = 'INSERT' then
            insert into {img} (tx, seq, claim, k, a)
            select v_tx, v_seq, {claim_n}, n.id, row(n.*)::{t} from new_rows n;
            get diagnostics v_rows = row_count;
        elsif tg_op = 'DELETE' then
            insert into {img} (tx, seq, claim, k, b)
            select v_tx, v_seq, {claim_o}, o.id, row(o.*)::{t} from old_rows o;
            get diagnostics v_rows = row_count;
        else
            -- Old and new rows pair by position (PostgreSQL appends a row's
            -- two versions in the same call); a key change claims the old
            -- key too, in a claim-only row.
            with u as (
                insert into {img} (tx, seq, claim, k, b, a)
                select v_tx, v_seq, {claim_a}, (w.a).id, w.b, w.a
                from (select unnest(array(select row(o.*)::{t} from old_rows o)) as b,
                             unnest(array(select row(n.*)::{t} from new_rows n)) as a) w
                returning k, (b).id as old_k
            ), moved as (
                insert into {img} (tx, seq, claim, k)
                select v_tx, v_seq, {claim_u}, u.old_k from u
                where u.old_k <> u.k and not exists (select 1 from u e where e.k = u.old_k)
            )
            select count(*) into v_rows from u;
        end if;
    exception when unique_violation then
        raise exception using errcode = '55P03', message = 'claimed by another transaction';
    end;
    with j as (
        insert into floor_journal values (v_tx, v_seq, tg_relid::regclass, lower(tg_op), v_rows)
    )
    insert into floor_audit (event, tx, actor, detail)
    values ('execute', v_tx, {actor}, jsonb_build_object('table', tg_relid::regclass::text,
        'operation', lower(tg_op), 'rows', v_rows));
    return null;
end $$;
"""

# Row-level: the statement's journal number on a stack in the setting
# floor.stack ("<top>|<below>|..."), so that a user trigger's nested
# statement on the same table gets its own: a number (captured), 'g' (a plain
# write to a table with claims: guard each row), 'r' (a restore's write),
# '0' (a plain write to a table without claims, pushed only inside another
# entry). A plain write to a table without claims pushes nothing and the row
# trigger's WHEN skips its rows; the closing trigger checks that no claim
# appeared on the table meanwhile (taken while the write waited on a row
# lock: refused, like a claimed key).
CONTRACT_ROW = """
create function {open}() returns trigger language plpgsql as $$
declare
    v_stack text := coalesce(current_setting('floor.stack', true), '');
    v_tx uuid;
    v_entry text;
begin
    if coalesce(current_setting('floor.restoring', true), '') <> '' and floor_restoring() then
        v_entry := 'r';
    else
        v_tx := floor_current_tx();
        if v_tx is not null then
            perform floor_check(v_tx);
            if tg_op <> 'INSERT' and floor_uncaptured_actions(tg_relid, tg_op) then
                raise exception using errcode = '0A000',
                    message = 'a foreign key action writes a table without capture';
            end if;
            insert into floor_claimed values (tg_relid) on conflict do nothing;
            v_entry := nextval('floor_seq')::text;
        elsif exists (select 1 from floor_claimed c where c.relation = tg_relid) then
            v_entry := 'g';
        elsif v_stack = '' then
            return null;
        else
            v_entry := '0';
        end if;
    end if;
    perform set_config('floor.stack', v_entry || '|' || v_stack, true);
    return null;
end $$;
create function {cap}() returns trigger language plpgsql
set enable_seqscan = off as $$
declare
    v_top text := split_part(current_setting('floor.stack', true), '|', 1);
    v_tx uuid;
begin
    if v_top = 'g' then
        if exists (select 1 from {img} i where i.claim and i.k in (old.id, new.id)) then
            raise exception using errcode = '55P03', message = 'claimed by another transaction';
        end if;
        return null;
    end if;
    v_tx := floor_current_tx();
    insert into {img} (tx, seq, claim, k, b, a)
    values (v_tx, v_top::bigint, {claim_row}, coalesce(new.id, old.id),
        case when tg_op <> 'INSERT' then old end, case when tg_op <> 'DELETE' then new end)
    on conflict (k) where claim do nothing;
    if not found then
        raise exception using errcode = '55P03', message = 'claimed by another transaction';
    end if;
    if tg_op = 'UPDATE' and new.id <> old.id then
        insert into {img} (tx, seq, claim, k)
        values (v_tx, v_top::bigint, {claim_old}, old.id)
        on conflict (k) where claim do nothing;
        if not found then
            raise exception using errcode = '55P03', message = 'claimed by another transaction';
        end if;
    end if;
    return null;
end $$;
create function {close}() returns trigger language plpgsql
set enable_seqscan = off as $$
declare
    v_stack text := coalesce(current_setting('floor.stack', true), '');
    v_top text := split_part(v_stack, '|', 1);
    v_tx uuid;
    v_rows bigint;
begin
    if v_stack <> '' then
        perform set_config('floor.stack', substr(v_stack, length(v_top) + 2), true);
    end if;
    if v_top in ('', '0') then
        if exists (select 1 from floor_claimed c where c.relation = tg_relid) then
            raise exception using errcode = '55P03',
                message = 'a claim was taken on the table during the write';
        end if;
        return null;
    elsif v_top in ('g', 'r') then
        return null;
    end if;
    v_tx := floor_current_tx();
    select count(*) into v_rows from {img} i
    where i.tx = v_tx and i.seq = v_top::bigint and (i.a is not null or i.b is not null);
    with j as (
        insert into floor_journal
        values (v_tx, v_top::bigint, tg_relid::regclass, lower(tg_op), v_rows)
    )
    insert into floor_audit (event, tx, actor, detail)
    values ('execute', v_tx, current_user, jsonb_build_object('table', tg_relid::regclass::text,
        'operation', lower(tg_op), 'rows', v_rows));
    return null;
end $$;
"""


def _contract_names(table: str) -> dict[str, str]:
    return {
        "img": f"{table}_img",
        "cap": f"{table}_cap",
        "open": f"{table}_open",
        "close": f"{table}_close",
        "step": f"{table}_undo_step",
        "guard": f"{table}_truncate_guard",
    }


def _claim_of(img: str, key: str, first: str = "v_first") -> sql.Composable:
    return sql.SQL(CLAIM_OF).format(img=ident(img), key=sql.SQL(key), first=sql.SQL(first))


def _contract_images(conn: psycopg.Connection[Any], table: str, columns: list[str]) -> None:
    names = _contract_names(table)
    conn.execute(CONTRACT_COMMON)
    conn.execute(
        sql.SQL(CONTRACT_IMAGES).format(
            cols=sql.SQL(", ").join(ident(c) for c in columns),
            bcols=sql.SQL(", ").join(sql.SQL("(i.b).{}").format(ident(c)) for c in columns),
            t=ident(table),
            img=ident(names["img"]),
            step=ident(names["step"]),
            guard=ident(names["guard"]),
            trg_truncate=ident(f"{table}_truncate"),
            tname=sql.Literal(sql.Identifier(table).as_string(conn)),
            stepname=sql.Literal(sql.Identifier(names["step"]).as_string(conn) + "(uuid, bigint)"),
        )
    )


def contract_statement(
    conn: psycopg.Connection[Any], table: str, columns: list[str], *, separated: bool = False
) -> None:
    """The contract by statement-level capture on `table` (id bigint key):
    image table, capture and truncate triggers, undo step; floor_undo(tx)
    undoes a transaction. `separated`: the capture runs as the owner of its
    images (SECURITY DEFINER, pinned search path) and takes the owner by
    the caller's role and JWT subject; floor_undo_separated undoes."""
    names = _contract_names(table)
    _contract_images(conn, table, columns)
    conn.execute(
        sql.SQL(CONTRACT_STATEMENT).format(
            definer=sql.SQL(
                "security definer set search_path = public, pg_temp\n" if separated else ""
            ),
            check=ident("floor_check_caller" if separated else "floor_check"),
            actor=sql.SQL("floor_caller_role()" if separated else "current_user"),
            cap=ident(names["cap"]),
            img=ident(names["img"]),
            t=ident(table),
            claim_n=_claim_of(names["img"], "n.id"),
            claim_o=_claim_of(names["img"], "o.id"),
            claim_a=_claim_of(names["img"], "(w.a).id"),
            claim_u=_claim_of(names["img"], "u.old_k"),
        )
    )
    statement_triggers(conn, table, names["cap"], ("insert", "update", "delete"))


def contract_separated(conn: psycopg.Connection[Any], table: str, columns: list[str]) -> None:
    """contract_statement with privilege separation (what the package owes
    and the two designs above leave out)."""
    contract_statement(conn, table, columns, separated=True)


def contract_row(conn: psycopg.Connection[Any], table: str, columns: list[str]) -> None:
    """The contract by row-level capture on `table` (id bigint key): image
    table, the three capture triggers and the truncate trigger, undo step;
    floor_undo(tx) undoes a transaction."""
    names = _contract_names(table)
    _contract_images(conn, table, columns)
    conn.execute(
        sql.SQL(CONTRACT_ROW).format(
            open=ident(names["open"]),
            cap=ident(names["cap"]),
            close=ident(names["close"]),
            img=ident(names["img"]),
            claim_row=_claim_of(names["img"], "coalesce(new.id, old.id)", "false"),
            claim_old=_claim_of(names["img"], "old.id", "false"),
        )
    )
    captured = "left(current_setting('floor.stack', true), 1) not in ('', '0', 'r')"
    for trigger in (
        "create trigger {trg_open} before insert or update or delete on {t}"
        " for each statement execute function {open}()",
        "create trigger {trg_row} after insert or update or delete on {t}"
        f" for each row when ({captured}) execute function {{cap}}()",
        "create trigger {trg_close} after insert or update or delete on {t}"
        " for each statement execute function {close}()",
    ):
        run(
            conn,
            trigger,
            t=table,
            trg_open=f"{table}_open",
            trg_row=f"{table}_row",
            trg_close=f"{table}_close",
            open=names["open"],
            cap=names["cap"],
            close=names["close"],
        )


# Locks on the tables of the two designs above (the same image layout):
# the row's image (before = after) is its claim, undone by floor_undo like
# any statement. Two ways: lock the row (FOR UPDATE NOWAIT), then write its
# claim, journal and audit rows in the same function; or lock it, then let
# the table's capture take a captured no-op UPDATE of the row.
# The claim of row r, locked by transaction v_tx: its image (before = after)
# whose claim is the first of its key in the transaction, or 55P03.
CLAIM_LOCKED_ROW = """
    v_seq := nextval('floor_seq');
    insert into floor_claimed values ({tname}::regclass) on conflict do nothing;
    insert into {img} (tx, seq, claim, k, b, a)
    values (v_tx, v_seq, {claim}, r.id, r, r)
    on conflict (k) where claim do nothing;
    if not found then
        raise exception using errcode = '55P03', message = 'claimed by another transaction';
    end if;"""


def _claim_locked_row(table: str) -> sql.Composable:
    return sql.SQL(CLAIM_LOCKED_ROW).format(
        tname=sql.Literal(table),
        img=ident(f"{table}_img"),
        claim=_claim_of(f"{table}_img", "r.id", "false"),
    )


CONTRACT_LOCKS = """
create function {lock}(p_tx uuid, p_id bigint) returns bigint language plpgsql
set enable_seqscan = off as $$
declare
    v_tx uuid := p_tx;
    v_seq bigint;
    r {t};
begin
    perform floor_check(v_tx);
    select t.* into r from {t} t where t.id = p_id for update nowait;
    if not found then
        return 0;
    end if;
{claim_row}
    with j as (insert into floor_journal values (v_tx, v_seq, {tname}::regclass, 'lock', 1))
    insert into floor_audit (event, tx, actor, detail)
    values ('execute', v_tx, current_user, jsonb_build_object('table', {tname}, 'operation', 'lock',
        'rows', 1));
    return 1;
end $$;
create function {touch}(p_tx uuid, p_id bigint) returns bigint language plpgsql as $$
declare
    n bigint;
begin
    perform floor_check(p_tx);
    perform 1 from {t} t where t.id = p_id for update nowait;
    if not found then
        return 0;
    end if;
    perform set_config('floor.tx', p_tx::text, true);
    update {t} t set id = t.id where t.id = p_id;
    get diagnostics n = row_count;
    perform set_config('floor.tx', '', true);
    return n;
end $$;
"""


def contract_locks(conn: psycopg.Connection[Any], table: str) -> tuple[str, str]:
    """The two locks of one row by key on a table of contract_statement or
    contract_row: (lock and claim in one function, lock and a captured
    no-op UPDATE); returns their names."""
    lock, touch = f"floor_lock_claim_{table}", f"floor_lock_update_{table}"
    conn.execute(
        sql.SQL(CONTRACT_LOCKS).format(
            lock=ident(lock),
            touch=ident(touch),
            t=ident(table),
            tname=sql.Literal(table),
            claim_row=_claim_locked_row(table),
        )
    )
    return lock, touch


# The lock above with three pieces of the contract it leaves out, to see
# what they cost (issue 11 (f)): the caller's rights apply to the row lock
# (a SECURITY INVOKER entry) while the claim, journal and audit rows are
# written by a SECURITY DEFINER function with a pinned search path (their
# tables need not be writable by the caller); the owner is the caller's
# role and JWT subject (as PostgREST sets them); a lazy probe for expired
# transactions (one index probe; a real reaper would undo what it finds).
CONTRACT_LOCK_FULL = """
create function {claim_fn}(p_tx uuid, r {t}) returns bigint language plpgsql
security definer set search_path = public, pg_temp as $$
declare
    v_tx uuid := p_tx;
    v_seq bigint;
begin
    -- The lazy reap probe: one index probe when nothing expired.
    perform 1 from floor_tx t where t.status = 'active' and t.expires_at < clock_timestamp()
    limit 1;
    perform 1 from floor_tx t
    where t.id = v_tx and t.owner = floor_caller_role()
        and t.owner_sub is not distinct from floor_caller_sub()
        and t.status = 'active' and t.expires_at > clock_timestamp()
    for share;
    if not found then
        raise exception using errcode = 'RZ001', message = 'no such transaction';
    end if;
{claim_row}
    with j as (insert into floor_journal values (v_tx, v_seq, {tname}::regclass, 'lock', 1))
    insert into floor_audit (event, tx, actor, detail)
    values ('execute', v_tx, floor_caller_role(), jsonb_build_object('table', {tname},
        'operation', 'lock', 'rows', 1, 'sub', floor_caller_sub()));
    return 1;
end $$;
create function {lock}(p_tx uuid, p_id bigint) returns bigint language plpgsql as $$
declare
    r {t};
begin
    select t.* into r from {t} t where t.id = p_id for update nowait;
    if not found then
        return 0;
    end if;
    return {claim_fn}(p_tx, r);
end $$;
"""


def contract_lock_full(conn: psycopg.Connection[Any], table: str) -> str:
    """The lock of contract_locks with the caller's rights on the row, the
    owner's JWT subject, a lazy reap probe and a SECURITY DEFINER claim, on
    a table of contract_statement or contract_row; returns its name."""
    lock = f"floor_lock_full_{table}"
    conn.execute(
        sql.SQL(CONTRACT_LOCK_FULL).format(
            lock=ident(lock),
            claim_fn=ident(f"floor_claim_full_{table}"),
            t=ident(table),
            tname=sql.Literal(table),
            claim_row=_claim_locked_row(table),
        )
    )
    return lock


# The lock of contract_lock_full with privilege separation kept whole, behind
# tx_execute's signature: a CASE dispatcher (table name, operation, match
# jsonb) calls the table's lock, which locks the matched row under the
# caller's rights and RLS (FOR UPDATE NOWAIT) and returns it as
# tx_execute does ({"success", "data", "count"}). The SECURITY DEFINER
# claim is handed only the row's (tableoid, ctid): it reads the row itself,
# and only if this database transaction locked it (xmax) and the caller may
# lock rows of the table (the xmax of a foreign key check's FOR KEY SHARE
# asks for no privilege), so no caller can make it write an image of a row
# of its own making.
CONTRACT_LOCK_SEPARATED = """
create function {claim_fn}(p_tx uuid, p_tableoid oid, p_ctid tid) returns bigint language plpgsql
security definer set search_path = public, pg_temp set enable_seqscan = off as $$
declare
    v_tx uuid := p_tx;
    v_seq bigint;
    r {t};
begin
    -- The lazy reap probe: one index probe when nothing expired.
    perform 1 from floor_tx t where t.status = 'active' and t.expires_at < clock_timestamp()
    limit 1;
    perform floor_check_caller(v_tx);
    if not has_any_column_privilege(floor_caller_role(), {tname}::regclass, 'UPDATE') then
        raise exception using errcode = '42501', message = 'permission denied to lock rows';
    end if;
    select t.* into r from {t} t
    where t.ctid = p_ctid and t.tableoid = p_tableoid and t.xmax = pg_current_xact_id()::xid;
    if not found then
        raise exception using errcode = '55P03',
            message = 'the row must be locked by this statement';
    end if;
{claim_row}
    with j as (insert into floor_journal values (v_tx, v_seq, {tname}::regclass, 'lock', 1))
    insert into floor_audit (event, tx, actor, detail)
    values ('execute', v_tx, floor_caller_role(), jsonb_build_object('table', {tname},
        'operation', 'lock', 'rows', 1, 'sub', floor_caller_sub()));
    return 1;
end $$;
create function {lock}(p_tx uuid, p_match jsonb) returns jsonb language plpgsql
set enable_seqscan = off as $$
declare
    v_oid oid;
    v_ctid tid;
    v_row jsonb;
    n bigint := 0;
begin
    if jsonb_typeof(p_match) is distinct from 'object' or not p_match ? 'id'
        or p_match - 'id' <> '{{}}'::jsonb then
        raise exception using errcode = '22023', message = 'match the key: {{"id": ...}}';
    end if;
    select t.tableoid, t.ctid, to_jsonb(t.*) into v_oid, v_ctid, v_row from {t} t
    where t.id = (p_match ->> 'id')::bigint for update nowait;
    if found then
        n := {claim_fn}(p_tx, v_oid, v_ctid);
    end if;
    return jsonb_build_object('success', true,
        'data', case when n = 0 then '[]'::jsonb else jsonb_build_array(v_row) end, 'count', n);
end $$;
create function {dispatch}(p_tx uuid, p_table text, p_op text, p_data jsonb default null,
    p_match jsonb default null) returns jsonb language plpgsql as $$
begin
    case p_table || ':' || p_op
        when {tname} || ':lock' then return {lock}(p_tx, p_match);
        else raise exception using errcode = '22023', message = 'unknown table or operation';
    end case;
end $$;
"""


def contract_lock_separated(conn: psycopg.Connection[Any], table: str) -> str:
    """The privilege-separated lock of one row by key, behind a CASE
    dispatcher with tx_execute's signature, on a table of contract_separated
    (or contract_statement, contract_row); returns the dispatcher's name."""
    dispatch = f"floor_execute_{table}"
    conn.execute(
        sql.SQL(CONTRACT_LOCK_SEPARATED).format(
            claim_fn=ident(f"floor_claim_separated_{table}"),
            lock=ident(f"floor_lock_separated_{table}"),
            dispatch=ident(dispatch),
            t=ident(table),
            tname=sql.Literal(table),
            claim_row=_claim_locked_row(table),
        )
    )
    return dispatch
