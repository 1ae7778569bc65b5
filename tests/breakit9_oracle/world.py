"""A hostile schema for the real-ROLLBACK oracle: every kind of column the
package must round-trip, and every kind of table it must restore.

`SCHEMA` runs statement by statement (autocommit), `manage_table` comes
next, and `AFTER_MANAGE` changes types and tables the package already
generated code for (an enum value added, a partition attached)."""

from __future__ import annotations

SCHEMA = [
    "create type mood as enum ('sad', 'ok')",
    'create type pair as (x int, "t" text, j jsonb)',
    "create domain dpair as pair check ((value).x is null or (value).x >= 0)",
    "create type floatrange as range (subtype = float8, subtype_diff = float8mi)",
    "create type moodrange as range (subtype = mood)",
    "create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    """create table zoo (
        id int primary key,
        i2 int2, i8 int8, num numeric, num_s numeric(10, 3), f4 real, f8 float8, mon money,
        txt text, vc varchar(12), ch char(4), by bytea, bo bool,
        dt date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
        js json, jb jsonb, xm xml, uu uuid, ip inet, cd cidr, mac macaddr, mac8 macaddr8,
        bt bit(4), vb varbit, tsv tsvector, tsq tsquery,
        pt point, bx box, pth path, pg polygon, cir circle, ls lseg, ln line,
        r4 int4range, mr int4multirange, nr numrange, tr tstzrange, fr floatrange,
        mrr moodrange, md mood, mds mood[], pr pair, prs pair[], dp dpair,
        ia int[], ta text[], lsn pg_lsn,
        gen text generated always as (coalesce(txt, '') || '/' || coalesce(vc, '')) stored,
        ident bigint generated always as identity
    )""",
    # A text key under a nondeterministic collation, in a composite key whose
    # other columns may be NULL-able around it.
    """create table ckey (
        name text collate ci, n int, note text collate "C", extra jsonb, flag bool,
        primary key (name, n)
    )""",
    "create table idt (id bigint generated always as identity primary key, v text, w int[])",
    # Rows move between partitions on UPDATE of region; part_b has its
    # columns in another order and a dropped column.
    """create table part (id int, region text, v numeric, s text, primary key (id, region))
       partition by list (region)""",
    "create table part_a partition of part for values in ('a')",
    "create table part_d partition of part default",
    # Triggers written as docs/transactions.md says: they skip restores.
    "create table bt (id int primary key, name text, norm text, version int not null default 0)",
    """create table bt_log (
        id bigint generated always as identity primary key, bt_id int, what text, name text
    )""",
    """create function public.bt_before() returns trigger language plpgsql as $$
    begin
        if current_setting('resilience.restoring', true) <> '' then
            return new;
        end if;
        new.norm := lower(new.name);
        new.version := case when tg_op = 'UPDATE' then old.version + 1 else 1 end;
        return new;
    end $$""",
    """create function public.bt_after() returns trigger language plpgsql as $$
    begin
        if current_setting('resilience.restoring', true) <> '' then
            return null;
        end if;
        if tg_op = 'DELETE' then
            insert into public.bt_log (bt_id, what, name) values (old.id, tg_op, old.name);
        else
            insert into public.bt_log (bt_id, what, name) values (new.id, tg_op, new.name);
        end if;
        return null;
    end $$""",
    """create trigger bt_before before insert or update on bt
       for each row execute function public.bt_before()""",
    """create trigger bt_after after insert or update or delete on bt
       for each row execute function public.bt_after()""",
    # Deferred unique and foreign key.
    "create table dpar (id int primary key, u int unique deferrable initially deferred)",
    """create table dchild (
        id int primary key,
        pid int references dpar deferrable initially deferred
    )""",
    # A cascade chain between managed tables.
    "create table c1p (id int primary key, v text)",
    """create table c2 (
        id int primary key, pid int references c1p on delete cascade on update cascade, v text
    )""",
    """create table c3 (
        id int primary key, pid int references c2 on delete cascade on update cascade, v text
    )""",
    # Column (and table) names equal to the aliases of the generated SQL.
    """create table "t" (
        "t" int, "d" text, "m" int, "w" text, "j" jsonb, "n" numeric, "o" text, "i" int,
        "e" text, "x" text, "h" text, tx_id uuid, seq bigint, op text, claim bool,
        "b" text, "a" text, k1 int, c1 text, primary key (k1, c1)
    )""",
    # Keys whose equal values differ in their binary image.
    "create table nk (k numeric primary key, v text)",
    "create table fk8 (k float8 primary key, v int)",
    "create table jk (k jsonb primary key, v int)",
    "create table rk (k numrange primary key, v int)",
    "create table ak (k text[] primary key, t timestamptz)",
    # A schema and a table named with quotes, spaces and unicode; a NOT NULL
    # domain with a default.
    "create domain nn_text as text not null default 'dflt'",
    'create schema "Sch ü"',
    """create table "Sch ü"."Tab""le" (
        "Id" int primary key, "sel ect" nn_text, "ÿ" int[], "a""b" text
    )""",
]

MANAGED = [
    "zoo",
    "ckey",
    "idt",
    "part",
    "bt",
    "bt_log",
    "dpar",
    "dchild",
    "c1p",
    "c2",
    "c3",
    '"t"',
    "nk",
    "fk8",
    "jk",
    '"Sch ü"."Tab""le"',
]

AFTER_MANAGE = [
    "alter type mood add value 'happy'",
    "alter type mood add value 'meh' before 'ok'",
    "create table part_b (s text, dropme int, v numeric, region text not null, id int not null)",
    "alter table part_b drop column dropme",
    "alter table part attach partition part_b for values in ('b')",
]

# Column values as SQL input text (None is NULL): the hostile ones first.
BIG_TEXT = "".join(chr(0x41 + (i * 7919) % 26) for i in range(9000))
BIG_HEX = "".join(f"{(i * 2654435761) % 256:02x}" for i in range(6000))

VALUES: dict[str, list[str | None]] = {
    "smallint": ["-32768", "0", "32767"],
    "integer": ["-2147483648", "0", "7"],
    "bigint": ["-9223372036854775808", "9223372036854775807"],
    "numeric": ["NaN", "Infinity", "-Infinity", "-0", "1.000", "1e-30", "0.10"],
    "numeric(10,3)": ["1.5", "-0.000", "9999999.999"],
    "real": ["-0", "NaN", "Infinity", "-Infinity", "1.17549435e-38", "0.1"],
    "double precision": ["-0", "NaN", "Infinity", "-Infinity", "5e-324", "0.1"],
    "money": ["-92233720368547758.08", "0", "1.50"],
    "text": ["", "ü€😀", "quo'te\"back\\slash", "tab\tnew\nline", BIG_TEXT],
    "character varying(12)": ["", "  padded  ", "ünï"],
    "character(4)": ["a", "abcd", ""],
    "bytea": ["\\x", "\\x00ff00", "\\x" + BIG_HEX],
    "boolean": ["true", "false"],
    "date": ["infinity", "-infinity", "4713-01-01 BC", "2000-02-29"],
    "time without time zone": ["24:00:00", "00:00:00.000001"],
    "time with time zone": ["24:00:00-15:59", "12:00:00+03"],
    "timestamp without time zone": ["infinity", "-infinity", "2000-01-01 00:00:00.5"],
    "timestamp with time zone": [
        "infinity",
        "-infinity",
        "2000-01-01 00:00:00+14",
        "1970-01-01 00:00:00.000001+00",
    ],
    "interval": ["-178000000 years", "1 mon -1 day 1 sec", "0", "1 day -24 hours"],
    "json": ['{"b": 1,  "a": 2, "a": 3}', '"\\u00e9\\ud83d\\ude00"', "null", " [1.0e1 , -0] "],
    "jsonb": ['{"x": "\\u00e9\\ud83d\\ude00\\u2028"}', "null", "-0", "1.000", '{"a": [null, {}]}'],
    "xml": ['<a b="1">ü</a>', "just text", "<r/><r/>", ""],
    "uuid": ["00000000-0000-0000-0000-000000000000", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
    "inet": ["::1/128", "192.168.0.1/24", "::ffff:1.2.3.4"],
    "cidr": ["10.0.0.0/8", "::/0"],
    "macaddr": ["08:00:2b:01:02:03"],
    "macaddr8": ["08:00:2b:01:02:03:04:05", "08:00:2b:ff:fe:01:02:03"],
    "bit(4)": ["1010", "0000"],
    "bit varying": ["", "1", "1010101010101"],
    "tsvector": ["'a':1A 'b':2,3", "", "'ü' 'x y'"],
    "tsquery": ["a & !b", "'x' <-> 'y'"],
    "point": ["(0,-0)", "(NaN,1)", "(1e300,-1e300)"],
    "box": ["(1,1),(0,0)", "(-0,0),(0,0)"],
    "path": ["[(0,0),(1,1)]", "((0,0),(1,1),(2,0))"],
    "polygon": ["((0,0),(1,1),(2,0))"],
    "circle": ["<(0,0),1>", "<(1,-0),0>"],
    "lseg": ["[(0,0),(1,1)]"],
    "line": ["{1,-1,0}"],
    "int4range": ["empty", "[1,5)", "(,)", "[3,3]"],
    "int4multirange": ["{}", "{[1,2),[5,9)}"],
    "numrange": ["(-Infinity,Infinity)", "[1.0,1.00]", "empty"],
    "tstzrange": ["[-infinity,infinity)", "empty", "[2000-01-01 00:00+14,)"],
    "floatrange": ["[-0,0]", "(,1e308)", "empty"],
    "moodrange": ["[sad,ok]", "empty", "(sad,)"],
    "mood": ["sad", "ok"],
    "mood[]": ["{sad,NULL,ok}", "{}"],
    "pair": ['(1,"x,y","{""a"": 1}")', "(,,)", '(-1,"",null)'],
    "pair[]": ['{"(1,a,)","(,,)"}', "{}", "{NULL}"],
    "dpair": ['(1,z,"[]")', "(,,)"],
    "integer[]": ["{}", "{1,NULL}", "[0:1]={7,8}", "{{1,2},{3,4}}"],
    "text[]": ['{{"a b",NULL},{"\\"","NULL"}}', "{}", '{""}'],
    "pg_lsn": ["0/0", "FFFFFFFF/FFFFFFFF"],
    "nn_text": ["", "x"],
}

# Values only valid once AFTER_MANAGE added them.
LATE_VALUES: dict[str, list[str | None]] = {
    "mood": ["happy", "meh"],
    "mood[]": ["{meh,happy}"],
    "moodrange": ["[meh,happy]"],
}

_IDS = ["1", "2", "3", "4", "5"]

# Primary key values: a small pool, so that writes meet existing rows.
KEYS: dict[str, dict[str, list[str]]] = {
    "zoo": {"id": _IDS},
    "ckey": {"name": ["abc", "ABC", "ß", "ss", "x"], "n": ["1", "2"]},
    "idt": {},
    "part": {"id": ["1", "2", "3"], "region": ["a", "b", "c", "zz"]},
    "bt": {"id": _IDS},
    "bt_log": {},
    "dpar": {"id": _IDS},
    "dchild": {"id": _IDS},
    "c1p": {"id": _IDS},
    "c2": {"id": _IDS},
    "c3": {"id": _IDS},
    "t": {"k1": ["1", "2", "3"], "c1": ["a", "b", "A"]},
    "nk": {"k": ["1", "1.0", "1.00", "-0", "0", "NaN", "Infinity"]},
    "fk8": {"k": ["0", "-0", "NaN", "Infinity", "1e-300"]},
    "jk": {"k": ["1.0", "1.00", '{"a": 1}', '"x"', "null", "[]"]},
    "rk": {"k": ["[1.0,2)", "[1.00,2.0)", "empty", "(,)", "[NaN,NaN]"]},
    "ak": {"k": ["{}", "{a,NULL}", "[0:1]={a,b}", "{a,b}", '{""}']},
    'Tab"le': {"Id": ["1", "2", "3"]},
}

# Columns whose values must meet other rows (unique, foreign keys).
COLUMN_VALUES: dict[tuple[str, str], list[str | None]] = {
    ("dpar", "u"): ["1", "2", "3", "4", "5", None],
    ("dchild", "pid"): ["1", "2", "3", "4", "5", "6", None],
    ("c2", "pid"): ["1", "2", "3", "4", "5", None],
    ("c3", "pid"): ["1", "2", "3", "4", "5", None],
    ("bt", "name"): ["Ab", "CD", "ü", None],
    ("bt_log", "bt_id"): ["1", "2"],
}
