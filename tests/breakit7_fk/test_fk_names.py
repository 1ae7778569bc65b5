"""Hostile names: tables, columns and foreign keys named like the aliases and
columns of our generated SQL (p, t, i, e, a, b, k1, c1, tx_id, seq, op),
quotes, unicode, reserved words, and partitions whose attribute numbers are
not their parent's: the refusal names the foreign key exactly, the
transaction's own rows never count, and the rollback goes through once
their rows are gone. (docs/transactions.md, "Rollback".)"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from .test_fk_refusals import begin, execute, manage, refused_fks, rollback, rows

HOSTILE_FK = 'x" or 1=1 --; ë'

NAMES = [
    # parent, parent key, referenced unique column, child, child key, fk columns
    ("p", "k1", "b", "t", "a", ("tx_id", "seq")),
    ("i", "c1", "op", "e", "i", ("p", "t")),
    ("select", "a", "seq", "Ünï cödé", "b", ("k1", 'we"ird')),
]


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.mark.parametrize(("parent", "pk", "unique", "child", "ck", "fkcols"), NAMES)
def test_refusal_names_the_fk_and_own_rows_never_count_whatever_the_names(
    conn: psycopg.Connection[Any],
    dsn: str,
    parent: str,
    pk: str,
    unique: str,
    child: str,
    ck: str,
    fkcols: tuple[str, str],
) -> None:
    ident = sql.Identifier
    conn.execute(
        sql.SQL(
            "create table {p} ({pk} integer primary key, {u} integer unique);"
            " create table {c} ({ck} integer primary key, {f1} integer, {f2} integer,"
            "  constraint {fk1} foreign key ({f1}) references {p} on delete cascade,"
            "  constraint {fk2} foreign key ({f2}) references {p} ({u}) on update set null);"
            " insert into {p} values (1, 100)"
        ).format(
            p=ident(parent),
            pk=ident(pk),
            u=ident(unique),
            c=ident(child),
            ck=ident(ck),
            f1=ident(fkcols[0]),
            f2=ident(fkcols[1]),
            fk1=ident(HOSTILE_FK),
            fk2=ident(HOSTILE_FK + "2"),
        )
    )
    # (tx_execute and regclass read "schema.name": a name is quoted there)
    parent_name, child_name = quoted(parent), quoted(child)
    manage(conn, parent_name, child_name)
    tx = begin(conn)
    execute(conn, tx, parent_name, "insert", {pk: 2, unique: 200})
    execute(conn, tx, parent_name, "update", {unique: 101}, {pk: 1})
    # the transaction's own child rows: they go back with it
    execute(conn, tx, child_name, "insert", {ck: 1, fkcols[0]: 2, fkcols[1]: 101})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute(sql.SQL("insert into {} values (10, 2, 101)").format(ident(child)))
        assert refused_fks(conn, tx) == [HOSTILE_FK, HOSTILE_FK + "2"]
        assert rows(conn, child) == ["(1,2,101)", "(10,2,101)"]
        other.execute(sql.SQL("delete from {} where {} = 10").format(ident(child), ident(ck)))
    assert rollback(conn, tx)["status"] == "rolled_back"
    assert rows(conn, parent) == ["(1,100)"]
    assert rows(conn, child) == []


def test_child_partition_numbered_differently_counts_their_rows_not_the_transactions(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    """The foreign key is on one partition of a managed child whose attribute
    numbers are not the parent table's: a row that referred to the new
    parent row before the transaction touched it is still theirs."""
    conn.execute(
        "create table parent (id integer primary key);"
        " create table child (id integer not null, note text, pid integer, primary key (id))"
        "  partition by range (id);"
        " create table child_low (gone integer, pid integer, note text, id integer not null);"
        " alter table child_low drop column gone;"
        " alter table child attach partition child_low for values from (0) to (100);"
        " alter table child_low add constraint low_parent foreign key (pid)"
        "  references parent on delete cascade"
    )
    manage(conn, "parent", "child")
    tx = begin(conn)
    execute(conn, tx, "parent", "insert", [{"id": 1}, {"id": 2}])
    execute(conn, tx, "child", "insert", {"id": 1, "pid": 1})
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("insert into child (id, pid, note) values (10, 2, 'theirs')")
    execute(conn, tx, "child", "update", {"note": "touched"}, {"id": 10})
    assert refused_fks(conn, tx) == ["low_parent"]
    assert rows(conn, "child") == ["(1,,1)", "(10,touched,2)"]
