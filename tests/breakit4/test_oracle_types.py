"""Oracle over every kind of column value: a logical rollback must leave
each row exactly as a real ROLLBACK does (``row::text`` compared, ordered by
key), whatever the session settings of the calls that captured and undid.

The seeded rows hold the values whose text is not their identity: numeric
scale (1.0 vs 1.00), NaN and infinities, float -0, money, bit strings, bytea,
multi-dimensional arrays with NULLs, ranges and multiranges, json with
duplicate keys and whitespace (json keeps its text), jsonb null apart from
SQL NULL, xml, tsvector, interval, timetz, network types, uuid, enum, a
domain over a composite, a composite, an uncompressible TOASTed text over
1 MB, a case-insensitive (nondeterministic ICU) unique text, a point."""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import begin, call, rows_text
from .oracle import Step, run_logical, run_real

SCHEMA = """
create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
create type mood as enum ('calm', 'angry');
create type pair as (x int, y text);
create domain pos_pair as pair check ((value).x is null or (value).x >= 0);
create table wide (
    id int primary key,
    n numeric, f8 float8, f4 float4, m money, bt bit(4), vb varbit, by bytea,
    ia int[], ta text[], r int4range, mr int4multirange, j json, jb jsonb, x xml,
    tv tsvector, iv interval, tt timetz, ip inet, cn cidr, mac macaddr, u uuid,
    e mood, dp pos_pair, cp pair, big text, ci text collate ci unique, pt point
);
select resilience.manage_table('wide');
"""

SEED = r"""
insert into wide values
 (1, '1.00', '-0', 'NaN', '12.34', B'1010', B'1', '\x00ff', '{{1,NULL},{3,4}}',
  '{"a b",NULL,"\"q\"",""}', '[1,5)', '{[1,3),[5,7)}', '{"a":1, "a" :  2 }',
  '{"a": null}', '<a b="1"/><!-- c -->', 'a:1 b:2', '1 mon -1 day 00:00:01.5',
  '12:00:00.000001+05:30', '10.0.0.1/8', '10.0.0.0/8', '08:00:2b:01:02:03',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'angry', '(1,"x y")', '(,)',
  (select string_agg(md5(g::text), '') from generate_series(1, 40000) as g),
  'Straße', '(1.5,-0)'),
 (2, 'NaN', 'Infinity', '-Infinity', '-0.01', B'0000', B'', '\x', '{}',
  '{NULL}', 'empty', '{}', '  [ ]  ', 'null', 'text only', '', '-1 year +3 mon',
  '00:00+00', '::1/128', '::/0', 'ff:ff:ff:ff:ff:ff',
  '00000000-0000-0000-0000-000000000000', 'calm', '(0,)', '(1,"")', '', 'x', '(0,0)'),
 (3, '-Infinity', '1e-310', '3.4e38', '0', B'1111', B'0101010101', '\x5c00',
  '[0:1]={7,8}', '{"NULL"}', '(,)', '{(,)}', '"\u00e9 \ud83d\ude00"', '{"k": [1, 1.0, 1.00]}',
  '<?xml version="1.0"?><r/>', 'x:1A', '00:00:00', '24:00:00-15:59',
  '192.168.1.1', '192.168.1.0/24', '00:00:00:00:00:00',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', null, null, null, null, null, null),
 (4, '0.000000000000000000001000', null, null, null, null, null, null, null, null,
  null, null, 'null', null, null, null, null, null, null, null, null, null, null,
  null, null, null, 'STRASSE-not', null),
 (5, null, null, null, null, null, null, null, null, null, null, null, null,
  null, null, null, null, null, null, null, null, null, null, null, null, null,
  null, null);
"""

# JSON values tx_execute receives (strings go through the type's input).
VALUES: dict[str, list[Any]] = {
    "n": ["1.0", "1.00", "NaN", "-Infinity", 0, 1e-5, "123456789012345678901234567890.5"],
    "f8": ["-0", "NaN", "Infinity", 1.5, 0],
    "f4": ["-0", "NaN", 3.25],
    "m": ["1.5", "-0.01", 0],
    "bt": ["0101", "1111"],
    "vb": ["", "1", "000111000"],
    "by": ["\\x00", "\\x", "\\xdeadbeef"],
    "ia": [[1, None], [[1, 2], [3, None]], []],
    "ta": [["x", None, ""], ["NULL"]],
    "r": ["[1,1)", "(,)", "[2,9]"],
    "mr": ["{}", "{[1,2),[4,5)}"],
    "j": [{"a": 1}, None, "s", [1, 1.0]],
    "jb": [{"a": None}, "x", [], None],
    "x": ["<b/>", "plain"],
    "tv": ["b:3 a:1", ""],
    "iv": ["1 day", "-00:00:00.000001", "P1Y2M"],
    "tt": ["23:59:59.999999-12", "01:00+14"],
    "ip": ["10.0.0.2", "::ffff:1.2.3.4/96"],
    "cn": ["10.1.0.0/16"],
    "mac": ["01:02:03:04:05:06"],
    "u": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"],
    "e": ["calm", "angry", None],
    "dp": [{"x": 2, "y": "q"}, {"x": None, "y": None}],
    "cp": [{"x": -1, "y": "z"}],
    "big": ["small", "y" * 3000],
    "ci": ["strasse", "STRASSE", "Straße", "new", None],
    "pt": ["(0,-0)", "(1e300,NaN)"],
}

COLUMNS = sorted(VALUES)


def _row_values(count: int) -> st.SearchStrategy[dict[str, Any]]:
    columns = st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=count, unique=True)
    return columns.flatmap(
        lambda cs: st.fixed_dictionaries({c: st.sampled_from(VALUES[c]) for c in cs})
    )


KEYS = st.integers(min_value=1, max_value=7)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Step], str]:
    steps: list[Step] = []
    alive: list[str] = []  # savepoints a SQL ROLLBACK TO could still reach
    for _ in range(draw(st.integers(min_value=1, max_value=7))):
        kind = draw(
            st.sampled_from(
                ["update", "update", "delete", "insert", "upsert", "lock", "rekey", "save", "back"]
            )
        )
        if kind == "update":
            steps.append(Step("update", draw(_row_values(4)), {"id": draw(KEYS)}))
        elif kind == "rekey":
            old, new = draw(KEYS), draw(KEYS)
            steps.append(Step("update", {"id": new}, {"id": old}))
        elif kind == "delete":
            steps.append(Step("delete", match={"id": draw(KEYS)}))
        elif kind in ("insert", "upsert"):
            steps.append(Step(kind, {"id": draw(KEYS)} | draw(_row_values(5))))
        elif kind == "lock":
            steps.append(Step("lock", match={"id": draw(KEYS)}))
        elif kind == "save":
            name = draw(st.sampled_from(["a", "b", "c"]))
            if name in alive:
                alive.remove(name)
            alive.append(name)
            steps.append(Step("savepoint", name=name))
        elif alive:
            name = draw(st.sampled_from(alive))
            del alive[alive.index(name) + 1 :]  # SQL destroys the later ones
            steps.append(Step("rollback_to", name=name))
    ending = draw(st.sampled_from(["rollback", "commit"]))
    return steps, ending


ODD_SETTINGS = """
set datestyle = 'SQL, DMY'; set intervalstyle = 'sql_standard';
set timezone = 'Asia/Kathmandu'; set extra_float_digits = 0; set bytea_output = 'escape';
"""
OTHER_SETTINGS = """
set datestyle = 'German'; set intervalstyle = 'iso_8601';
set timezone = 'America/St_Johns'; set extra_float_digits = 1; set xmloption = document;
"""


def test_logical_rollback_equals_real_rollback_for_every_type(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(SCHEMA)
    conn.execute("set extra_float_digits = 3")
    with (
        psycopg.connect(dsn, autocommit=True) as calls,
        psycopg.connect(dsn, autocommit=True) as ender,
    ):
        calls.execute(ODD_SETTINGS)
        ender.execute(OTHER_SETTINGS)

        def snapshot() -> list[str]:
            return rows_text(conn, "wide", "id")

        def real_snapshot() -> list[str]:
            # inside the real transaction, read with the observer's settings
            calls.execute(
                "set local datestyle to default; set local intervalstyle to default;"
                " set local timezone to default; set local bytea_output to default;"
                " set local extra_float_digits = 3"
            )
            return rows_text(calls, "wide", "id")

        @settings(derandomize=True, max_examples=40, deadline=None, database=None)
        @given(scenarios())
        def check(scenario: tuple[list[Step], str]) -> None:
            steps, ending = scenario
            conn.execute("truncate wide")
            conn.execute(SEED)
            before = snapshot()
            reached, real_errors = run_real(calls, "wide", steps, real_snapshot)
            assert snapshot() == before
            tx = begin(calls)
            try:
                logical_errors = run_logical(calls, tx, "wide", steps)
                assert logical_errors == real_errors
                assert snapshot() == reached
                if ending == "rollback":
                    result = call(ender, "tx_rollback", tx)
                    assert result["success"] is True, result
                    assert snapshot() == before
                else:
                    call(ender, "tx_commit", tx)
                    assert snapshot() == reached
            finally:
                # a failed example must not leave claims for the next one
                conn.execute(
                    "select resilience.tx_rollback(id, 'cleanup', true)"
                    " from resilience.transactions where id = %s and status = 'active'",
                    (tx,),
                )

        check()
