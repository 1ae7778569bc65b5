"""plpython/schema_diff.py without a database: every change type and its severity.

The same module runs in PL/Python at commit and in the client; these tests
feed it hand-written deltas in the snapshot format of docs/schema_tracking.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgresilience._resources import data_path
from pgresilience.schema import diff, severity_doc

sd = diff.module()


def table(name: str = "users", schema: str = "public", **extra: Any) -> dict[str, Any]:
    data = {
        "schema": schema, "name": name, "kind": "table", "persistence": "logged", "rls": False,
        "rls_forced": False, "partition_of": None, "partition_bound": None,
        "partition_key": None, "columns": [],
    }  # fmt: skip
    data.update(extra)
    return data


def column(
    name: str, type_: str = "text", table_: str = "public.users", **extra: Any
) -> dict[str, Any]:
    data = {
        "table": table_, "name": name, "type": type_, "not_null": False, "default": None,
        "generated": None, "identity": None, "collation": None,
    }  # fmt: skip
    data.update(extra)
    return data


def constraint(name: str, type_: str, definition: str, **extra: Any) -> dict[str, Any]:
    data = {
        "table": "public.users", "name": name, "type": type_, "definition": definition,
        "references": None, "validated": True, "deferrable": False, "deferred": False,
    }  # fmt: skip
    data.update(extra)
    return data


def index(name: str, unique: bool = False, table_: str = "public.users") -> dict[str, Any]:
    return {"table": table_, "name": name, "unique": unique,
            "definition": f"CREATE INDEX {name} ON {table_} USING btree (email)"}  # fmt: skip


def policy(name: str = "own_rows", **extra: Any) -> dict[str, Any]:
    data = {
        "table": "public.users", "name": name, "command": "select", "permissive": True,
        "roles": ["authenticated"], "using": "(owner = auth.uid())", "check": None,
    }  # fmt: skip
    data.update(extra)
    return data


def delta(kind: str, id_: str, old: Any, new: Any, table_id: str | None = "100") -> dict[str, Any]:
    return {"kind": kind, "id": id_, "table_id": table_id, "old": old, "new": new}


def only(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    changes = sd.compute_changes(deltas)
    assert len(changes) == 1, changes
    return changes[0]


CHANGE_KEYS = {"type", "table", "column", "old_value", "new_value", "severity", "reason"}


# --- tables -----------------------------------------------------------------


def test_table_added_is_low_and_lists_its_columns_instead_of_one_change_per_column() -> None:
    changes = sd.compute_changes([
        delta("table", "100", None, table(columns=["id", "email"])),
        delta("column", "100.1", None, column("id", "bigint")),
        delta("column", "100.2", None, column("email")),
        delta("index", "101", None, index("users_email_idx")),
    ])  # fmt: skip
    assert [c["type"] for c in changes] == ["table_added"]
    assert changes[0]["severity"] == "low"
    assert changes[0]["new_value"]["columns"] == [
        {"name": "id", "type": "bigint"},
        {"name": "email", "type": "text"},
    ]
    assert CHANGE_KEYS <= set(changes[0])


def test_table_dropped_is_critical_and_names_dependents_dropped_with_it() -> None:
    fk = constraint(
        "orders_user_fk",
        "foreign key",
        "FOREIGN KEY (user_id) REFERENCES public.users(id)",
        table="public.orders",
        references="public.users",
    )
    view = {"schema": "public", "name": "user_emails", "kind": "view", "columns": [],
            "definition": " SELECT users.email FROM users;"}  # fmt: skip
    changes = sd.compute_changes([
        delta("table", "100", table(), None),
        delta("column", "100.1", column("id"), None),
        delta("constraint", "300", fk, None, table_id="200"),
        delta("view", "400", view, None, table_id="400"),
    ])  # fmt: skip
    by_type = {c["type"]: c for c in changes}
    assert by_type["table_dropped"]["severity"] == "critical"
    assert "orders_user_fk" in by_type["table_dropped"]["reason"]
    assert "public.user_emails" in by_type["table_dropped"]["reason"]
    assert by_type["constraint_dropped"]["table"] == "public.orders"
    assert by_type["view_dropped"]["severity"] == "high"
    assert "column_dropped" not in by_type  # implied by the table drop


def test_table_renamed_is_high_and_its_columns_are_not_reported() -> None:
    changes = sd.compute_changes([
        delta("table", "100", table("users"), table("people")),
        delta("column", "100.1", column("id"), column("id", table_="public.people")),
        delta("index", "101", index("users_email_idx"),
              index("users_email_idx", table_="public.people")),
    ])  # fmt: skip
    assert len(changes) == 1
    assert changes[0] | {"reason": None} == {
        "type": "table_renamed", "table": "public.people", "column": None,
        "object": "public.people", "old_value": "public.users", "new_value": "public.people",
        "severity": "high", "reason": None, "rule": "table_renamed",
    }  # fmt: skip


def test_table_moved_to_another_schema_is_a_rename() -> None:
    change = only([delta("table", "100", table(), table(schema="archive"))])
    assert change["type"] == "table_renamed"
    assert "schema" in change["reason"]


def test_set_unlogged_rewrites_the_table() -> None:
    change = only([delta("table", "100", table(), table(persistence="unlogged"))])
    assert (change["type"], change["severity"]) == ("table_changed", "high")


# --- columns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "severity"),
    [
        (column("nickname"), "low"),
        (column("status", default="'active'::text", not_null=True), "low"),
        (column("status", not_null=True), "high"),
        (column("token", "uuid", default="gen_random_uuid()"), "high"),
        (column("n", "bigint", identity="always", not_null=True), "high"),
        (column("lower_email", generated="lower(email)"), "high"),
    ],
    ids=["nullable", "constant-default", "not-null-no-default", "volatile-default", "identity",
         "generated"],
)  # fmt: skip
def test_column_added_severity(new: dict[str, Any], severity: str) -> None:
    change = only([delta("column", "100.5", None, new)])
    assert (change["type"], change["column"], change["severity"]) == (
        "column_added",
        new["name"],
        severity,
    )


def test_column_dropped_is_critical() -> None:
    change = only([delta("column", "100.2", column("email"), None)])
    assert (change["type"], change["column"], change["severity"]) == (
        "column_dropped",
        "email",
        "critical",
    )


def test_column_renamed_is_high_and_not_a_drop_plus_add() -> None:
    change = only([delta("column", "100.2", column("name"), column("full_name"))])
    assert change["type"] == "column_renamed"
    assert (change["old_value"], change["new_value"], change["severity"]) == (
        "name",
        "full_name",
        "high",
    )


@pytest.mark.parametrize(
    ("old", "new", "rewrites", "severity"),
    [
        ("integer", "bigint", True, "high"),
        ("character varying(20)", "character varying(50)", False, "low"),
        ("character varying(50)", "character varying(20)", True, "high"),
        ("character varying(20)", "text", False, "low"),
        ("text", "character varying", False, "low"),
        ("text", "character varying(10)", True, "high"),
        ("numeric(10,2)", "numeric(12,2)", False, "low"),
        ("numeric(10,2)", "numeric(10,4)", True, "high"),
        ("numeric(10,2)", "numeric", False, "low"),
        ("cidr", "inet", False, "low"),
        ("timestamp(3) without time zone", "timestamp(6) without time zone", False, "low"),
        ("text", "integer", True, "high"),
        ("text[]", "character varying[]", False, "low"),
    ],
)
def test_column_type_change_says_whether_it_rewrites_the_table(
    old: str, new: str, rewrites: bool, severity: str
) -> None:
    change = only([delta("column", "100.2", column("c", old), column("c", new))])
    assert change["type"] == "column_type_changed"
    assert (change["old_value"], change["new_value"]) == (old, new)
    assert change["rewrites_table"] is rewrites
    assert change["severity"] == severity
    assert ("no table rewrite" in change["reason"]) is (not rewrites)


def test_narrowing_type_changes_are_flagged() -> None:
    assert sd.type_change_effect("bigint", "integer") == (True, True)
    assert sd.type_change_effect("integer", "bigint") == (True, False)


def test_set_not_null_is_high_and_drop_not_null_is_medium() -> None:
    set_nn = only([delta("column", "100.2", column("email"), column("email", not_null=True))])
    drop_nn = only([delta("column", "100.2", column("email", not_null=True), column("email"))])
    assert (set_nn["type"], set_nn["severity"], set_nn["new_value"]) == (
        "nullability_changed",
        "high",
        True,
    )
    assert (drop_nn["type"], drop_nn["severity"], drop_nn["new_value"]) == (
        "nullability_changed",
        "medium",
        False,
    )


def test_default_changes() -> None:
    changed = only([delta("column", "100.3", column("s", default="'a'::text"),
                          column("s", default="'b'::text"))])  # fmt: skip
    assert (changed["type"], changed["severity"]) == ("default_changed", "low")
    assert (changed["old_value"], changed["new_value"]) == ("'a'::text", "'b'::text")
    dropped = only([delta("column", "100.3", column("s", default="'a'::text", not_null=True),
                          column("s", not_null=True))])  # fmt: skip
    assert (dropped["type"], dropped["severity"]) == ("default_changed", "high")


def test_identity_generated_and_collation_changes_are_medium() -> None:
    change = only([delta("column", "100.1", column("id", "bigint"),
                         column("id", "bigint", identity="by default"))])  # fmt: skip
    assert (change["type"], change["severity"]) == ("column_changed", "medium")


def test_one_column_can_change_in_several_ways_at_once() -> None:
    changes = sd.compute_changes([
        delta("column", "100.2", column("age", "integer"),
              column("years", "bigint", not_null=True)),
    ])  # fmt: skip
    assert [c["type"] for c in changes] == [
        "column_renamed",
        "column_type_changed",
        "nullability_changed",
    ]
    assert sd.max_severity(changes) == "high"


# --- constraints, keys, indexes --------------------------------------------


@pytest.mark.parametrize(
    ("data", "severity"),
    [
        (constraint("age_positive", "check", "CHECK ((age > 0))"), "medium"),
        (constraint("age_positive", "check", "CHECK ((age > 0)) NOT VALID", validated=False),
         "low"),
        (constraint("users_org_fk", "foreign key",
                    "FOREIGN KEY (org_id) REFERENCES public.orgs(id)", references="public.orgs"),
         "medium"),
        (constraint("users_email_key", "unique", "UNIQUE (email)"), "medium"),
        (constraint("no_overlap", "exclusion", "EXCLUDE USING gist (during WITH &&)"), "medium"),
    ],
    ids=["check", "check-not-valid", "foreign-key", "unique", "exclusion"],
)  # fmt: skip
def test_constraint_added(data: dict[str, Any], severity: str) -> None:
    change = only([delta("constraint", "500", None, data)])
    assert (change["type"], change["severity"], change["new_value"]) == (
        "constraint_added",
        severity,
        data["definition"],
    )


@pytest.mark.parametrize(
    ("type_", "severity"), [("unique", "high"), ("check", "medium"), ("foreign key", "medium")]
)
def test_constraint_dropped(type_: str, severity: str) -> None:
    change = only([delta("constraint", "500", constraint("c", type_, "X"), None)])
    assert (change["type"], change["severity"]) == ("constraint_dropped", severity)


def test_constraint_renamed_and_validated() -> None:
    changes = sd.compute_changes([
        delta("constraint", "500",
              constraint("a", "check", "CHECK ((age > 0)) NOT VALID", validated=False),
              constraint("b", "check", "CHECK ((age > 0))")),
    ])  # fmt: skip
    assert [(c["type"], c["severity"]) for c in changes] == [
        ("constraint_renamed", "low"),
        ("constraint_changed", "low"),
    ]


def test_primary_key_added_dropped_and_replaced_are_high() -> None:
    pk_id = constraint("users_pkey", "primary key", "PRIMARY KEY (id)")
    pk_email = constraint("users_pkey2", "primary key", "PRIMARY KEY (email)")
    added = only([delta("constraint", "500", None, pk_id)])
    dropped = only([delta("constraint", "500", pk_id, None)])
    replaced = only([delta("constraint", "500", pk_id, None),
                     delta("constraint", "501", None, pk_email)])  # fmt: skip
    for change in (added, dropped, replaced):
        assert (change["type"], change["severity"]) == ("primary_key_changed", "high")
    assert (replaced["old_value"], replaced["new_value"]) == (
        "PRIMARY KEY (id)",
        "PRIMARY KEY (email)",
    )


def test_indexes() -> None:
    added = only([delta("index", "600", None, index("users_email_idx"))])
    assert (added["type"], added["severity"]) == ("index_added", "medium")
    assert "CONCURRENTLY" in added["reason"]
    plain = only([delta("index", "600", index("users_email_idx"), None)])
    unique = only([delta("index", "600", index("users_email_key", unique=True), None)])
    renamed = only([delta("index", "600", index("a"), index("b"))])
    assert (plain["type"], plain["severity"]) == ("index_dropped", "medium")
    assert (unique["type"], unique["severity"]) == ("index_dropped", "high")
    assert (renamed["type"], renamed["severity"]) == ("index_renamed", "low")


def test_index_definition_text_changed_by_a_column_rename_is_not_a_change() -> None:
    old = index("users_email_idx")
    new = dict(old, definition=old["definition"].replace("(email)", "(mail)"))
    changes = sd.compute_changes([
        delta("column", "100.2", column("email"), column("mail")),
        delta("index", "600", old, new),
    ])  # fmt: skip
    assert [c["type"] for c in changes] == ["column_renamed"]


# --- security: RLS and policies --------------------------------------------


def test_rls_disabled_is_critical_and_enabled_is_high() -> None:
    off = only([delta("table", "100", table(rls=True), table(rls=False))])
    on = only([delta("table", "100", table(rls=False), table(rls=True))])
    assert (off["type"], off["severity"]) == ("rls_changed", "critical")
    assert (on["type"], on["severity"]) == ("rls_changed", "high")


@pytest.mark.parametrize(
    ("old", "new", "severity"),
    [
        (None, policy(), "medium"),
        (None, policy(using="true", roles=["anon"]), "critical"),
        (None, policy(permissive=False), "medium"),
        (policy(), None, "high"),
        (policy(permissive=False), None, "critical"),
        (policy(), policy(using="owner = current_user"), "high"),
        (policy(), policy(using="true"), "critical"),
        (policy(permissive=False), policy(using="true", permissive=False), "critical"),
        (policy(), policy(roles=["anon", "authenticated"]), "high"),
        (policy(), policy("renamed"), "low"),
    ],
    ids=["added", "added-using-true", "restrictive-added", "dropped", "restrictive-dropped",
         "using-changed", "made-using-true", "restrictive-made-using-true", "roles-changed",
         "renamed"],
)  # fmt: skip
def test_policy_changes(old: Any, new: Any, severity: str) -> None:
    change = only([delta("policy", "700", old, new)])
    assert (change["type"], change["severity"]) == ("policy_changed", severity)


def test_policy_text_changed_only_by_a_column_rename_is_not_a_change() -> None:
    changes = sd.compute_changes([
        delta("column", "100.4", column("owner"), column("owner_id")),
        delta("policy", "700", policy(), policy(using="(owner_id = auth.uid())")),
    ])  # fmt: skip
    assert [c["type"] for c in changes] == ["column_renamed"]


# --- views, functions, enums -----------------------------------------------


def view(
    name: str = "active_users", definition: str = " SELECT users.id FROM users;"
) -> dict[str, Any]:
    return {"schema": "public", "name": name, "kind": "view", "definition": definition,
            "columns": [{"name": "id", "type": "bigint"}]}  # fmt: skip


def test_views() -> None:
    assert only([delta("view", "800", None, view())])["type"] == "view_added"
    dropped = only([delta("view", "800", view(), None)])
    renamed = only([delta("view", "800", view(), view("users_active"))])
    changed = only([delta("view", "800", view(), view(definition=" SELECT 1 AS id;"))])
    assert (dropped["type"], dropped["severity"]) == ("view_dropped", "high")
    assert (renamed["type"], renamed["severity"]) == ("view_renamed", "high")
    assert (changed["type"], changed["severity"]) == ("view_changed", "medium")


def test_view_text_changed_only_by_a_table_rename_is_not_a_change() -> None:
    changes = sd.compute_changes([
        delta("table", "100", table("users"), table("people")),
        delta("view", "800", view(), view(definition=" SELECT people.id FROM people;"), "800"),
    ])  # fmt: skip
    assert [c["type"] for c in changes] == ["table_renamed"]


def function(**extra: Any) -> dict[str, Any]:
    data = {
        "schema": "public", "name": "add_user", "kind": "function", "arguments": "email text",
        "result": "bigint", "language": "sql", "body": "select 1", "volatility": "volatile",
        "security_definer": False, "strict": False, "config": None,
    }  # fmt: skip
    data.update(extra)
    return data


def test_functions() -> None:
    added = only([delta("function", "900", None, function(), None)])
    dropped = only([delta("function", "900", function(), None, None)])
    body = only([delta("function", "900", function(), function(body="select 2"), None)])
    definer = only([delta("function", "900", function(), function(security_definer=True), None)])
    renamed = only([delta("function", "900", function(), function(name="create_user"), None)])
    assert (added["type"], added["severity"], added["object"]) == (
        "function_added",
        "low",
        "public.add_user(email text)",
    )
    assert (dropped["type"], dropped["severity"]) == ("function_dropped", "high")
    assert (body["type"], body["severity"]) == ("function_changed", "medium")
    assert body["new_value"] == {"body": "select 2"}
    assert (definer["type"], definer["severity"]) == ("function_changed", "high")
    assert (renamed["type"], renamed["severity"]) == ("function_renamed", "high")


def enum(values: list[str], name: str = "mood") -> dict[str, Any]:
    return {"schema": "public", "name": name, "values": values}


def test_columns_of_a_renamed_enum_type_are_not_type_changes() -> None:
    changes = sd.compute_changes([
        delta("enum", "950", enum(["a"]), enum(["a"], name="feeling"), None),
        delta("column", "100.3", column("m", "public.mood"), column("m", "public.feeling")),
    ])  # fmt: skip
    assert [(c["type"], c["severity"]) for c in changes] == [("enum_changed", "high")]


def test_enums() -> None:
    added = only([delta("enum", "950", None, enum(["a"]), None)])
    value_added = only([delta("enum", "950", enum(["a"]), enum(["a", "b"]), None)])
    renamed_value = only([delta("enum", "950", enum(["a", "b"]), enum(["a", "c"]), None)])
    dropped = only([delta("enum", "950", enum(["a"]), None, None)])
    assert (added["type"], added["severity"]) == ("enum_added", "low")
    assert (value_added["type"], value_added["severity"]) == ("enum_changed", "low")
    assert (renamed_value["type"], renamed_value["severity"]) == ("enum_changed", "high")
    assert (dropped["type"], dropped["severity"]) == ("enum_dropped", "medium")


# --- hashing and the PL/Python entry point ---------------------------------


def test_canonical_json_orders_keys_like_jsonb() -> None:
    # jsonb: shorter keys first, then bytewise; ", " and ": " separators.
    assert sd.canonical_json({"bb": 1, "a": [True, None], "ab": "é"}) == (
        '{"a": [true, null], "ab": "é", "bb": 1}'
    )


def test_schema_hash_ignores_object_order_and_group_keys() -> None:
    hashes = [sd.object_hash("enum", enum(["a"], n)) for n in ("x", "y", "z")]
    objects = [(1, hashes[0]), (2, hashes[1]), (2, hashes[2])]
    assert sd.schema_hash(objects) == sd.schema_hash(reversed(objects))
    # Group keys (OIDs) only say which objects belong together.
    assert sd.schema_hash(objects) == sd.schema_hash(
        [(7, hashes[0]), (9, hashes[1]), (9, hashes[2])]
    )
    assert sd.schema_hash(objects) != sd.schema_hash([(1, h) for h in hashes])
    assert sd.schema_hash([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_max_severity() -> None:
    assert sd.max_severity([]) is None
    assert sd.max_severity([{"severity": "low"}, {"severity": "critical"},
                            {"severity": "high"}]) == "critical"  # fmt: skip


def test_plpython_entry_point_takes_and_returns_json_text() -> None:
    out = json.loads(sd.plpython_diff(json.dumps([delta("column", "100.2", column("e"), None)])))
    assert out[0]["type"] == "column_dropped"
    assert json.loads(sd.plpython_diff("[]")) == []


def test_every_rule_in_the_severity_table_uses_a_known_severity() -> None:
    assert {rule.severity for rule in sd.SEVERITY_RULES} <= set(sd.SEVERITIES)


def test_module_runs_on_the_system_python_the_server_uses() -> None:
    """PL/Python embeds Debian's /usr/bin/python3; the module must import there (stdlib only)."""
    system_python = "/usr/bin/python3"
    source = data_path("plpython") / "schema_diff.py"
    script = (
        "import json, types; m = types.ModuleType('schema_diff'); "
        f"exec(compile(open({str(source)!r}).read(), 'schema_diff.py', 'exec'), m.__dict__); "
        "print(json.loads(m.plpython_diff('[]')))"
    )
    try:
        result = subprocess.run([system_python, "-I", "-c", script], capture_output=True, text=True,
                                check=True)  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no system python3")
    assert result.stdout.strip() == "[]"


def test_docs_severity_table_is_generated_from_the_rules() -> None:
    """docs/schema_tracking.md shows exactly RULES, as the generator renders it
    (regenerate: python -m pgresilience.schema.severity_doc)."""
    docs = (Path(__file__).parents[2] / "docs" / "schema_tracking.md").read_text()
    assert severity_doc.with_table(docs) == docs
    table = docs.split("<!-- severity-table:start -->")[1].split("<!-- severity-table:end -->")[0]
    rows = table.strip().splitlines()[2:]
    assert len(rows) == len(sd.RULES)
    for row, rule in zip(rows, sd.SEVERITY_RULES, strict=True):
        assert f"`{rule.type}`" in row and f"**{rule.severity}**" in row


def test_every_change_names_the_rule_that_rated_it() -> None:
    change = only([delta("column", "100.2", column("email"), None)])
    assert change["rule"] == "column_dropped"
    assert sd.RULES[change["rule"]].severity == change["severity"]


def test_module_imports_neither_typing_nor_hashlib_nor_re_when_it_loads() -> None:
    """PL/Python loads the module at the first DDL's commit in a new session:
    what it imports there is paid by that commit."""
    source = data_path("plpython") / "schema_diff.py"
    script = (
        "import sys, types; before = set(sys.modules); m = types.ModuleType('schema_diff'); "
        f"exec(compile(open({str(source)!r}).read(), 'schema_diff.py', 'exec'), m.__dict__); "
        "print(sorted(set(sys.modules) - before))"
    )
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                            check=True)  # fmt: skip
    loaded = result.stdout
    assert "'typing'" not in loaded and "'hashlib'" not in loaded and "'collections'" not in loaded
    assert "'re'" not in loaded and "'json'" not in loaded


JSON_VALUES: list[Any] = [
    "x", "é\u2028\"\\\n\t\x00", "\U0001f600", 0, -5, 10**30, 1.5, 1e300, True, False, None, [], {},
    {"a": [1, {"b": None, "é": "ü"}], "k": False, "": ""}, [[[]]],
]  # fmt: skip


def fresh_module() -> Any:
    """A new copy of the module (its JSON codec not chosen yet)."""
    import types

    source = data_path("plpython") / "schema_diff.py"
    m = types.ModuleType("schema_diff_copy")
    exec(compile(source.read_text(), "schema_diff.py", "exec"), m.__dict__)
    return m


@pytest.mark.parametrize("accelerator", [True, False], ids=["_json", "json-fallback"])
def test_json_codec_reads_and_writes_exactly_as_json_does(
    accelerator: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module parses deltas and prints changes without importing json
    (it imports re): the C accelerator must give json's very text; without
    it (another Python), json itself."""
    if not accelerator:
        monkeypatch.setitem(sys.modules, "_json", None)  # import _json now fails
    m = fresh_module()
    for value in JSON_VALUES:
        text = json.dumps(value)
        assert m._json_dumps(value) == text
        assert m._json_loads(text) == value
        assert m._json_loads(f" \n{text}\r\t ") == value
        if isinstance(value, str):
            assert m._json_string(value) == json.dumps(value, ensure_ascii=False)
    assert ("loads" in m._CODEC) is not accelerator
    assert json.loads(m.plpython_diff(json.dumps([delta("column", "1.2", column("c"), None)])))


@pytest.mark.parametrize("text", ["", " ", "[1,", "[1] x", '{"a" 1}', '"\\x"', "[1]]"])
def test_json_codec_rejects_what_json_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        fresh_module()._json_loads(text)


def test_json_codec_refuses_what_json_cannot_write() -> None:
    m = fresh_module()
    shared = [1]
    with pytest.raises(TypeError):
        m._json_dumps({"a": shared, "b": object()})
    # A failed call leaves nothing behind (json's circular-reference check).
    assert m._json_dumps({"a": shared, "b": shared}) == json.dumps({"a": shared, "b": shared})
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError):
        m._json_dumps(looped)
