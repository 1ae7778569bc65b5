"""Schema diff and severity: what changed between two schema snapshots, and how risky it is.

Stdlib only. This module runs in two places with the same code:

* inside PostgreSQL (plpython3u, Debian's system python3), loaded from
  ``resilience.plpython_modules`` by ``resilience._schema_diff(json)`` at commit;
* in the Python client (``pgresilience.schema``), where plpython3u is missing.

Input is a list of *deltas*, one per snapshot object whose canonical JSON
changed (see docs/schema_tracking.md for the snapshot format)::

    {"kind": "column", "id": "16384.2", "table_id": "16384",
     "old": {...} or None, "new": {...} or None}

Objects are keyed by identity (table OID, column attnum, constraint/index/policy
OID), never by name, so a rename shows up as the same id with a new name.

Output is a list of change dicts with the keys ``type``, ``table``, ``column``,
``old_value``, ``new_value``, ``severity``, ``reason`` (plus ``object``, the
qualified name of the object concerned, and, for type changes,
``rewrites_table``). Severity rules follow squawk, Atlas lint and
strong_migrations; the table is ``SEVERITY_RULES`` and docs/schema_tracking.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "CRITICAL",
    "HIGH",
    "LOW",
    "MEDIUM",
    "SEVERITIES",
    "SEVERITY_RULES",
    "canonical_json",
    "compute_changes",
    "max_severity",
    "object_hash",
    "plpython_diff",
    "schema_hash",
    "sorted_hash",
    "type_change_effect",
]

LOW, MEDIUM, HIGH, CRITICAL = "low", "medium", "high", "critical"
SEVERITIES = (LOW, MEDIUM, HIGH, CRITICAL)
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

Delta = Mapping[str, Any]
Change = dict[str, Any]

# (change type, situation, severity, source of the rule). Rendered into
# docs/schema_tracking.md; compute_changes() applies exactly these.
SEVERITY_RULES: tuple[tuple[str, str, str, str], ...] = (
    ("table_added", "new table", LOW, "-"),
    ("table_dropped", "data of the table is lost", CRITICAL, "squawk ban-drop-table; Atlas DS102"),
    (
        "table_renamed",
        "clients using the old name break",
        HIGH,
        "squawk renaming-table; Atlas BC101",
    ),
    ("table_changed", "SET LOGGED/UNLOGGED (rewrite)", HIGH, "strong_migrations"),
    ("table_changed", "partitioning / other table property", MEDIUM, "-"),
    ("column_added", "nullable, or constant default", LOW, "squawk adding-field-with-default"),
    ("column_added", "NOT NULL without default", HIGH, "squawk adding-required-field; Atlas MF103"),
    (
        "column_added",
        "volatile default, identity or stored generated (rewrite)",
        HIGH,
        "squawk adding-field-with-default; Atlas PG302; strong_migrations",
    ),
    (
        "column_dropped",
        "data of the column is lost",
        CRITICAL,
        "squawk ban-drop-column; Atlas DS103",
    ),
    (
        "column_renamed",
        "clients using the old name break",
        HIGH,
        "squawk renaming-column; Atlas BC102",
    ),
    (
        "column_type_changed",
        "rewrites the table (ACCESS EXCLUSIVE)",
        HIGH,
        "squawk changing-column-type; Atlas PG301; strong_migrations",
    ),
    (
        "column_type_changed",
        "narrowing (values may no longer fit)",
        HIGH,
        "Atlas data-dependent (MF) class",
    ),
    (
        "column_type_changed",
        "metadata only (e.g. widen varchar, varchar to text)",
        LOW,
        "strong_migrations safe list",
    ),
    (
        "nullability_changed",
        "SET NOT NULL (full scan, writers sending null break)",
        HIGH,
        "squawk adding-not-nullable-field; Atlas MF104, PG303",
    ),
    ("nullability_changed", "DROP NOT NULL", LOW, "-"),
    ("default_changed", "default dropped on a NOT NULL column", HIGH, "inserts omitting it fail"),
    ("default_changed", "other default change", LOW, "-"),
    ("column_changed", "identity, generated expression or collation", MEDIUM, "-"),
    (
        "constraint_added",
        "CHECK / FOREIGN KEY / UNIQUE / EXCLUDE validated at once",
        MEDIUM,
        "squawk constraint-missing-not-valid, adding-foreign-key-constraint, "
        "disallowed-unique-constraint; Atlas PG305, PG105",
    ),
    ("constraint_added", "added NOT VALID", LOW, "squawk constraint-missing-not-valid"),
    ("constraint_dropped", "UNIQUE or EXCLUDE dropped (a key is lost)", HIGH, "-"),
    (
        "constraint_dropped",
        "CHECK or FOREIGN KEY dropped (integrity guard lost)",
        MEDIUM,
        "Atlas CD101",
    ),
    ("constraint_renamed", "constraint renamed", LOW, "-"),
    ("constraint_changed", "validated, deferrability changed", LOW, "-"),
    (
        "primary_key_changed",
        "primary key added, dropped or replaced",
        HIGH,
        "squawk adding-serial-primary-key-field; Atlas PG104, PG304",
    ),
    ("index_added", "on a new table", LOW, "-"),
    (
        "index_added",
        "on an existing table (blocks writes unless CONCURRENTLY)",
        MEDIUM,
        "squawk require-concurrent-index-creation; Atlas PG101",
    ),
    ("index_dropped", "unique index dropped (a key is lost)", HIGH, "-"),
    (
        "index_dropped",
        "plain index dropped (queries may slow down)",
        MEDIUM,
        "squawk require-concurrent-index-deletion; Atlas PG102",
    ),
    ("index_renamed", "index renamed", LOW, "-"),
    ("rls_changed", "row level security disabled (rows exposed)", CRITICAL, "security exposure"),
    ("rls_changed", "row level security enabled (rows hidden without a policy)", HIGH, "-"),
    ("rls_changed", "FORCE row level security changed", MEDIUM, "-"),
    ("policy_changed", "restrictive policy dropped (rows exposed)", CRITICAL, "security exposure"),
    (
        "policy_changed",
        "permissive policy using (true) added (every row exposed)",
        CRITICAL,
        "security exposure",
    ),
    ("policy_changed", "permissive policy dropped, or policy expression/roles changed", HIGH, "-"),
    ("policy_changed", "policy added", MEDIUM, "-"),
    ("policy_changed", "policy renamed", LOW, "-"),
    ("view_added", "new view", LOW, "-"),
    ("view_dropped", "clients of the view break", HIGH, "-"),
    ("view_renamed", "clients using the old name break", HIGH, "-"),
    ("view_changed", "definition changed", MEDIUM, "-"),
    ("function_added", "new function", LOW, "-"),
    ("function_dropped", "rpc() callers break", HIGH, "-"),
    ("function_renamed", "rpc() callers break", HIGH, "-"),
    ("function_changed", "now SECURITY DEFINER", HIGH, "security"),
    ("function_changed", "body or attributes changed", MEDIUM, "-"),
    ("enum_added", "new enum type", LOW, "-"),
    ("enum_dropped", "enum type dropped", MEDIUM, "-"),
    ("enum_changed", "value added", LOW, "strong_migrations (safe since PG 12)"),
    ("enum_changed", "value removed or renamed, type renamed", HIGH, "-"),
)

# Output order within one table: structural changes first, as a reader expects.
_TYPE_ORDER = [
    "table_added", "table_renamed", "table_dropped", "table_changed", "rls_changed",
    "column_added", "column_renamed", "column_dropped", "column_type_changed",
    "nullability_changed", "default_changed", "column_changed", "primary_key_changed",
    "constraint_added", "constraint_renamed", "constraint_changed", "constraint_dropped",
    "index_added", "index_renamed", "index_dropped", "policy_changed",
    "view_added", "view_renamed", "view_changed", "view_dropped",
    "function_added", "function_renamed", "function_changed", "function_dropped",
    "enum_added", "enum_changed", "enum_dropped",
]  # fmt: skip


# --- canonical JSON and hashes ---------------------------------------------


def _jsonb_key(key: str) -> tuple[int, bytes]:
    # jsonb orders object keys by length first, then bytewise.
    raw = key.encode("utf-8")
    return (len(raw), raw)


def canonical_json(value: Any) -> str:
    """The text PostgreSQL prints for ``value::jsonb`` (``jsonb::text``).

    The database hashes exactly that text, so the client can recompute any
    object hash. Numbers are limited to integers (snapshots hold no floats).
    """
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: _jsonb_key(kv[0]))
        return (
            "{"
            + ", ".join(
                f"{json.dumps(k, ensure_ascii=False)}: {canonical_json(v)}" for k, v in items
            )
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"unsupported value in a snapshot object: {value!r}")


def object_hash(kind: str, data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``kind || ':' || canonical JSON``, as the database computes it."""
    return hashlib.sha256(f"{kind}:{canonical_json(data)}".encode()).hexdigest()


def sorted_hash(hashes: Iterable[str]) -> str:
    """SHA-256 (hex) over ``hashes`` sorted and concatenated."""
    return hashlib.sha256("".join(sorted(hashes)).encode("ascii")).hexdigest()


def schema_hash(objects: Iterable[tuple[Any, str]]) -> str:
    """The schema hash from ``(group, object_hash)`` pairs, as the database
    computes it: each group (a relation with everything on it, or one function
    or enum type) hashes its objects' sorted hashes; the schema hash is over
    the sorted group hashes."""
    groups: dict[Any, list[str]] = {}
    for group, digest in objects:
        groups.setdefault(group, []).append(digest)
    return sorted_hash(sorted_hash(digests) for digests in groups.values())


# --- column type changes ---------------------------------------------------

_TYPE_RE = re.compile(r"^(?P<base>[a-z ]+?)\((?P<args>[0-9, ]+)\)(?P<rest>[a-z ]*)$")
_TEXTUAL_UNLIMITED = {"text", "character varying"}
_PRECISION_TYPES = {
    "timestamp without time zone", "timestamp with time zone",
    "time without time zone", "time with time zone", "interval",
}  # fmt: skip


def _split_type(type_name: str) -> tuple[str, tuple[int, ...]]:
    """('character varying', (20,)) for 'character varying(20)'; typmods moved out.

    format_type() puts the typmod after the first word group:
    'timestamp(3) without time zone', 'numeric(10,2)'.
    """
    match = _TYPE_RE.match(type_name)
    if not match:
        return type_name, ()
    base = " ".join((match.group("base") + " " + match.group("rest")).split())
    args = tuple(int(a) for a in (match.group("args") or "").replace(" ", "").split(",") if a)
    return base, args


def type_change_effect(old: str, new: str) -> tuple[bool, bool]:
    """(rewrites_table, narrowing) for ``ALTER COLUMN ... TYPE`` from ``old`` to ``new``.

    Metadata-only changes are those PostgreSQL knows to be binary coercible
    without a check (strong_migrations' safe list): widening varchar, varchar
    to text, removing a length limit, raising numeric precision with the same
    scale, raising time precision, cidr to inet, widening bit varying.
    Everything else rewrites the table and its indexes.
    """
    if old == new:
        return False, False
    if old.endswith("[]") != new.endswith("[]"):
        return True, False
    if old.endswith("[]"):
        old_base, new_base = _split_type(old[:-2])[0], _split_type(new[:-2])[0]
        if {old_base, new_base} <= _TEXTUAL_UNLIMITED and "(" not in old + new:
            return False, False
        return True, False
    old_base, old_args = _split_type(old)
    new_base, new_args = _split_type(new)
    if old_base in _TEXTUAL_UNLIMITED and new_base in _TEXTUAL_UNLIMITED:
        if not new_args:
            return False, False  # to text or unlimited varchar
        if old_base == "character varying" and old_args:
            if new_args[0] >= old_args[0]:
                return False, False
            return True, True  # shorter varchar: every value re-checked
        return True, True  # text to varchar(n)
    if old_base == new_base == "numeric":
        if not new_args:
            return False, False  # to unconstrained numeric
        if not old_args:
            return True, True
        old_scale = old_args[1] if len(old_args) > 1 else 0
        new_scale = new_args[1] if len(new_args) > 1 else 0
        if old_scale == new_scale and new_args[0] >= old_args[0]:
            return False, False
        return True, new_args[0] < old_args[0] or new_scale < old_scale
    if old_base == new_base and old_base in _PRECISION_TYPES:
        if not new_args or (old_args and new_args[0] >= old_args[0]):
            return False, False
        return True, True
    if old_base == new_base == "bit varying":
        if not new_args or (old_args and new_args[0] >= old_args[0]):
            return False, False
        return True, True
    if (old_base, new_base) == ("cidr", "inet"):
        return False, False
    narrowing = _narrowing(old_base, new_base)
    return True, narrowing


_INT_WIDTH = {"smallint": 2, "integer": 4, "bigint": 8}


def _narrowing(old: str, new: str) -> bool:
    if old in _INT_WIDTH and new in _INT_WIDTH:
        return _INT_WIDTH[new] < _INT_WIDTH[old]
    lossy = {
        ("numeric", "integer"), ("numeric", "bigint"), ("numeric", "smallint"),
        ("double precision", "real"), ("double precision", "integer"),
        ("real", "integer"), ("timestamp with time zone", "date"),
        ("timestamp without time zone", "date"), ("text", "character"),
        ("character varying", "character"),
    }  # fmt: skip
    return (old, new) in lossy


_VOLATILE_DEFAULT = re.compile(
    r"\b(nextval|random|gen_random_uuid|uuid_generate_v[14]|clock_timestamp|timeofday)\s*\(",
    re.IGNORECASE,
)


# --- rename normalization --------------------------------------------------


class _Renames:
    """Identifier renames seen in this diff, to tell a text that changed only
    because something it mentions was renamed from a real change."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def add(self, old: str, new: str) -> None:
        if old != new:
            self.pairs.append((old, new))

    def without_rename_aliases(self, text: Any) -> Any:
        """PostgreSQL keeps a view's output names across a column rename by
        printing ``new_name AS old_name``: drop those aliases."""
        if not isinstance(text, str):
            return text
        for old, new in self.pairs:
            text = re.sub(rf"(?<![\w$]){re.escape(new)} AS {re.escape(old)}(?![\w$])", new, text)
        return text

    def normalize(self, text: Any) -> Any:
        if not isinstance(text, str):
            return text
        for old, new in self.pairs:
            text = re.sub(rf"(?<![\w$]){re.escape(old)}(?![\w$])", new, text)
        return text


def _qualified(data: Mapping[str, Any]) -> str:
    return f"{data['schema']}.{data['name']}"


def _change(
    type_: str,
    severity: str,
    reason: str,
    *,
    table: str | None,
    obj: str | None,
    column: str | None = None,
    old: Any = None,
    new: Any = None,
    **extra: Any,
) -> Change:
    change: Change = {
        "type": type_,
        "table": table,
        "column": column,
        "object": obj,
        "old_value": old,
        "new_value": new,
        "severity": severity,
        "reason": reason,
    }
    change.update(extra)
    return change


# --- the diff --------------------------------------------------------------


def compute_changes(deltas: Sequence[Delta]) -> list[Change]:
    """Change records for a list of snapshot deltas (see the module docstring)."""
    by_kind: dict[str, list[Delta]] = {}
    for delta in deltas:
        if delta.get("old") is None and delta.get("new") is None:
            continue
        by_kind.setdefault(str(delta["kind"]), []).append(delta)

    tables = {str(d["id"]): d for d in by_kind.get("table", [])}
    added = {tid for tid, d in tables.items() if d.get("old") is None}
    dropped = {tid for tid, d in tables.items() if d.get("new") is None}
    renames = _Renames()
    for d in tables.values():
        if d.get("old") and d.get("new"):
            renames.add(_qualified(d["old"]), _qualified(d["new"]))
            renames.add(d["old"]["name"], d["new"]["name"])
    for d in by_kind.get("column", []):
        if d.get("old") and d.get("new"):
            renames.add(d["old"]["name"], d["new"]["name"])
    for d in by_kind.get("enum", []):
        if d.get("old") and d.get("new"):
            renames.add(_qualified(d["old"]), _qualified(d["new"]))

    changes: list[Change] = []
    changes += _table_changes(tables, by_kind, renames)
    sub_objects = [
        ("column", _column_changes),
        ("constraint", _constraint_changes),
        ("index", _index_changes),
        ("policy", _policy_changes),
    ]
    whole_tables = added | dropped
    for kind, differ in sub_objects:
        for d in by_kind.get(kind, []):
            if str(d.get("table_id")) in whole_tables:
                continue  # implied by table_added / table_dropped
            changes += differ(d, renames, added)
    changes = _merge_primary_keys(changes)
    for d in by_kind.get("view", []):
        changes += _view_changes(d, renames)
    for d in by_kind.get("function", []):
        changes += _function_changes(d)
    for d in by_kind.get("enum", []):
        changes += _enum_changes(d)

    order = {name: i for i, name in enumerate(_TYPE_ORDER)}
    changes.sort(key=lambda c: (c["table"] or c["object"] or "", order.get(c["type"], 99)))
    return changes


def max_severity(changes: Iterable[Mapping[str, Any]]) -> str | None:
    """The highest severity among ``changes``, or None when there are none."""
    ranks = [_RANK[c["severity"]] for c in changes]
    return SEVERITIES[max(ranks)] if ranks else None


def _table_changes(
    tables: Mapping[str, Delta], by_kind: Mapping[str, list[Delta]], renames: _Renames
) -> list[Change]:
    changes: list[Change] = []
    new_columns: dict[str, list[Delta]] = {}
    for c in by_kind.get("column", []):
        if c.get("new"):
            new_columns.setdefault(str(c.get("table_id")), []).append(c)
    dropped = {
        "fk": [d for d in by_kind.get("constraint", [])
               if d.get("new") is None and d.get("old") and d["old"].get("references")],
        "view": [d for d in by_kind.get("view", []) if d.get("new") is None and d.get("old")],
    }  # fmt: skip
    for tid, d in tables.items():
        old, new = d.get("old"), d.get("new")
        if old is None:
            ordered = sorted(new_columns.get(tid, []), key=lambda c: _sub_id(c["id"]))
            columns = [{"name": c["new"]["name"], "type": c["new"]["type"]} for c in ordered]
            changes.append(_change(
                "table_added", LOW, f"new {new['kind']}",
                table=_qualified(new), obj=_qualified(new), new={"columns": columns},
            ))  # fmt: skip
            continue
        if new is None:
            name = _qualified(old)
            dependents = _dependents_dropped(name, tid, dropped)
            reason = "drops the table and its data"
            if dependents:
                reason += f"; also dropped with it: {', '.join(dependents)}"
            changes.append(
                _change("table_dropped", CRITICAL, reason, table=name, obj=name, old=name)
            )
            continue
        name = _qualified(new)
        if _qualified(old) != name:
            how = "moved to another schema" if old["schema"] != new["schema"] else "renamed"
            changes.append(_change(
                "table_renamed", HIGH, f"table {how}: clients using {_qualified(old)} break",
                table=name, obj=name, old=_qualified(old), new=name,
            ))  # fmt: skip
        if old.get("rls") != new.get("rls"):
            if new.get("rls"):
                changes.append(_change(
                    "rls_changed", HIGH,
                    "row level security enabled: rows without a matching policy are hidden",
                    table=name, obj=name, old=False, new=True,
                ))  # fmt: skip
            else:
                changes.append(_change(
                    "rls_changed", CRITICAL,
                    "row level security disabled: every row is visible to every role with grants",
                    table=name, obj=name, old=True, new=False,
                ))  # fmt: skip
        if old.get("rls_forced") != new.get("rls_forced"):
            changes.append(_change(
                "rls_changed", MEDIUM, "FORCE row level security changed (applies to the owner)",
                table=name, obj=name, old={"forced": old.get("rls_forced")},
                new={"forced": new.get("rls_forced")},
            ))  # fmt: skip
        if old.get("persistence") != new.get("persistence"):
            changes.append(_change(
                "table_changed", HIGH,
                f"table set {new.get('persistence')}: rewrites the table",
                table=name, obj=name, old=old.get("persistence"), new=new.get("persistence"),
            ))  # fmt: skip
        for key in ("kind", "partition_of", "partition_bound", "partition_key"):
            if renames.normalize(old.get(key)) != new.get(key):
                changes.append(_change(
                    "table_changed", MEDIUM, f"{key.replace('_', ' ')} changed",
                    table=name, obj=name, old={key: old.get(key)}, new={key: new.get(key)},
                ))  # fmt: skip
    return changes


def _sub_id(identity: Any) -> int:
    """The attnum of a column id 'reloid.attnum' (column order)."""
    _, _, sub = str(identity).partition(".")
    return int(sub) if sub.isdigit() else 0


def _dependents_dropped(name: str, tid: str, dropped: Mapping[str, list[Delta]]) -> list[str]:
    """Objects of other tables dropped together with table ``name`` (DROP ... CASCADE).
    ``dropped``: the dropped foreign keys and views of this diff."""
    found = [
        f"foreign key {d['old']['name']} on {d['old']['table']}"
        for d in dropped["fk"]
        if d["old"].get("references") == name and str(d.get("table_id")) != tid
    ]
    mention = re.compile(rf"(?<![\w$]){re.escape(name.split('.', 1)[1])}(?![\w$])")
    found += [
        f"{d['old']['kind']} {_qualified(d['old'])}"
        for d in dropped["view"]
        if mention.search(d["old"].get("definition") or "")
    ]
    return found


def _column_changes(d: Delta, renames: _Renames, added_tables: set[str]) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        table, column = new["table"], new["name"]
        rewrite = None
        if new.get("generated"):
            rewrite = "a stored generated column rewrites the table"
        elif new.get("identity"):
            rewrite = "an identity column fills every row: rewrites the table"
        elif new.get("default") and _VOLATILE_DEFAULT.search(new["default"]):
            rewrite = "a volatile default is evaluated for every row: rewrites the table"
        if rewrite:
            severity, reason = HIGH, rewrite
        elif new.get("not_null") and not new.get("default"):
            severity, reason = HIGH, "NOT NULL without a default: inserts that omit it fail"
        else:
            severity, reason = LOW, "new column"
        return [
            _change(
                "column_added",
                severity,
                reason,
                table=table,
                obj=table,
                column=column,
                new={k: new.get(k) for k in ("type", "not_null", "default")},
            )
        ]
    if new is None:
        table = old["table"]
        return [
            _change(
                "column_dropped",
                CRITICAL,
                "drops the column and its data",
                table=table,
                obj=table,
                column=old["name"],
                old=old["type"],
            )
        ]

    table, column = new["table"], new["name"]
    changes: list[Change] = []

    def add(
        type_: str, severity: str, reason: str, old_value: Any, new_value: Any, **extra: Any
    ) -> None:
        changes.append(
            _change(
                type_,
                severity,
                reason,
                table=table,
                obj=table,
                column=column,
                old=old_value,
                new=new_value,
                **extra,
            )
        )

    if old["name"] != new["name"]:
        add(
            "column_renamed",
            HIGH,
            f"clients using column {old['name']} break",
            old["name"],
            new["name"],
        )
    if renames.normalize(old["type"]) != new["type"]:  # not just a renamed enum type
        rewrites, narrowing = type_change_effect(old["type"], new["type"])
        if rewrites and narrowing:
            severity, reason = HIGH, "narrowing type change: rewrites the table, values may not fit"
        elif rewrites:
            severity, reason = HIGH, "type change rewrites the table under an ACCESS EXCLUSIVE lock"
        else:
            severity, reason = LOW, "type change is metadata only: no table rewrite"
        add(
            "column_type_changed",
            severity,
            reason,
            old["type"],
            new["type"],
            rewrites_table=rewrites,
        )
    if bool(old.get("not_null")) != bool(new.get("not_null")):
        if new.get("not_null"):
            add(
                "nullability_changed",
                HIGH,
                "SET NOT NULL scans the table under lock; writers sending null break",
                False,
                True,
            )
        else:
            add("nullability_changed", LOW, "column now accepts null", True, False)
    if renames.normalize(old.get("default")) != new.get("default") and old.get(
        "default"
    ) != new.get("default"):
        if old.get("default") and not new.get("default") and new.get("not_null"):
            add(
                "default_changed",
                HIGH,
                "default dropped on a NOT NULL column: inserts that omit it fail",
                old.get("default"),
                None,
            )
        else:
            add("default_changed", LOW, "default changed", old.get("default"), new.get("default"))
    for key in ("identity", "generated", "collation"):
        if old.get(key) != new.get(key):
            add(
                "column_changed", MEDIUM, f"{key} changed", {key: old.get(key)}, {key: new.get(key)}
            )
    return changes


_CONSTRAINT_KEYS = {"unique", "exclusion"}


def _constraint_changes(d: Delta, renames: _Renames, added_tables: set[str]) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        table, kind = new["table"], new["type"]
        if kind == "primary key":
            return [
                _change(
                    "primary_key_changed",
                    HIGH,
                    "primary key added: builds a unique index and scans under lock",
                    table=table,
                    obj=new["name"],
                    old=None,
                    new=new["definition"],
                )
            ]
        if not new.get("validated", True):
            severity, reason = LOW, f"{kind} added NOT VALID: existing rows not checked yet"
        elif kind in _CONSTRAINT_KEYS:
            severity, reason = MEDIUM, f"{kind} constraint builds an index under lock"
        else:
            severity, reason = (
                MEDIUM,
                (f"{kind} validated on every row under lock; add it NOT VALID, then VALIDATE"),
            )
        return [
            _change(
                "constraint_added",
                severity,
                reason,
                table=table,
                obj=new["name"],
                new=new["definition"],
            )
        ]
    if new is None:
        table, kind = old["table"], old["type"]
        if kind == "primary key":
            return [
                _change(
                    "primary_key_changed",
                    HIGH,
                    "primary key dropped: rows are no longer uniquely addressable",
                    table=table,
                    obj=old["name"],
                    old=old["definition"],
                    new=None,
                )
            ]
        if kind in _CONSTRAINT_KEYS:
            severity, reason = HIGH, f"{kind} constraint dropped: a key is lost"
        else:
            severity, reason = MEDIUM, f"{kind} constraint dropped: an integrity guard is lost"
        return [
            _change(
                "constraint_dropped",
                severity,
                reason,
                table=table,
                obj=old["name"],
                old=old["definition"],
            )
        ]
    table = new["table"]
    changes: list[Change] = []
    if old["name"] != new["name"]:
        changes.append(
            _change(
                "constraint_renamed",
                LOW,
                "constraint renamed",
                table=table,
                obj=new["name"],
                old=old["name"],
                new=new["name"],
            )
        )
    if not old.get("validated", True) and new.get("validated", True):
        changes.append(
            _change(
                "constraint_changed",
                LOW,
                "constraint validated",
                table=table,
                obj=new["name"],
                old={"validated": False},
                new={"validated": True},
            )
        )
    for key in ("deferrable", "deferred"):
        if old.get(key) != new.get(key):
            changes.append(
                _change(
                    "constraint_changed",
                    LOW,
                    f"{key} changed",
                    table=table,
                    obj=new["name"],
                    old={key: old.get(key)},
                    new={key: new.get(key)},
                )
            )
    return changes


def _merge_primary_keys(changes: list[Change]) -> list[Change]:
    """A dropped and an added primary key on one table are one replacement."""
    pk = [c for c in changes if c["type"] == "primary_key_changed"]
    merged: list[Change] = []
    for c in pk:
        if c["old_value"] is None:
            drop = next(
                (x for x in pk if x["table"] == c["table"] and x["new_value"] is None), None
            )
            if drop is not None:
                merged.append(
                    _change(
                        "primary_key_changed",
                        HIGH,
                        "primary key replaced: rebuilt and re-checked under lock",
                        table=c["table"],
                        obj=c["object"],
                        old=drop["old_value"],
                        new=c["new_value"],
                    )
                )
    replaced = {c["table"] for c in merged}
    return [
        c for c in changes if not (c["type"] == "primary_key_changed" and c["table"] in replaced)
    ] + merged


def _index_changes(d: Delta, renames: _Renames, added_tables: set[str]) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        table = new["table"]
        if str(d.get("table_id")) in added_tables:
            severity, reason = LOW, "index on a new table"
        else:
            severity, reason = (
                MEDIUM,
                "CREATE INDEX without CONCURRENTLY blocks writes while it builds",
            )
        return [
            _change(
                "index_added", severity, reason, table=table, obj=new["name"], new=new["definition"]
            )
        ]
    if new is None:
        table = old["table"]
        if old.get("unique"):
            severity, reason = HIGH, "unique index dropped: a key is lost"
        else:
            severity, reason = MEDIUM, "index dropped: queries using it may slow down"
        return [
            _change(
                "index_dropped",
                severity,
                reason,
                table=table,
                obj=old["name"],
                old=old["definition"],
            )
        ]
    if old["name"] != new["name"]:
        return [
            _change(
                "index_renamed",
                LOW,
                "index renamed",
                table=new["table"],
                obj=new["name"],
                old=old["name"],
                new=new["name"],
            )
        ]
    return []


_POLICY_KEYS = ("command", "permissive", "roles", "using", "check")


def _policy_summary(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": data["name"], **{k: data.get(k) for k in _POLICY_KEYS}}


def _policy_changes(d: Delta, renames: _Renames, added_tables: set[str]) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        table = new["table"]
        if new.get("permissive") and (new.get("using") or "").strip("() ") == "true":
            severity, reason = (
                CRITICAL,
                (f"permissive policy using (true): every row exposed to {', '.join(new['roles'])}"),
            )
        elif new.get("permissive"):
            severity, reason = MEDIUM, "permissive policy added: widens row access"
        else:
            severity, reason = MEDIUM, "restrictive policy added: narrows row access"
        return [
            _change(
                "policy_changed",
                severity,
                reason,
                table=table,
                obj=new["name"],
                old=None,
                new=_policy_summary(new),
            )
        ]
    if new is None:
        table = old["table"]
        if old.get("permissive"):
            severity, reason = HIGH, "permissive policy dropped: clients lose access to rows"
        else:
            severity, reason = CRITICAL, "restrictive policy dropped: rows it hid are exposed"
        return [
            _change(
                "policy_changed",
                severity,
                reason,
                table=table,
                obj=old["name"],
                old=_policy_summary(old),
                new=None,
            )
        ]
    table = new["table"]
    meaning_changed = any(renames.normalize(old.get(k)) != new.get(k) for k in _POLICY_KEYS)
    if meaning_changed:
        return [
            _change(
                "policy_changed",
                HIGH,
                "policy expression, roles or command changed",
                table=table,
                obj=new["name"],
                old=_policy_summary(old),
                new=_policy_summary(new),
            )
        ]
    if old["name"] != new["name"]:
        return [
            _change(
                "policy_changed",
                LOW,
                "policy renamed",
                table=table,
                obj=new["name"],
                old={"name": old["name"]},
                new={"name": new["name"]},
            )
        ]
    return []


def _view_changes(d: Delta, renames: _Renames) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        name = _qualified(new)
        return [
            _change(
                "view_added",
                LOW,
                f"new {new['kind']}",
                table=name,
                obj=name,
                new=new.get("definition"),
            )
        ]
    if new is None:
        name = _qualified(old)
        return [
            _change(
                "view_dropped",
                HIGH,
                f"{old['kind']} dropped: its readers break",
                table=name,
                obj=name,
                old=old.get("definition"),
            )
        ]
    name = _qualified(new)
    changes: list[Change] = []
    if _qualified(old) != name:
        changes.append(
            _change(
                "view_renamed",
                HIGH,
                f"clients using {_qualified(old)} break",
                table=name,
                obj=name,
                old=_qualified(old),
                new=name,
            )
        )
    if renames.normalize(old.get("definition")) != renames.without_rename_aliases(
        new.get("definition")
    ):
        changes.append(
            _change(
                "view_changed",
                MEDIUM,
                "view definition changed",
                table=name,
                obj=name,
                old=old.get("definition"),
                new=new.get("definition"),
            )
        )
    return changes


def _signature(data: Mapping[str, Any]) -> str:
    return f"{data['schema']}.{data['name']}({data.get('arguments') or ''})"


_FUNCTION_ATTRS = (
    "body",
    "result",
    "arguments",
    "language",
    "volatility",
    "strict",
    "config",
    "kind",
)


def _function_changes(d: Delta) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        sig = _signature(new)
        return [
            _change(
                "function_added",
                LOW,
                f"new {new.get('kind', 'function')}",
                table=None,
                obj=sig,
                new=sig,
            )
        ]
    if new is None:
        sig = _signature(old)
        return [
            _change(
                "function_dropped",
                HIGH,
                "dropped: rpc() callers break",
                table=None,
                obj=sig,
                old=sig,
            )
        ]
    sig = _signature(new)
    changes: list[Change] = []
    if (old["schema"], old["name"]) != (new["schema"], new["name"]):
        changes.append(
            _change(
                "function_renamed",
                HIGH,
                f"rpc() callers of {_signature(old)} break",
                table=None,
                obj=sig,
                old=_signature(old),
                new=sig,
            )
        )
    if not old.get("security_definer") and new.get("security_definer"):
        changes.append(
            _change(
                "function_changed",
                HIGH,
                "now SECURITY DEFINER: runs with its owner's privileges",
                table=None,
                obj=sig,
                old={"security_definer": False},
                new={"security_definer": True},
            )
        )
    elif old.get("security_definer") != new.get("security_definer"):
        changes.append(
            _change(
                "function_changed",
                MEDIUM,
                "no longer SECURITY DEFINER",
                table=None,
                obj=sig,
                old={"security_definer": True},
                new={"security_definer": False},
            )
        )
    changed = [k for k in _FUNCTION_ATTRS if old.get(k) != new.get(k)]
    if changed:
        changes.append(
            _change(
                "function_changed",
                MEDIUM,
                f"{', '.join(changed)} changed",
                table=None,
                obj=sig,
                old={k: old.get(k) for k in changed},
                new={k: new.get(k) for k in changed},
            )
        )
    return changes


def _enum_changes(d: Delta) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        name = _qualified(new)
        return [
            _change("enum_added", LOW, "new enum type", table=None, obj=name, new=new["values"])
        ]
    if new is None:
        name = _qualified(old)
        return [
            _change(
                "enum_dropped", MEDIUM, "enum type dropped", table=None, obj=name, old=old["values"]
            )
        ]
    name = _qualified(new)
    changes: list[Change] = []
    if _qualified(old) != name:
        changes.append(
            _change(
                "enum_changed",
                HIGH,
                f"type renamed from {_qualified(old)}",
                table=None,
                obj=name,
                old=_qualified(old),
                new=name,
            )
        )
    old_values, new_values = list(old["values"]), list(new["values"])
    if old_values != new_values:
        removed = [v for v in old_values if v not in new_values]
        if removed:
            kind = "renamed" if len(old_values) == len(new_values) else "removed"
            severity, reason = HIGH, f"value {kind}: {', '.join(removed)} no longer valid"
        else:
            severity, reason = LOW, "value added"
        changes.append(
            _change(
                "enum_changed",
                severity,
                reason,
                table=None,
                obj=name,
                old=old_values,
                new=new_values,
            )
        )
    return changes


# --- PL/Python entry point -------------------------------------------------


def plpython_diff(deltas_json: str) -> str:
    """``resilience._schema_diff(json)``: deltas as JSON text in, changes as JSON text out."""
    deltas = json.loads(deltas_json) if deltas_json else []
    return json.dumps(compute_changes(deltas))
