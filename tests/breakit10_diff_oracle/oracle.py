"""The oracle: PostgreSQL's own `pg_dump --schema-only`, taken before and
after a migration and split into objects by its `-- Name: X; Type: Y;
Schema: S` headers. An object whose dump text changed is a changed object;
the tracker must report exactly the objects (grouped by the relation,
function or enum type they belong to) whose text changed.

Documented mapping (docs/schema_tracking.md):
* a column, default, constraint, index, policy, RLS flag, partition attach
  of a table is a change of that table;
* grants (ACL), comments, triggers, sequences, schemas are not tracked;
* renames are reported as renames, and text that changed only because it
  names a renamed thing is not a change: the oracle applies the renames the
  migration made to the "before" dump before comparing.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgresilience.embedded import find_bin_dir
from pgresilience.schema.diff import compute_changes

HEADER = re.compile(r"^-- Name: (.*); Type: (.*); Schema: (.*); Owner: .*$", re.M)
IGNORED_TYPES = {
    "ACL",
    "COMMENT",
    "TRIGGER",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "SCHEMA",
    "EXTENSION",
    "DEFAULT ACL",
    "DOMAIN",
}
RELATION_TYPES = {"TABLE", "VIEW", "MATERIALIZED VIEW"}
# Tracker change types that say "renamed" (the oracle sees them as no change
# once the renames are applied to the before dump).
RENAME_RULES = {"policy_renamed"}

Key = tuple[str, str, str]  # (type, schema, name)


def pg_dump(dsn: str) -> str:
    out = subprocess.run(
        [str(find_bin_dir() / "pg_dump"), "--schema-only", "-N", "resilience", "-d", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def parse_dump(text: str) -> dict[Key, str]:
    objects: dict[Key, str] = {}
    matches = list(HEADER.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        lines = [
            line
            for line in text[m.end() : end].splitlines()
            if line.strip() and not line.startswith(("--", "\\", "SET "))
        ]
        objects[(m.group(2), m.group(3), m.group(1))] = "\n".join(lines)
    return objects


def index_tables(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], str]:
    """(schema, index name) -> table name, for every index outside pg_*."""
    rows = conn.execute(
        "select n.nspname, c.relname, t.relname from pg_index i"
        " join pg_class c on c.oid = i.indexrelid join pg_class t on t.oid = i.indrelid"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema'"
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


@dataclass
class Snapshot:
    objects: dict[Key, str]
    indexes: dict[tuple[str, str], str]
    version: int = 0
    hash: str = ""

    @classmethod
    def take(cls, dsn: str, conn: psycopg.Connection[Any]) -> Snapshot:
        return cls(parse_dump(pg_dump(dsn)), index_tables(conn))


@dataclass
class Renames:
    """Identifier substitutions the migration made (old -> new), applied to
    the before dump as whole words; `literals` are quoted enum values."""

    words: list[tuple[str, str]] = field(default_factory=list)
    literals: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, text: str, literals: bool = True) -> str:
        for old, new in self.words:
            text = re.sub(rf"(?<![\w$]){re.escape(old)}(?![\w$])", new, text)
        for old, new in self.literals if literals else ():
            text = text.replace(f"'{old}'", f"'{new}'")
        return text

    def apply_name(self, name: str) -> str:
        """In pg_dump's headers names are printed unquoted."""
        for old, new in self.words:
            plain = new.strip('"').replace('""', '"')
            if name == old:
                name = plain
            elif name.startswith((old + " ", old + "(")):  # "table constraint", "f(int)"
                name = plain + name[len(old) :]
            elif name.endswith(" " + old):
                name = name[: -len(old)] + plain
        return name

    def __bool__(self) -> bool:
        return bool(self.words or self.literals)


def _unit(key: Key, rels: dict[str, set[str]], indexes: dict[tuple[str, str], str]) -> str:
    kind, schema, name = key
    if kind in RELATION_TYPES or kind in ("ROW SECURITY", "TABLE ATTACH"):
        return f"{schema}.{name}"
    if kind in ("FUNCTION", "PROCEDURE"):
        return f"{schema}.{name.split('(', 1)[0]}()"
    if kind == "TYPE":
        return f"{schema}.{name}"
    if kind in ("INDEX", "INDEX ATTACH"):
        return f"{schema}.{indexes[(schema, name)]}"
    # "table object": DEFAULT, CONSTRAINT, FK CONSTRAINT, POLICY, RULE
    owners = [r for r in rels.get(schema, ()) if name.startswith(r + " ")]
    assert owners, f"no relation for {key}"
    return f"{schema}.{max(owners, key=len)}"


@dataclass
class Difference:
    changed: set[str]  # units whose text changed
    added: set[str]  # relations / functions / types that appeared
    dropped: set[str]
    keys: list[tuple[Key, str | None, str | None]] = field(default_factory=list)


def difference(before: Snapshot, after: Snapshot, renames: Renames) -> Difference:
    old = {
        (k[0], renames.apply_name(k[1]), renames.apply_name(k[2])): renames.apply(v, k[0] != "TYPE")
        for k, v in before.objects.items()
    }
    old_indexes = {
        (renames.apply_name(s), renames.apply_name(i)): renames.apply_name(t)
        for (s, i), t in before.indexes.items()
    }
    indexes = {**old_indexes, **after.indexes}
    rels: dict[str, set[str]] = {}
    for objects in (old, after.objects):
        for kind, schema, name in objects:
            if kind in RELATION_TYPES:
                rels.setdefault(schema, set()).add(name)
    diff = Difference(set(), set(), set())
    for key in set(old) | set(after.objects):
        if key[0] in IGNORED_TYPES or old.get(key) == after.objects.get(key):
            continue
        unit = _unit(key, rels, indexes)
        diff.changed.add(unit)
        diff.keys.append((key, old.get(key), after.objects.get(key)))
        if key[0] in RELATION_TYPES | {"FUNCTION", "PROCEDURE", "TYPE"}:
            if key not in old:
                diff.added.add(unit)
            elif key not in after.objects:
                diff.dropped.add(unit)
    return diff


def change_unit(change: dict[str, Any]) -> str:
    kind = change["type"]
    if kind.startswith("function_"):
        obj = change["object"]
        return obj.split("(", 1)[0] + "()"
    if kind.startswith("enum_"):
        return change["object"]
    return change["table"]


def is_rename(change: dict[str, Any]) -> bool:
    return (
        change["type"].endswith("_renamed")
        or change.get("rule") in RENAME_RULES
        # an enum type's rename is an enum_changed record (docs: severity rules)
        or str(change.get("reason", "")).startswith("type renamed")
    )


def rated_changes(conn: psycopg.Connection[Any], version: int) -> list[dict[str, Any]]:
    """The version's changes through the SQL API (rated there when the diff
    runs at the first read), checked against the client's diff of its deltas."""
    rows = [
        r[0] for r in conn.execute("select resilience.schema_changes_since(%s)", (version - 1,))
    ]
    row = next(r for r in rows if r["version"] == version)
    changes = row["changes"]
    if changes is None:  # no PL/Python: the client rates
        return compute_changes(row["deltas"])
    deltas = conn.execute(
        "select resilience._schema_diff_input(version, commands)::jsonb"
        " from resilience.schema_versions where version = %s",
        (version,),
    ).fetchone()[0]
    client = compute_changes(deltas)
    assert _sorted(client) == _sorted(changes), "the client's diff differs from the database's"
    return list(changes)


def _sorted(changes: list[dict[str, Any]]) -> list[str]:
    import json

    return sorted(json.dumps(c, sort_keys=True) for c in changes)
