"""Partitioned-table and CONCURRENTLY patterns of real migrations, each file
in its own psql process: one version per committed file with its real
changes, none for a failed one, nothing left for `schema_refresh()`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.breakit5_schema.conftest import last_version, psql, records, refresh, versions_since

pytestmark = pytest.mark.plpython

ORDERS = """
    create table public.orders (id bigint not null, status text, at date not null)
        partition by range (at);
    create table public.orders_1 partition of public.orders
        for values from ('2026-01-01') to ('2026-02-01');
    create table public.orders_2 partition of public.orders
        for values from ('2026-02-01') to ('2026-03-01');
    insert into public.orders values (1, 'a', '2026-01-05'), (2, 'a', '2026-02-05');
"""


def _run(dsn: str, tmp_path: Path, name: str, text: str, *, one_transaction: bool = True) -> int:
    file = tmp_path / f"{name}.sql"
    file.write_text(text)
    return psql(dsn, file, single_transaction=one_transaction)


def test_partitioned_index_built_concurrently_per_partition_then_attached(
    dsn: str, tmp_path: Path
) -> None:
    """The documented way to index a big partitioned table without blocking
    writes: an invalid index ON ONLY the parent, each partition's index built
    CONCURRENTLY, then attached; the parent's index turns valid."""
    assert _run(dsn, tmp_path, "setup", ORDERS) == 0
    steps = [
        ("parent", "create index orders_status_idx on only public.orders (status);", True),
        ("p1", "create index concurrently orders_1_status_idx on public.orders_1 (status);", False),
        ("p2", "create index concurrently orders_2_status_idx on public.orders_2 (status);", False),
        ("attach", "alter index public.orders_status_idx attach partition orders_1_status_idx;\n"
         "alter index public.orders_status_idx attach partition orders_2_status_idx;", True),
    ]  # fmt: skip
    seen = {}
    for name, text, one in steps:
        before = last_version(dsn)
        assert _run(dsn, tmp_path, name, text, one_transaction=one) == 0
        (version,) = versions_since(dsn, before)
        seen[name] = records(version["changes"])
        assert refresh(dsn)["changed"] is False
    assert seen == {
        "parent": {("index_invalid", "public.orders", None, "high")},
        "p1": {("index_added", "public.orders_1", None, "low")},
        "p2": {("index_added", "public.orders_2", None, "low")},
        "attach": {("index_changed", "public.orders", None, "low")},
    }


def test_failed_create_index_concurrently_records_nothing_then_is_found_invalid(
    dsn: str, tmp_path: Path
) -> None:
    assert _run(dsn, tmp_path, "setup", "create table public.users (id int, email text);"
                "insert into public.users values (1, 'a@x'), (2, 'a@x');") == 0  # fmt: skip
    before = last_version(dsn)
    failing = "create unique index concurrently users_email_key on public.users (email);"
    assert _run(dsn, tmp_path, "cic", failing, one_transaction=False) == 3
    assert versions_since(dsn, before) == []
    # The next migration on the table reports the invalid index besides its own change.
    assert _run(dsn, tmp_path, "next", "alter table public.users add column name text;") == 0
    (version,) = versions_since(dsn, before)
    assert records(version["changes"]) == {
        ("column_added", "public.users", "name", "low"),
        ("index_invalid", "public.users", None, "high"),
    }
    before = last_version(dsn)
    fix = "drop index concurrently public.users_email_key;"
    assert _run(dsn, tmp_path, "fix", fix, one_transaction=False) == 0
    (version,) = versions_since(dsn, before)
    assert records(version["changes"]) == {("index_dropped", "public.users", None, "high")}
    assert refresh(dsn)["changed"] is False


@pytest.mark.min_server_version(14, reason="DETACH PARTITION CONCURRENTLY")
def test_detach_partition_concurrently_is_one_version(dsn: str, tmp_path: Path) -> None:
    """DETACH ... CONCURRENTLY commits twice inside one statement: one version."""
    assert _run(dsn, tmp_path, "setup", ORDERS) == 0
    before = last_version(dsn)
    detach = "alter table public.orders detach partition public.orders_1 concurrently;"
    assert _run(dsn, tmp_path, "detach", detach, one_transaction=False) == 0
    (version,) = versions_since(dsn, before)
    # PostgreSQL leaves the partition bound on the table as a CHECK: a real constraint.
    assert records(version["changes"]) == {
        ("table_changed", "public.orders_1", None, "high"),
        ("constraint_added", "public.orders_1", None, "medium"),
    }
    assert refresh(dsn)["changed"] is False


def test_public_read_policy_is_critical_as_documented(dsn: str, tmp_path: Path) -> None:
    """Supabase's "viewable by everyone" policy: permissive `using (true)`
    added, every row exposed (docs/schema_tracking.md severity table)."""
    assert _run(dsn, tmp_path, "setup", "create table public.posts (id int primary key);"
                "alter table public.posts enable row level security;") == 0  # fmt: skip
    before = last_version(dsn)
    policy = 'create policy "Posts are public" on public.posts for select using (true);'
    assert _run(dsn, tmp_path, "policy", policy) == 0
    (version,) = versions_since(dsn, before)
    assert records(version["changes"]) == {("policy_changed", "public.posts", None, "critical")}


def test_new_partition_of_a_referenced_table_leaves_nothing_for_refresh(
    dsn: str, tmp_path: Path
) -> None:
    """Monthly partitions of a table other tables reference: PostgreSQL adds a
    clone of each such foreign key, naming the new partition, on the
    referencing table; the fold re-reads it (the hash stays right)."""
    assert (
        _run(
            dsn,
            tmp_path,
            "setup",
            """
        create table public.orders (id bigint, at date, primary key (id, at))
            partition by range (at);
        create table public.orders_1 partition of public.orders
            for values from ('2026-01-01') to ('2026-02-01');
        create table public.lines (id bigint primary key, order_id bigint, order_at date,
            foreign key (order_id, order_at) references public.orders (id, at));
    """,
        )
        == 0
    )
    before = last_version(dsn)
    month = "create table public.orders_2 partition of public.orders" \
        " for values from ('2026-02-01') to ('2026-03-01');"  # fmt: skip
    assert _run(dsn, tmp_path, "month", month) == 0
    (version,) = versions_since(dsn, before)
    assert ("table_added", "public.orders_2", None, "low") in records(version["changes"])
    assert refresh(dsn)["changed"] is False
