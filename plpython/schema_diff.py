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

# No module-level imports: at commit, in a new session, PL/Python loads this
# module, and importing typing (~15 ms), re (~7 ms: enum, functools,
# collections) or json (imports re) would be paid there. ``re`` is imported
# by the few rules that match text; JSON goes through the C accelerator.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from typing import Any

    Delta = Mapping[str, Any]
    Change = dict[str, Any]

__all__ = [
    "CRITICAL",
    "HIGH",
    "LOW",
    "MEDIUM",
    "RULES",
    "Rule",
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


class Rule:
    """One severity rule: the change type it rates, the situation, the
    severity, and the migration linter rule it follows (or "-")."""

    __slots__ = ("type", "situation", "severity", "source")

    def __init__(self, type_: str, situation: str, severity: str, source: str) -> None:
        self.type, self.situation, self.severity, self.source = type_, situation, severity, source

    def __iter__(self) -> Iterator[str]:
        return iter((self.type, self.situation, self.severity, self.source))

    def __repr__(self) -> str:
        return f"Rule{tuple(self)!r}"


# The one source of severities: compute_changes() rates every change through
# a rule id of this table (``_rated``), and docs/schema_tracking.md renders it
# (``python -m pgresilience.schema.severity_doc``).
RULES: dict[str, Rule] = {
    "table_added": Rule("table_added", "new table", LOW, "-"),
    "table_dropped": Rule(
        "table_dropped", "data of the table is lost", CRITICAL, "squawk ban-drop-table; Atlas DS102"
    ),
    "table_renamed": Rule(
        "table_renamed",
        "clients using the old name break",
        HIGH,
        "squawk renaming-table; Atlas BC101",
    ),
    "table_persistence": Rule(
        "table_changed", "SET LOGGED/UNLOGGED (rewrite)", HIGH, "strong_migrations"
    ),
    "partition_detached": Rule(
        "table_changed", "partition detached (its rows leave the parent's queries)", HIGH, "-"
    ),
    "partition_attached": Rule(
        "table_changed",
        "partition attached (scanned under lock unless a CHECK proves the bound)",
        MEDIUM,
        "-",
    ),
    "table_property": Rule("table_changed", "partition key / other table property", MEDIUM, "-"),
    "column_added": Rule(
        "column_added", "nullable, or constant default", LOW, "squawk adding-field-with-default"
    ),
    "column_added_required": Rule(
        "column_added",
        "NOT NULL without default",
        HIGH,
        "squawk adding-required-field; Atlas MF103",
    ),
    "column_added_rewrite": Rule(
        "column_added",
        "volatile default, identity or stored generated (rewrite)",
        HIGH,
        "squawk adding-field-with-default; Atlas PG302; strong_migrations",
    ),
    "column_dropped": Rule(
        "column_dropped",
        "data of the column is lost",
        CRITICAL,
        "squawk ban-drop-column; Atlas DS103",
    ),
    "column_renamed": Rule(
        "column_renamed",
        "clients using the old name break",
        HIGH,
        "squawk renaming-column; Atlas BC102",
    ),
    "type_rewrite": Rule(
        "column_type_changed",
        "rewrites the table (ACCESS EXCLUSIVE)",
        HIGH,
        "squawk changing-column-type; Atlas PG301; strong_migrations",
    ),
    "type_narrowing": Rule(
        "column_type_changed",
        "narrowing (values may no longer fit)",
        HIGH,
        "Atlas data-dependent (MF) class",
    ),
    "type_metadata": Rule(
        "column_type_changed",
        "metadata only (e.g. widen varchar, varchar to text)",
        LOW,
        "strong_migrations safe list",
    ),
    "set_not_null": Rule(
        "nullability_changed",
        "SET NOT NULL (full scan, writers sending null break)",
        HIGH,
        "squawk adding-not-nullable-field; Atlas MF104, PG303",
    ),
    "drop_not_null": Rule(
        "nullability_changed",
        "DROP NOT NULL (readers assuming a value break)",
        MEDIUM,
        "squawk ban-drop-not-null",
    ),
    "default_dropped_not_null": Rule(
        "default_changed", "default dropped on a NOT NULL column", HIGH, "inserts omitting it fail"
    ),
    "default_changed": Rule("default_changed", "other default change", LOW, "-"),
    "column_property": Rule(
        "column_changed", "identity, generated expression or collation", MEDIUM, "-"
    ),
    "constraint_added": Rule(
        "constraint_added",
        "CHECK / FOREIGN KEY / UNIQUE / EXCLUDE validated at once",
        MEDIUM,
        "squawk constraint-missing-not-valid, adding-foreign-key-constraint, "
        "disallowed-unique-constraint; Atlas PG305, PG105",
    ),
    "constraint_added_not_valid": Rule(
        "constraint_added", "added NOT VALID", LOW, "squawk constraint-missing-not-valid"
    ),
    "constraint_using_index": Rule(
        "constraint_added",
        "UNIQUE ... USING INDEX over an existing index (no index build)",
        LOW,
        "squawk disallowed-unique-constraint (the safe pattern)",
    ),
    "constraint_dropped_key": Rule(
        "constraint_dropped", "UNIQUE or EXCLUDE dropped (a key is lost)", HIGH, "-"
    ),
    "constraint_dropped_guard": Rule(
        "constraint_dropped",
        "CHECK or FOREIGN KEY dropped (integrity guard lost)",
        MEDIUM,
        "Atlas CD101",
    ),
    "constraint_renamed": Rule("constraint_renamed", "constraint renamed", LOW, "-"),
    "constraint_redefined": Rule(
        "constraint_changed",
        "re-created with another definition (checked again under lock)",
        MEDIUM,
        "squawk constraint-missing-not-valid",
    ),
    "constraint_changed": Rule("constraint_changed", "validated, deferrability changed", LOW, "-"),
    "primary_key_changed": Rule(
        "primary_key_changed",
        "primary key added, dropped or replaced",
        HIGH,
        "squawk adding-serial-primary-key-field; Atlas PG104, PG304",
    ),
    "primary_key_using_index": Rule(
        "primary_key_changed",
        "primary key added USING INDEX over an existing index (no index build)",
        MEDIUM,
        "squawk disallowed-unique-constraint (the safe pattern)",
    ),
    "index_added_new_table": Rule("index_added", "on a new table", LOW, "-"),
    "index_added": Rule(
        "index_added",
        "on an existing table, without CONCURRENTLY (blocks writes)",
        MEDIUM,
        "squawk require-concurrent-index-creation; Atlas PG101",
    ),
    "index_added_concurrently": Rule(
        "index_added",
        "CREATE INDEX CONCURRENTLY on an existing table",
        LOW,
        "squawk require-concurrent-index-creation",
    ),
    "index_invalid": Rule(
        "index_invalid",
        "INVALID index (a failed CONCURRENTLY): writes maintain it, queries skip it",
        HIGH,
        "-",
    ),
    "index_dropped_unique": Rule(
        "index_dropped", "unique index dropped (a key is lost)", HIGH, "-"
    ),
    "index_dropped": Rule(
        "index_dropped",
        "plain index dropped (queries may slow down)",
        MEDIUM,
        "squawk require-concurrent-index-deletion; Atlas PG102",
    ),
    "index_renamed": Rule("index_renamed", "index renamed", LOW, "-"),
    "index_redefined": Rule(
        "index_changed", "re-created with another definition (blocks writes)", MEDIUM, "-"
    ),
    "index_validated": Rule("index_changed", "index became valid", LOW, "-"),
    "rls_disabled": Rule(
        "rls_changed", "row level security disabled (rows exposed)", CRITICAL, "security exposure"
    ),
    "rls_enabled": Rule(
        "rls_changed", "row level security enabled (rows hidden without a policy)", HIGH, "-"
    ),
    "rls_forced": Rule("rls_changed", "FORCE row level security changed", MEDIUM, "-"),
    "policy_restrictive_dropped": Rule(
        "policy_changed",
        "restrictive policy dropped, or its expression made using (true) (rows exposed)",
        CRITICAL,
        "security exposure",
    ),
    "policy_using_true": Rule(
        "policy_changed",
        "permissive policy using (true) added, or an expression made it (every row exposed)",
        CRITICAL,
        "security exposure",
    ),
    "policy_changed": Rule(
        "policy_changed", "permissive policy dropped, or policy expression/roles changed", HIGH, "-"
    ),
    "policy_added": Rule("policy_changed", "policy added", MEDIUM, "-"),
    "policy_renamed": Rule("policy_changed", "policy renamed", LOW, "-"),
    "view_added": Rule("view_added", "new view", LOW, "-"),
    "view_dropped": Rule("view_dropped", "clients of the view break", HIGH, "-"),
    "view_renamed": Rule("view_renamed", "clients using the old name break", HIGH, "-"),
    "view_columns": Rule(
        "view_changed", "output column removed, renamed or retyped (readers break)", HIGH, "-"
    ),
    "view_invoker_off": Rule(
        "view_changed",
        "security_invoker turned off on a view over an RLS table "
        "(the caller's RLS no longer applies)",
        CRITICAL,
        "security exposure",
    ),
    "view_options": Rule(
        "view_changed", "security_invoker, security_barrier or check_option changed", MEDIUM, "-"
    ),
    "view_changed": Rule("view_changed", "definition changed", MEDIUM, "-"),
    "function_added": Rule("function_added", "new function", LOW, "-"),
    "function_dropped": Rule("function_dropped", "rpc() callers break", HIGH, "-"),
    "function_renamed": Rule("function_renamed", "rpc() callers break", HIGH, "-"),
    "function_definer": Rule("function_changed", "now SECURITY DEFINER", HIGH, "security"),
    "function_result": Rule(
        "function_changed", "result type or columns changed (callers break)", HIGH, "-"
    ),
    "function_changed": Rule("function_changed", "body or attributes changed", MEDIUM, "-"),
    "enum_added": Rule("enum_added", "new enum type", LOW, "-"),
    "enum_dropped": Rule("enum_dropped", "enum type dropped", MEDIUM, "-"),
    "enum_value_added": Rule(
        "enum_changed", "value added", LOW, "strong_migrations (safe since PG 12)"
    ),
    "enum_value_removed": Rule("enum_changed", "value removed or renamed, type renamed", HIGH, "-"),
}

#: The rules as rows (change type, situation, severity, source), in table order.
SEVERITY_RULES: tuple[Rule, ...] = tuple(RULES.values())

# Output order within one table: structural changes first, as a reader expects.
_TYPE_ORDER = [
    "table_added", "table_renamed", "table_dropped", "table_changed", "rls_changed",
    "column_added", "column_renamed", "column_dropped", "column_type_changed",
    "nullability_changed", "default_changed", "column_changed", "primary_key_changed",
    "constraint_added", "constraint_renamed", "constraint_changed", "constraint_dropped",
    "index_added", "index_renamed", "index_changed", "index_invalid", "index_dropped",
    "policy_changed",
    "view_added", "view_renamed", "view_changed", "view_dropped",
    "function_added", "function_renamed", "function_changed", "function_dropped",
    "enum_added", "enum_changed", "enum_dropped",
]  # fmt: skip


# --- canonical JSON and hashes ---------------------------------------------


def _jsonb_key(key: str) -> tuple[int, bytes]:
    # jsonb orders object keys by length first, then bytewise.
    raw = key.encode("utf-8")
    return (len(raw), raw)


# --- JSON through the C accelerator (_json) ----------------------------------
# ``json`` imports ``re`` at its top: ~7 ms of a new session's first commit.
# Its C parts need neither; where they are missing (another Python), json.


class _Decoding:
    """What the C scanner reads from its context: json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")  # NaN, Infinity: PostgreSQL never prints them


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_CODEC: dict[str, Any] = {}


def _encoder(accelerator: Any) -> Any:
    # json.dumps' defaults; a new one per call, as json.dumps does (its
    # circular-reference markers must start empty).
    return accelerator.make_encoder(
        {}, _no_default, accelerator.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )


def _codec() -> dict[str, Any]:
    if not _CODEC:
        codec: dict[str, Any] = {}
        try:
            import _json

            codec["scan"] = _json.make_scanner(_Decoding())
            _encoder(_json)
            codec["accelerator"], codec["string"] = _json, _json.encode_basestring
        except (ImportError, AttributeError, TypeError):
            import json

            codec = {"loads": json.loads, "dumps": json.dumps}
            codec["string"] = lambda text: json.dumps(text, ensure_ascii=False)
        _CODEC.update(codec)
    return _CODEC


def _json_loads(text: str) -> Any:
    """``json.loads(text)``."""
    codec = _codec()
    if "loads" in codec:
        return codec["loads"](text)
    stripped = text.strip(" \t\n\r")
    try:
        value, end = codec["scan"](stripped, 0)
    except StopIteration:
        raise ValueError("not JSON: expecting a value") from None
    if end != len(stripped):
        raise ValueError(f"not JSON: extra data at {end}")
    return value


def _json_dumps(value: Any) -> str:
    """``json.dumps(value)``."""
    codec = _codec()
    if "dumps" in codec:
        return str(codec["dumps"](value))
    return "".join(_encoder(codec["accelerator"])(value, 0))


def _json_string(text: str) -> str:
    """``json.dumps(text, ensure_ascii=False)``."""
    return str(_codec()["string"](text))


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def canonical_json(value: Any) -> str:
    """The text PostgreSQL prints for ``value::jsonb`` (``jsonb::text``).

    The database hashes exactly that text, so the client can recompute any
    object hash. Numbers are limited to integers (snapshots hold no floats).
    """
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _jsonb_key(kv[0]))
        return "{" + ", ".join(f"{_json_string(k)}: {canonical_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(canonical_json(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _json_string(value)
    raise TypeError(f"unsupported value in a snapshot object: {value!r}")


def object_hash(kind: str, data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``kind || ':' || canonical JSON``, as the database computes it."""
    import hashlib  # not needed by the diff at commit

    return hashlib.sha256(f"{kind}:{canonical_json(data)}".encode()).hexdigest()


def sorted_hash(hashes: Iterable[str]) -> str:
    """SHA-256 (hex) over ``hashes`` sorted and concatenated."""
    import hashlib

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

_TYPE_RE = r"^(?P<base>[a-z ]+?)\((?P<args>[0-9, ]+)\)(?P<rest>[a-z ]*)$"
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
    import re

    match = re.match(_TYPE_RE, type_name)
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


_VOLATILE_DEFAULT = (
    r"(?i)\b(nextval|random|gen_random_uuid|uuid_generate_v[14]|clock_timestamp|timeofday)\s*\("
)


# --- rename normalization --------------------------------------------------


class _Renames:
    """Identifier renames seen in this diff, to tell a text that changed only
    because something it mentions was renamed from a real change.

    Texts are compared two ways: with the raw names (``partition_of`` holds
    ``schema.name`` as is) and as PostgreSQL prints SQL (``pg_get_*def``,
    ``format_type``: a name that is not a plain lower-case identifier is
    quoted, ``"Big B"``). Every rename is substituted in one pass, so that
    swapped names (a -> b, b -> a) do not undo each other."""

    def __init__(self) -> None:
        self.pairs: list[tuple[tuple[str, ...], tuple[str, ...], str | None]] = []
        # Renamed enum values, as constants print them: 'old'::type -> 'new'::type.
        self.labels: dict[str, str] = {}
        # The same, bare: a partition bound prints them without the cast.
        self.bare_labels: dict[str, str] = {}
        # Tables with a column whose type changed: PostgreSQL rebuilt their
        # constraints and indexes and prints them with other casts.
        self.retyped: set[str] = set()

    def add_label(self, enum: tuple[str, ...], old: str, new: str) -> None:
        type_name = _sql_name(enum)
        self.labels["'" + old.replace("'", "''") + "'::" + type_name] = (
            "'" + new.replace("'", "''") + "'::" + type_name
        )
        self.bare_labels["'" + old.replace("'", "''") + "'"] = "'" + new.replace("'", "''") + "'"

    def same_bound(self, old: Any, new: Any) -> bool:
        """A partition bound, once renamed enum values are read as their new
        names (`FOR VALUES IN ('ok')` -> `('fine')` is the same partition)."""
        if old == new or not self.bare_labels or not isinstance(old, str):
            return bool(old == new)
        import re

        return re.sub(_LITERAL, lambda m: self.bare_labels.get(m.group(0), m.group(0)), old) == new

    def _relabel(self, text: str) -> str:
        if not self.labels:
            return text
        import re

        pattern = "|".join(re.escape(k) for k in sorted(self.labels, key=len, reverse=True))
        return re.sub(pattern, lambda m: self.labels[m.group(0)], text)

    def add(self, old: tuple[str, ...], new: tuple[str, ...], table: str | None = None) -> None:
        """``old`` and ``new``: the name's parts, ``(schema, name)`` or ``(name,)``;
        ``table``: the (new) table a renamed column belongs to."""
        if old != new:
            self.pairs.append((old, new, table))

    def _mapping(self, sql: bool, table: str | None, qualified: bool = False) -> dict[str, str]:
        form = _sql_name if sql else ".".join
        mapping: dict[str, str] = {}
        for old, new, owner in self.pairs:
            if (table is None or owner is None or owner == table) and (
                not qualified or len(old) > 1
            ):
                mapping.setdefault(form(old), form(new))
        return mapping

    def _substitute(self, text: str, sql: bool, table: str | None) -> str:
        import re

        mapping = self._mapping(sql, table)
        if not mapping:
            return text
        names = "|".join(re.escape(old) for old in sorted(mapping, key=len, reverse=True))
        # A cast names a type, a name before "(" a function: there only a
        # renamed type or function applies (schema.name), never a column or
        # table of the same bare name (a column mood of type app.mood).
        typed = self._mapping(sql, table, qualified=True)
        typed_names = "|".join(re.escape(old) for old in sorted(typed, key=len, reverse=True))

        def in_cast(cast: str) -> str:
            if not typed:
                return cast
            return re.sub(
                rf'(?<![\w$"])(?:{typed_names})(?![\w$"])', lambda m: typed[m.group(0)], cast
            )

        def replace(m: Any) -> str:
            if m.group(1):  # a string literal: a renamed b leaves 'b' alone
                return str(m.group(1))
            if m.group(2):
                return in_cast(m.group(2))
            name = m.group(0)
            if name not in typed and text[m.end() : m.end() + 1] == "(":
                return str(name)
            return mapping[name]

        pattern = rf'({_LITERAL})|({_CAST})|(?<![\w$"])(?:{names})(?![\w$"])'
        return re.sub(pattern, replace, text)

    def without_rename_aliases(self, text: Any) -> Any:
        """PostgreSQL keeps a view's output names across a column rename by
        printing ``new_name AS old_name``: drop those aliases."""
        if not isinstance(text, str) or not self.pairs:
            return text
        import re

        text = _unquote_plain(text)
        for old, new, _ in self.pairs:
            n, o = re.escape(_sql_name(new)), re.escape(_sql_name(old))
            text = re.sub(rf'(?<![\w$"]){n} AS {o}(?![\w$"])', _sql_name(new), text)
        return text

    def same(self, old: Any, new: Any, table: str | None = None) -> bool:
        """Whether ``old`` reads as ``new`` once the renames are applied to it.
        ``table``: the text names columns of that table only (an index, a
        CHECK); None: of any table (a view, a policy's subquery)."""
        if old == new:
            return True
        if not isinstance(old, str) or not isinstance(new, str):
            return False
        old = self._relabel(old)
        if old == new:
            return True
        if not self.pairs:
            return False
        if self._substitute(old, False, table) == new:
            return True
        old, new = _unquote_plain(old), _unquote_plain(new)
        return self._substitute(old, True, table) == new or self._aligned(old, new, table)

    def _aligned(self, old: str, new: str, table: str | None) -> bool:
        """Token by token, every difference a rename of that very name: one
        name renamed two ways in one text (`a.name` -> `a.full_name` and
        `p.name` -> `p.title`, a view joining authors and posts)."""
        import re

        renamed: dict[str, set[str]] = {}
        for was, now, owner in self.pairs:
            if len(was) == 1 and (table is None or owner is None or owner == table):
                renamed.setdefault(_sql_name(was), set()).add(_sql_name(now))
        tokens = re.compile(rf'{_LITERAL}|"(?:[^"]|"")+"|[\w$]+|\s+|.', re.S)
        before, after = tokens.findall(old), tokens.findall(new)
        return len(before) == len(after) and all(
            a == b or b in renamed.get(a, ()) for a, b in zip(before, after, strict=True)
        )

    def same_rebuilt(self, old: Any, new: Any, table: str) -> bool:
        """``same``, or, on a table whose column changed type in this diff,
        the same once casts are left out: `char_length((name)::text)` read
        back as `char_length(name)` after varchar -> text, `0` as `(0)::numeric`."""
        if self.same(old, new, table):
            return True
        if table not in self.retyped or not isinstance(old, str) or not isinstance(new, str):
            return False
        return self.same(_uncast(old), _uncast(new), table)

    def same_constraint(self, old: Any, new: Any, table: str, references: str | None) -> bool:
        """A constraint's definition: a foreign key names its own table's
        columns, then (after REFERENCES) the referenced table's."""
        if old == new:
            return True
        if not isinstance(old, str) or not isinstance(new, str):
            return False
        old_own, _, old_ref = old.partition(" REFERENCES ")
        new_own, _, new_ref = new.partition(" REFERENCES ")
        return self.same_rebuilt(old_own, new_own, table) and self.same(
            old_ref, new_ref, references
        )


# A string literal as pg_get_expr & co. print it (quotes doubled inside).
_LITERAL = r"'(?:[^']|'')*'"
# A cast as pg_get_expr prints it: ::name, ::schema.name, multi-word names,
# a type modifier, array brackets.
_NAME = r'(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)'
_CAST = (
    rf"::{_NAME}(?:\.{_NAME})?(?: varying| precision| with(?:out)? time zone)?"
    r"(?:\(\d+(?:,\s?\d+)?\))?(?:\[\])*"
)


def _uncast(text: str) -> str:
    """Text without casts, and without the parentheses then left around a
    lone name or constant (string literals untouched)."""
    import re

    text = re.sub(rf"({_LITERAL})|{_CAST}", lambda m: m.group(1) or "", text)
    lone = rf'(?<![\w$"])\(({_LITERAL}|{_NAME}|-?\d+(?:\.\d+)?)\)'
    for _ in range(8):  # nested parentheses, one level per pass
        unwrapped = re.sub(rf"({_LITERAL})|{lone}", lambda m: m.group(1) or m.group(2), text)
        if unwrapped == text:
            break
        text = unwrapped
    return text


def _sql_name(parts: tuple[str, ...]) -> str:
    """A name as PostgreSQL prints it, keywords aside (texts are compared
    after ``_unquote_plain``, which drops the quotes of a keyword)."""
    import re

    return ".".join(
        part if re.fullmatch(r"[a-z_][a-z0-9_$]*", part) else '"' + part.replace('"', '""') + '"'
        for part in parts
    )


def _unquote_plain(text: str) -> str:
    """``"select"`` -> ``select``: PostgreSQL quotes a plain name that is a
    keyword; comparing texts, quoted or not is the same name."""
    import re

    return re.sub(
        rf'({_LITERAL})|(?<![\w$"])"([a-z_][a-z0-9_$]*)"(?![\w$"])',
        lambda m: m.group(1) or m.group(2),
        text,
    )


def _unnamed_index(definition: str) -> str:
    """``CREATE INDEX name ON ...`` without its name (quoted or not), which
    is compared as the index's own rename."""
    import re

    return re.sub(r'^(CREATE (?:UNIQUE )?INDEX )(?:"(?:[^"]|"")*"|\S+) ON ', r"\1ON ", definition)


def _qualified(data: Mapping[str, Any]) -> str:
    return f"{data['schema']}.{data['name']}"


def _rated(
    rule_id: str,
    reason: str,
    *,
    table: str | None,
    obj: str | None,
    column: str | None = None,
    old: Any = None,
    new: Any = None,
    **extra: Any,
) -> Change:
    """A change record rated by rule ``rule_id`` of RULES (its type and severity)."""
    rule = RULES[rule_id]
    change: Change = {
        "type": rule.type,
        "table": table,
        "column": column,
        "object": obj,
        "old_value": old,
        "new_value": new,
        "severity": rule.severity,
        "reason": reason,
        "rule": rule_id,
    }
    change.update(extra)
    return change


# --- identity pairing ------------------------------------------------------

# PostgreSQL re-creates some objects under a new OID: the indexes and
# constraints on a column whose type changes, and whatever a migration drops
# and creates again under the same name. Such a drop plus an add is one
# object: paired by these keys, it is diffed as old -> new (often: no change).
# Tables and columns are never paired: dropping one loses its data.
_PAIR_KEYS: dict[str, Any] = {
    "constraint": lambda d, data: (str(d.get("table_id")), data["name"]),
    "index": lambda d, data: (str(d.get("table_id")), data["name"]),
    "policy": lambda d, data: (str(d.get("table_id")), data["name"]),
    "view": lambda d, data: (data["schema"], data["name"]),
    "function": lambda d, data: (data["schema"], data["name"], data.get("arguments") or ""),
    "enum": lambda d, data: (data["schema"], data["name"]),
}


def _recreated_views(views: Sequence[Delta]) -> dict[str, str]:
    """The id of each dropped view -> the id of the view created again under its name."""
    gone = {
        (d["old"]["schema"], d["old"]["name"]): str(d["id"]) for d in views if d.get("new") is None
    }
    return {
        gone[key]: str(d["id"])
        for d in views
        if d.get("old") is None and (key := (d["new"]["schema"], d["new"]["name"])) in gone
    }


def _pair_recreated(by_kind: dict[str, list[Delta]]) -> None:
    """Merge, in place, each dropped object with the added one of the same key."""
    for kind, key in _PAIR_KEYS.items():
        deltas = by_kind.get(kind, [])
        dropped: dict[Any, Delta] = {}
        for d in deltas:
            if d.get("new") is None:
                dropped.setdefault(key(d, d["old"]), d)
        if not dropped:
            continue
        partnered: set[int] = set()
        result: list[Delta] = []
        for d in deltas:
            gone = dropped.get(key(d, d["new"])) if d.get("old") is None else None
            if gone is not None and id(gone) not in partnered:
                partnered.add(id(gone))
                result.append({**d, "old": gone["old"], "recreated": True})
            else:
                result.append(d)
        by_kind[kind] = [d for d in result if id(d) not in partnered]


_KEY_COLUMNS = r"^(?:UNIQUE|PRIMARY KEY)(?: NULLS NOT DISTINCT)? (\(.*?\))(.*)$"
_INDEX_COLUMNS = r" USING \S+ (\(.*\))( INCLUDE \(.*\))?(?: NULLS NOT DISTINCT)?$"


def _key_spec(constraint: Mapping[str, Any]) -> str | None:
    import re

    match = re.match(_KEY_COLUMNS, constraint.get("definition") or "")
    if not match:
        return None
    include = re.match(r"^( INCLUDE \(.*?\))?", match.group(2))
    return match.group(1) + (include.group(1) or "" if include else "")


def _index_spec(index: Mapping[str, Any]) -> str | None:
    import re

    match = re.search(_INDEX_COLUMNS, index.get("definition") or "")
    return None if not match else match.group(1) + (match.group(2) or "")


def _constraints_over_existing_indexes(by_kind: dict[str, list[Delta]]) -> list[Change]:
    """``ADD CONSTRAINT ... UNIQUE/PRIMARY KEY USING INDEX``: the unique index
    leaves the index list and comes back as the constraint. One change, rated
    as the safe pattern it is, not a lost key plus a new one."""
    indexes = by_kind.get("index", [])
    constraints = by_kind.get("constraint", [])
    changes: list[Change] = []
    used: set[int] = set()
    for c in constraints:
        new = c.get("new")
        if c.get("old") is not None or not new or new["type"] not in ("unique", "primary key"):
            continue
        for i in indexes:
            old = i.get("old")
            if (
                id(i) in used
                or i.get("new") is not None
                or not old
                or not old.get("unique")
                or str(i.get("table_id")) != str(c.get("table_id"))
                or _index_spec(old) is None
                or _index_spec(old) != _key_spec(new)
            ):
                continue
            used.update((id(i), id(c)))
            rule = (
                "primary_key_using_index"
                if new["type"] == "primary key"
                else ("constraint_using_index")
            )
            changes.append(_rated(
                rule, f"{new['type']} constraint over the existing index {old['name']}: "
                "no index build",
                table=new["table"], obj=new["name"], old=old["definition"], new=new["definition"],
            ))  # fmt: skip
            break
    if used:
        by_kind["index"] = [d for d in indexes if id(d) not in used]
        by_kind["constraint"] = [d for d in constraints if id(d) not in used]
    return changes


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
            renames.add(
                (d["old"]["schema"], d["old"]["name"]), (d["new"]["schema"], d["new"]["name"])
            )
            renames.add((d["old"]["name"],), (d["new"]["name"],))
    for d in by_kind.get("column", []):
        if d.get("old") and d.get("new"):
            renames.add((d["old"]["name"],), (d["new"]["name"],), str(d["new"]["table"]))
    # Enum types, views and functions are printed qualified in other texts
    # (a column's type, a view over a view, a policy calling a function).
    for kind in ("enum", "view", "function"):
        for d in by_kind.get(kind, []):
            if d.get("old") and d.get("new"):
                renames.add(
                    (d["old"]["schema"], d["old"]["name"]), (d["new"]["schema"], d["new"]["name"])
                )
                if kind == "view":  # its columns are printed `view.column`, as a table's
                    renames.add((d["old"]["name"],), (d["new"]["name"],))
    # A view's output column renamed (ALTER VIEW ... RENAME COLUMN keeps its
    # place): a view over it prints `v.new AS old`, the same view.
    for d in by_kind.get("view", []):
        was, now = (d.get("old") or {}).get("columns"), (d.get("new") or {}).get("columns")
        if was and now and len(was) == len(now):
            for before, after in zip(was, now, strict=True):
                renames.add((before["name"],), (after["name"],), _qualified(d["new"]))
    for d in by_kind.get("column", []):
        if d.get("old") and d.get("new") and d["old"]["type"] != d["new"]["type"]:
            renames.retyped.add(str(d["new"]["table"]))
    for d in by_kind.get("enum", []):
        old_values = list((d.get("old") or {}).get("values") or [])
        new_values = list((d.get("new") or {}).get("values") or [])
        if d.get("old") and len(old_values) == len(new_values):  # RENAME VALUE keeps its place
            for was, now in zip(old_values, new_values, strict=True):
                if was != now and was not in new_values:
                    renames.add_label((d["old"]["schema"], d["old"]["name"]), was, now)

    # Table records first: they list a new table's columns and what a DROP
    # TABLE ... CASCADE took with it.
    changes: list[Change] = _table_changes(tables, by_kind, renames)
    whole_tables = added | dropped
    for kind in ("column", "constraint", "index", "policy"):
        if kind in by_kind:  # implied by table_added / table_dropped
            by_kind[kind] = [d for d in by_kind[kind] if str(d.get("table_id")) not in whole_tables]
    # A view (materialized) dropped and created again is one view: its
    # indexes are paired with those of its new self, and indexes on a new
    # one block no writer.
    recreated = _recreated_views(by_kind.get("view", []))
    by_kind["index"] = [
        {**d, "table_id": recreated[str(d.get("table_id"))]}
        if d.get("new") is None and str(d.get("table_id")) in recreated
        else d
        for d in by_kind.get("index", [])
    ]
    added = added | {
        str(d["id"])
        for d in by_kind.get("view", [])
        if d.get("old") is None and str(d["id"]) not in recreated.values()
    }
    _pair_recreated(by_kind)
    changes += _constraints_over_existing_indexes(by_kind)
    sub_objects = [
        ("column", _column_changes),
        ("constraint", _constraint_changes),
        ("index", _index_changes),
        ("policy", _policy_changes),
    ]
    for kind, differ in sub_objects:
        for d in by_kind.get(kind, []):
            changes += differ(d, renames, added)
    changes = _merge_primary_keys(changes)
    for d in by_kind.get("view", []):
        changes += _view_changes(d, renames)
    for d in by_kind.get("function", []):
        changes += _function_changes(d, renames)
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
            changes.append(_rated(
                "table_added", f"new {new['kind']}",
                table=_qualified(new), obj=_qualified(new), new={"columns": columns},
            ))  # fmt: skip
            continue
        if new is None:
            name = _qualified(old)
            dependents = _dependents_dropped(name, tid, dropped)
            reason = "drops the table and its data"
            if dependents:
                reason += f"; also dropped with it: {', '.join(dependents)}"
            changes.append(_rated("table_dropped", reason, table=name, obj=name, old=name))
            continue
        name = _qualified(new)
        if _qualified(old) != name:
            how = "moved to another schema" if old["schema"] != new["schema"] else "renamed"
            changes.append(_rated(
                "table_renamed", f"table {how}: clients using {_qualified(old)} break",
                table=name, obj=name, old=_qualified(old), new=name,
            ))  # fmt: skip
        if old.get("rls") != new.get("rls"):
            if new.get("rls"):
                changes.append(_rated(
                    "rls_enabled",
                    "row level security enabled: rows without a matching policy are hidden",
                    table=name, obj=name, old=False, new=True,
                ))  # fmt: skip
            else:
                changes.append(_rated(
                    "rls_disabled",
                    "row level security disabled: every row is visible to every role with grants",
                    table=name, obj=name, old=True, new=False,
                ))  # fmt: skip
        if old.get("rls_forced") != new.get("rls_forced"):
            changes.append(_rated(
                "rls_forced", "FORCE row level security changed (applies to the owner)",
                table=name, obj=name, old={"forced": old.get("rls_forced")},
                new={"forced": new.get("rls_forced")},
            ))  # fmt: skip
        if old.get("persistence") != new.get("persistence"):
            changes.append(_rated(
                "table_persistence", f"table set {new.get('persistence')}: rewrites the table",
                table=name, obj=name, old=old.get("persistence"), new=new.get("persistence"),
            ))  # fmt: skip
        old_parent, new_parent = old.get("partition_of"), new.get("partition_of")
        if old_parent and not new_parent:
            changes.append(_rated(
                "partition_detached",
                f"detached from {old_parent}: its rows no longer appear in the parent's queries",
                table=name, obj=name, old={"partition_of": old_parent,
                                           "partition_bound": old.get("partition_bound")},
                new={"partition_of": None},
            ))  # fmt: skip
        elif (
            new_parent
            and not renames.same(old_parent, new_parent)
            or (
                new_parent
                and not renames.same_bound(old.get("partition_bound"), new.get("partition_bound"))
            )
        ):
            changes.append(_rated(
                "partition_attached", f"attached to {new_parent}: scanned to check its bound",
                table=name, obj=name, old={"partition_of": old_parent},
                new={"partition_of": new_parent, "partition_bound": new.get("partition_bound")},
            ))  # fmt: skip
        for key in ("kind", "partition_key"):
            if not renames.same(old.get(key), new.get(key), name):
                changes.append(_rated(
                    "table_property", f"{key.replace('_', ' ')} changed",
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
    import re

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
        elif new.get("default") and _search(_VOLATILE_DEFAULT, new["default"]):
            rewrite = "a volatile default is evaluated for every row: rewrites the table"
        if rewrite:
            rule, reason = "column_added_rewrite", rewrite
        elif new.get("not_null") and not new.get("default"):
            rule, reason = (
                "column_added_required",
                "NOT NULL without a default: inserts that omit it fail",
            )
        else:
            rule, reason = "column_added", "new column"
        return [_rated(
            rule, reason, table=table, obj=table, column=column,
            new={k: new.get(k) for k in ("type", "not_null", "default")},
        )]  # fmt: skip
    if new is None:
        table = old["table"]
        return [_rated(
            "column_dropped", "drops the column and its data",
            table=table, obj=table, column=old["name"], old=old["type"],
        )]  # fmt: skip

    table, column = new["table"], new["name"]
    changes: list[Change] = []

    def add(rule: str, reason: str, old_value: Any, new_value: Any, **extra: Any) -> None:
        changes.append(_rated(
            rule, reason, table=table, obj=table, column=column,
            old=old_value, new=new_value, **extra,
        ))  # fmt: skip

    if old["name"] != new["name"]:
        add("column_renamed", f"clients using column {old['name']} break", old["name"], new["name"])
    if not renames.same(old["type"], new["type"], new["table"]):  # not just a renamed enum type
        rewrites, narrowing = type_change_effect(old["type"], new["type"])
        if rewrites and narrowing:
            rule, reason = (
                "type_narrowing",
                "narrowing type change: rewrites the table, values may not fit",
            )
        elif rewrites:
            rule, reason = (
                "type_rewrite",
                "type change rewrites the table under an ACCESS EXCLUSIVE lock",
            )
        else:
            rule, reason = "type_metadata", "type change is metadata only: no table rewrite"
        add(rule, reason, old["type"], new["type"], rewrites_table=rewrites)
    if bool(old.get("not_null")) != bool(new.get("not_null")):
        if new.get("not_null"):
            add(
                "set_not_null",
                "SET NOT NULL scans the table under lock; writers sending null break",
                False,
                True,
            )
        else:
            add(
                "drop_not_null",
                "column now accepts null: readers that assume a value break",
                True,
                False,
            )
    if not renames.same(old.get("default"), new.get("default"), new["table"]):
        # A default given way to an identity (serial -> identity) still
        # fills the column: omitting it stays fine.
        if (
            old.get("default")
            and not new.get("default")
            and new.get("not_null")
            and not new.get("identity")
        ):
            add(
                "default_dropped_not_null",
                "default dropped on a NOT NULL column: inserts that omit it fail",
                old.get("default"),
                None,
            )
        else:
            add("default_changed", "default changed", old.get("default"), new.get("default"))
    for key in ("identity", "generated", "collation"):
        # a generated expression names columns and functions: renames apply
        if old.get(key) != new.get(key) and not (
            key == "generated" and renames.same(old.get(key), new.get(key), new["table"])
        ):
            add("column_property", f"{key} changed", {key: old.get(key)}, {key: new.get(key)})
    return changes


_CONSTRAINT_KEYS = {"unique", "exclusion"}


def _without_not_valid(definition: Any) -> Any:
    """The definition without what is reported on its own: NOT VALID (the
    validated flag) and the deferrability pg_get_constraintdef() appends
    (`ALTER CONSTRAINT ... DEFERRABLE` is a deferrability change, not a
    re-created constraint)."""
    if not isinstance(definition, str):
        return definition
    if definition.endswith(" NOT VALID"):
        definition = definition[: -len(" NOT VALID")]
    for suffix in (" INITIALLY DEFERRED", " DEFERRABLE"):
        if definition.endswith(suffix):
            definition = definition[: -len(suffix)]
    return definition


def _constraint_changes(d: Delta, renames: _Renames, added_tables: set[str]) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        table, kind = new["table"], new["type"]
        if kind == "primary key":
            return [_rated(
                "primary_key_changed",
                "primary key added: builds a unique index and scans under lock",
                table=table, obj=new["name"], old=None, new=new["definition"],
            )]  # fmt: skip
        if not new.get("validated", True):
            rule, reason = (
                "constraint_added_not_valid",
                f"{kind} added NOT VALID: existing rows not checked yet",
            )
        elif kind in _CONSTRAINT_KEYS:
            rule, reason = "constraint_added", f"{kind} constraint builds an index under lock"
        else:
            rule, reason = (
                "constraint_added",
                f"{kind} validated on every row under lock; add it NOT VALID, then VALIDATE",
            )
        return [_rated(rule, reason, table=table, obj=new["name"], new=new["definition"])]
    if new is None:
        table, kind = old["table"], old["type"]
        if kind == "primary key":
            return [_rated(
                "primary_key_changed",
                "primary key dropped: rows are no longer uniquely addressable",
                table=table, obj=old["name"], old=old["definition"], new=None,
            )]  # fmt: skip
        if kind in _CONSTRAINT_KEYS:
            rule, reason = "constraint_dropped_key", f"{kind} constraint dropped: a key is lost"
        else:
            rule, reason = (
                "constraint_dropped_guard",
                f"{kind} constraint dropped: an integrity guard is lost",
            )
        return [_rated(rule, reason, table=table, obj=old["name"], old=old["definition"])]
    table = new["table"]
    changes: list[Change] = []
    redefined = not renames.same_constraint(
        _without_not_valid(old.get("definition")),
        _without_not_valid(new.get("definition")),
        table,
        new.get("references"),
    )
    if redefined:
        # Dropped and added again under the same name, with another meaning.
        if "primary key" in (old["type"], new["type"]):
            changes.append(_rated(
                "primary_key_changed", "primary key replaced: rebuilt and re-checked under lock",
                table=table, obj=new["name"], old=old["definition"], new=new["definition"],
            ))  # fmt: skip
        else:
            changes.append(_rated(
                "constraint_redefined",
                f"{new['type']} re-created with another definition"
                + ("" if new.get("validated", True) else " (NOT VALID)"),
                table=table, obj=new["name"], old=old["definition"], new=new["definition"],
            ))  # fmt: skip
    if old["name"] != new["name"]:
        changes.append(_rated(
            "constraint_renamed", "constraint renamed",
            table=table, obj=new["name"], old=old["name"], new=new["name"],
        ))  # fmt: skip
    if not redefined and not old.get("validated", True) and new.get("validated", True):
        changes.append(_rated(
            "constraint_changed", "constraint validated", table=table, obj=new["name"],
            old={"validated": False}, new={"validated": True},
        ))  # fmt: skip
    for key in ("deferrable", "deferred"):
        if old.get(key) != new.get(key):
            changes.append(_rated(
                "constraint_changed", f"{key} changed", table=table, obj=new["name"],
                old={key: old.get(key)}, new={key: new.get(key)},
            ))  # fmt: skip
    return changes


def _merge_primary_keys(changes: list[Change]) -> list[Change]:
    """A dropped and an added primary key on one table are one replacement."""
    pk = [c for c in changes if c["rule"] == "primary_key_changed"]
    merged: list[Change] = []
    for c in pk:
        if c["old_value"] is None:
            drop = next(
                (x for x in pk if x["table"] == c["table"] and x["new_value"] is None), None
            )
            if drop is not None:
                merged.append(_rated(
                    "primary_key_changed",
                    "primary key replaced: rebuilt and re-checked under lock",
                    table=c["table"], obj=c["object"], old=drop["old_value"], new=c["new_value"],
                ))  # fmt: skip
    replaced = {c["table"] for c in merged}
    return [
        c
        for c in changes
        if not (
            c["rule"] == "primary_key_changed"
            and c["table"] in replaced
            and None in (c["old_value"], c["new_value"])
        )
    ] + merged


def _index_changes(d: Delta, renames: _Renames, added_tables: set[str]) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        table = new["table"]
        if new.get("valid") is False:
            return [_rated(
                "index_invalid",
                "INVALID index (a failed CREATE INDEX CONCURRENTLY?): writes maintain it, "
                "queries skip it; drop it and build it again",
                table=table, obj=new["name"], new=new["definition"],
            )]  # fmt: skip
        if str(d.get("table_id")) in added_tables:
            rule, reason = "index_added_new_table", "index on a new table"
        elif d.get("concurrently"):
            rule, reason = "index_added_concurrently", "built CONCURRENTLY: writes kept going"
        else:
            rule, reason = (
                "index_added",
                "CREATE INDEX without CONCURRENTLY blocks writes while it builds",
            )
        return [_rated(rule, reason, table=table, obj=new["name"], new=new["definition"])]
    if new is None:
        table = old["table"]
        if old.get("unique"):
            rule, reason = "index_dropped_unique", "unique index dropped: a key is lost"
        else:
            rule, reason = "index_dropped", "index dropped: queries using it may slow down"
        return [_rated(rule, reason, table=table, obj=old["name"], old=old["definition"])]
    table = new["table"]
    changes: list[Change] = []
    if not renames.same_rebuilt(
        _unnamed_index(old["definition"]), _unnamed_index(new["definition"]), table
    ):
        rule, reason = "index_redefined", "index re-created with another definition"
        if old.get("unique") and not new.get("unique"):
            rule, reason = "index_dropped_unique", "index re-created without UNIQUE: a key is lost"
        changes.append(_rated(
            rule, reason, table=table, obj=new["name"], old=old["definition"],
            new=new["definition"],
        ))  # fmt: skip
    if old["name"] != new["name"]:
        changes.append(_rated(
            "index_renamed", "index renamed", table=table, obj=new["name"],
            old=old["name"], new=new["name"],
        ))  # fmt: skip
    if old.get("valid", True) is not False and new.get("valid") is False:
        changes.append(_rated(
            "index_invalid", "index is now INVALID: queries skip it",
            table=table, obj=new["name"], old={"valid": True}, new={"valid": False},
        ))  # fmt: skip
    elif old.get("valid") is False and new.get("valid", True) is not False:
        changes.append(_rated(
            "index_validated", "index is valid again", table=table, obj=new["name"],
            old={"valid": False}, new={"valid": True},
        ))  # fmt: skip
    return changes


_POLICY_KEYS = ("command", "permissive", "roles", "using", "check")


def _using_true(data: Mapping[str, Any]) -> bool:
    return (data.get("using") or "").strip("() ") == "true"


def _policy_summary(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": data["name"], **{k: data.get(k) for k in _POLICY_KEYS}}


def _policy_changes(d: Delta, renames: _Renames, added_tables: set[str]) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        table = new["table"]
        if new.get("permissive") and _using_true(new):
            rule, reason = (
                "policy_using_true",
                f"permissive policy using (true): every row exposed to {', '.join(new['roles'])}",
            )
        elif new.get("permissive"):
            rule, reason = "policy_added", "permissive policy added: widens row access"
        else:
            rule, reason = "policy_added", "restrictive policy added: narrows row access"
        return [_rated(
            rule, reason, table=table, obj=new["name"], old=None, new=_policy_summary(new),
        )]  # fmt: skip
    if new is None:
        table = old["table"]
        if old.get("permissive"):
            rule, reason = (
                "policy_changed",
                "permissive policy dropped: clients lose access to rows",
            )
        else:
            rule, reason = (
                "policy_restrictive_dropped",
                "restrictive policy dropped: rows it hid are exposed",
            )
        return [_rated(
            rule, reason, table=table, obj=old["name"], old=_policy_summary(old), new=None,
        )]  # fmt: skip
    table = new["table"]
    meaning_changed = not all(renames.same(old.get(k), new.get(k)) for k in _POLICY_KEYS)
    if (
        meaning_changed
        and _using_true(new)
        and not _using_true(old)
        and (new.get("permissive") or not old.get("permissive"))
    ):
        # As open as adding such a policy (permissive) or dropping it
        # (restrictive): ALTER POLICY ... USING (true), or DROP and CREATE.
        if new.get("permissive"):
            rule, reason = (
                "policy_using_true",
                f"policy now using (true): every row exposed to {', '.join(new['roles'])}",
            )
        else:
            rule, reason = (
                "policy_restrictive_dropped",
                "restrictive policy now using (true): rows it hid are exposed",
            )
        return [_rated(
            rule, reason, table=table, obj=new["name"],
            old=_policy_summary(old), new=_policy_summary(new),
        )]  # fmt: skip
    if meaning_changed:
        return [_rated(
            "policy_changed", "policy expression, roles or command changed",
            table=table, obj=new["name"], old=_policy_summary(old), new=_policy_summary(new),
        )]  # fmt: skip
    if old["name"] != new["name"]:
        return [_rated(
            "policy_renamed", "policy renamed", table=table, obj=new["name"],
            old={"name": old["name"]}, new={"name": new["name"]},
        )]  # fmt: skip
    return []


_VIEW_OPTIONS = ("security_invoker", "security_barrier", "check_option")


def _view_columns_broken(
    old: Mapping[str, Any], new: Mapping[str, Any], renames: _Renames
) -> list[str]:
    """Output columns of ``old`` that readers can no longer read as before."""
    now = {c["name"]: c.get("type") for c in new.get("columns") or []}
    return [
        c["name"]
        for c in old.get("columns") or []
        if c["name"] not in now or not renames.same(c.get("type"), now[c["name"]])
    ]


def _view_changes(d: Delta, renames: _Renames) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        name = _qualified(new)
        return [_rated(
            "view_added", f"new {new['kind']}", table=name, obj=name, new=new.get("definition"),
        )]  # fmt: skip
    if new is None:
        name = _qualified(old)
        return [_rated(
            "view_dropped", f"{old['kind']} dropped: its readers break",
            table=name, obj=name, old=old.get("definition"),
        )]  # fmt: skip
    name = _qualified(new)
    changes: list[Change] = []
    if _qualified(old) != name:
        changes.append(_rated(
            "view_renamed", f"clients using {_qualified(old)} break",
            table=name, obj=name, old=_qualified(old), new=name,
        ))  # fmt: skip
    old_options = {k: old.get(k) or None for k in _VIEW_OPTIONS}
    new_options = {k: new.get(k) or None for k in _VIEW_OPTIONS}
    if old_options != new_options:
        if (
            old_options["security_invoker"]
            and not new_options["security_invoker"]
            and new.get("reads_rls")
        ):
            rule, reason = (
                "view_invoker_off",
                "security_invoker turned off over a table with row level security: "
                "readers now see rows as the view's owner",
            )
        else:
            rule, reason = "view_options", "view options changed"
        changed = [k for k in _VIEW_OPTIONS if old_options[k] != new_options[k]]
        changes.append(_rated(
            rule, reason, table=name, obj=name,
            old={k: old_options[k] for k in changed}, new={k: new_options[k] for k in changed},
        ))  # fmt: skip
    broken = _view_columns_broken(old, new, renames)
    if broken:
        changes.append(_rated(
            "view_columns", f"output column(s) {', '.join(broken)} removed, renamed or retyped",
            table=name, obj=name, old=old.get("columns"), new=new.get("columns"),
        ))  # fmt: skip
    elif not renames.same(
        old.get("definition"), renames.without_rename_aliases(new.get("definition"))
    ):
        changes.append(_rated(
            "view_changed", "view definition changed", table=name, obj=name,
            old=old.get("definition"), new=new.get("definition"),
        ))  # fmt: skip
    return changes


def _signature(data: Mapping[str, Any]) -> str:
    return f"{data['schema']}.{data['name']}({data.get('arguments') or ''})"


_FUNCTION_ATTRS = (
    "body",
    "arguments",
    "language",
    "volatility",
    "strict",
    "config",
    "kind",
)


def _same_function_attr(
    key: str, old: Mapping[str, Any], new: Mapping[str, Any], renames: _Renames
) -> bool:
    """A body given as source text (prosrc) is never rewritten by PostgreSQL:
    if it differs, the migration changed it. A SQL-standard body (BEGIN
    ATOMIC, read back as CREATE ... by pg_get_functiondef) follows renames."""
    if key == "body":
        if not str(old.get(key) or "").startswith("CREATE "):
            return bool(old.get(key) == new.get(key))
        # As in a view: a renamed column is printed "new AS old".
        return renames.same(old.get(key), renames.without_rename_aliases(new.get(key)))
    return renames.same(old.get(key), new.get(key))


def _function_changes(d: Delta, renames: _Renames) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        sig = _signature(new)
        return [_rated(
            "function_added", f"new {new.get('kind', 'function')}", table=None, obj=sig, new=sig,
        )]  # fmt: skip
    if new is None:
        sig = _signature(old)
        return [_rated(
            "function_dropped", "dropped: rpc() callers break", table=None, obj=sig, old=sig,
        )]  # fmt: skip
    sig = _signature(new)
    changes: list[Change] = []
    if (old["schema"], old["name"]) != (new["schema"], new["name"]):
        changes.append(_rated(
            "function_renamed", f"rpc() callers of {_signature(old)} break",
            table=None, obj=sig, old=_signature(old), new=sig,
        ))  # fmt: skip
    if not old.get("security_definer") and new.get("security_definer"):
        changes.append(_rated(
            "function_definer", "now SECURITY DEFINER: runs with its owner's privileges",
            table=None, obj=sig, old={"security_definer": False}, new={"security_definer": True},
        ))  # fmt: skip
    elif old.get("security_definer") != new.get("security_definer"):
        changes.append(_rated(
            "function_changed", "no longer SECURITY DEFINER",
            table=None, obj=sig, old={"security_definer": True}, new={"security_definer": False},
        ))  # fmt: skip
    # Arguments and result name types: a renamed enum type changes their text only.
    if not renames.same(old.get("result"), new.get("result")):
        changes.append(_rated(
            "function_result", "result changed: callers reading its type or columns break",
            table=None, obj=sig, old={"result": old.get("result")},
            new={"result": new.get("result")},
        ))  # fmt: skip
    changed = [k for k in _FUNCTION_ATTRS if not _same_function_attr(k, old, new, renames)]
    if changed:
        changes.append(_rated(
            "function_changed", f"{', '.join(changed)} changed", table=None, obj=sig,
            old={k: old.get(k) for k in changed}, new={k: new.get(k) for k in changed},
        ))  # fmt: skip
    return changes


def _enum_changes(d: Delta) -> list[Change]:
    old, new = d.get("old"), d.get("new")
    if old is None:
        name = _qualified(new)
        return [_rated("enum_added", "new enum type", table=None, obj=name, new=new["values"])]
    if new is None:
        name = _qualified(old)
        return [
            _rated("enum_dropped", "enum type dropped", table=None, obj=name, old=old["values"])
        ]
    name = _qualified(new)
    changes: list[Change] = []
    if _qualified(old) != name:
        changes.append(_rated(
            "enum_value_removed", f"type renamed from {_qualified(old)}",
            table=None, obj=name, old=_qualified(old), new=name,
        ))  # fmt: skip
    old_values, new_values = list(old["values"]), list(new["values"])
    if old_values != new_values:
        removed = [v for v in old_values if v not in new_values]
        if removed:
            kind = "renamed" if len(old_values) == len(new_values) else "removed"
            rule, reason = (
                "enum_value_removed",
                f"value {kind}: {', '.join(removed)} no longer valid",
            )
        else:
            rule, reason = "enum_value_added", "value added"
        changes.append(_rated(
            rule, reason, table=None, obj=name, old=old_values, new=new_values,
        ))  # fmt: skip
    return changes


# --- PL/Python entry point -------------------------------------------------


def plpython_diff(deltas_json: str) -> str:
    """``resilience._schema_diff(json)``: deltas as JSON text in, changes as JSON text out."""
    deltas = _json_loads(deltas_json) if deltas_json else []
    return _json_dumps(compute_changes(deltas))
