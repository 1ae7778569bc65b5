"""`pgresilience watch` and `pgresilience status` (docs/cli.md,
docs/schema_tracking.md "Where the diff runs"): every version printed with
its changes, each carrying a severity, in every mode; and where DDL does not
become a version by itself (no event triggers, either of them disabled,
tracking switched off) both say plainly that changes appear only after
schema_refresh(), whoever runs them."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgresilience import cli, installer
from pgresilience.schema.watch import watch

from .conftest import set_diff_mode

ONLY_AFTER_REFRESH = "appear ONLY after resilience.schema_refresh()"
# `  [critical] column_dropped public.t.x: text -> ∅ (drops the column and its data)`
CHANGE_LINE = re.compile(r"^  \[(low|medium|high|critical)\] [a-z_]+ \S.*\(.+\)$")


class Watcher:
    """`pgresilience watch` running in a thread, its lines collected."""

    def __init__(self, dsn: str) -> None:
        self.lines: list[str] = []
        self.stop = threading.Event()
        self._seen = threading.Condition()
        self._thread = threading.Thread(
            target=watch, args=(dsn, self._say), kwargs={"stop": self.stop}
        )

    def _say(self, line: str) -> None:
        with self._seen:
            self.lines.append(line)
            self._seen.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 30) -> list[str]:
        with self._seen:
            assert self._seen.wait_for(lambda: predicate(self.lines), timeout), self.lines
            return list(self.lines)

    def __enter__(self) -> Watcher:
        self._thread.start()
        self.wait_for(lambda lines: any(line.startswith("watching") for line in lines))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(30)


def status(dsn: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(["status", "--dsn", dsn])
    out = capsys.readouterr().out
    section = out.split("[schema versions]")[1].split("\n[")[0]
    return code, [line.strip() for line in section.strip().splitlines()]


def says_refresh(lines: list[str]) -> bool:
    return any(ONLY_AFTER_REFRESH in line for line in lines)


def versions_printed(lines: list[str]) -> int:
    return sum(1 for line in lines if line.startswith("schema version "))


def migrate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table profiles (id int primary key, bio text)")
        conn.execute("alter table profiles drop column bio")


def check_printed_changes(lines: list[str]) -> None:
    """Each version line is followed by its change lines, each with a severity."""
    heads = [line for line in lines if line.startswith("schema version ")]
    changes = [line for line in lines if line.startswith("  ")]
    assert heads and changes, lines
    for head in heads:
        assert re.search(r": \d+ change\(s\), max severity (low|medium|high|critical)$", head), head
    for line in changes:
        assert CHANGE_LINE.match(line), line


def test_watch_prints_each_version_with_severities_in_both_diff_modes(
    dsn: str, diff_mode: str, server_features: Any
) -> None:
    set_diff_mode(dsn, diff_mode)
    with Watcher(dsn) as watcher:
        migrate(dsn)
        lines = watcher.wait_for(lambda lines: versions_printed(lines) >= 2)
    check_printed_changes(lines)
    assert (
        "  [critical] column_dropped public.profiles.bio: text -> ∅ (drops the column and its data)"
        in lines
    )
    rated_later = [line for line in lines if "rated when first read" in line]
    client = [line for line in lines if line.startswith("no PL/Python diff here")]
    # Without PL/Python (PostgreSQL 16's npm build, hosted Supabase) the
    # client rates, whatever the setting.
    assert bool(rated_later) is (diff_mode == "first_read" and server_features.plpython)
    assert bool(client) is not server_features.plpython


def test_status_shows_the_last_change_with_its_severity(
    dsn: str, diff_mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    set_diff_mode(dsn, diff_mode)
    migrate(dsn)
    code, lines = status(dsn, capsys)
    assert code == 0
    assert lines[0].startswith("current version: 3 (hash ")
    assert "last change: 1 change(s), max severity critical, tables public.profiles" in lines
    assert "tracking: on (event triggers fold each transaction's DDL at commit)" in lines
    assert not [line for line in lines if ONLY_AFTER_REFRESH in line]


@pytest.fixture
def no_event_triggers_dsn(bare_dsn: str) -> Iterator[str]:
    """pgresilience installed without event triggers (--no-event-triggers;
    a non-superuser install gets the same)."""
    installer.install(bare_dsn, event_triggers=False)
    yield bare_dsn


def test_without_event_triggers_watch_and_status_say_refresh_and_still_rate(
    no_event_triggers_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = no_event_triggers_dsn
    code, lines = status(dsn, capsys)
    assert code == 0
    assert [line for line in lines if ONLY_AFTER_REFRESH in line]
    assert not [line for line in lines if line.startswith("tracking: on")]
    with Watcher(dsn) as watcher:
        watcher.wait_for(says_refresh)
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create index profiles_id_idx on profiles (id)")
            conn.execute("select resilience.schema_refresh()")
        lines = watcher.wait_for(lambda lines: versions_printed(lines) >= 1)
    check_printed_changes(lines)
    assert any("(refresh, hash" in line for line in lines)


def test_with_the_event_triggers_disabled_both_say_refresh(
    dsn: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    conn.execute("create table profiles (id int primary key, bio text)")
    conn.execute("alter event trigger resilience_schema_sql_drop disable")
    # One of the two is enough to lose drops: status must not say "on".
    code, lines = status(dsn, capsys)
    assert [line for line in lines if ONLY_AFTER_REFRESH in line], lines
    assert not [line for line in lines if line.startswith("tracking: on")], lines
    assert cli.main(["status", "--dsn", dsn]) == 0
    header = capsys.readouterr().out.split("\n[")[0]
    assert "DDL tracked at commit" not in header, header
    assert "event triggers: 4 (1 of schema tracking's disabled" in header, header
    with Watcher(dsn) as watcher:
        watcher.wait_for(says_refresh)


def test_plan_sees_a_drop_with_the_sql_drop_trigger_disabled(
    dsn: str, conn: psycopg.Connection[Any], run_plan: Callable[..., tuple[int, str, str]]
) -> None:
    conn.execute("create table profiles (id int primary key, bio text)")
    conn.execute("alter event trigger resilience_schema_sql_drop disable")
    code, out, _ = run_plan(dsn, "drop table profiles;")
    assert code == 1, out
    assert "critical  table_dropped  public.profiles" in out


def test_with_tracking_off_both_say_refresh(
    dsn: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    conn.execute("update resilience.settings set value = 'off' where name = 'schema_tracking'")
    code, lines = status(dsn, capsys)
    assert [line for line in lines if ONLY_AFTER_REFRESH in line], lines
    with Watcher(dsn) as watcher:
        watcher.wait_for(says_refresh)
        migrate(dsn)
        conn.execute("select resilience.schema_refresh()")
        lines = watcher.wait_for(lambda lines: versions_printed(lines) >= 1)
    check_printed_changes(lines)


def test_the_apps_role_watching_without_event_triggers_is_told_too(
    no_event_triggers_dsn: str, make_role: Callable[..., str], server: Any
) -> None:
    """resilience_user (the app's server role: the documented watcher) may
    not read the package's settings; it must still hear that changes
    appear only after schema_refresh()."""
    dsn = no_event_triggers_dsn
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    make_role("b8_app_server", member_of=("resilience_user",))
    app_dsn = server.dsn(str(dbname), user="b8_app_server")
    with Watcher(app_dsn) as watcher:
        watcher.wait_for(says_refresh)
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select resilience.schema_refresh()")
        lines = watcher.wait_for(lambda lines: versions_printed(lines) >= 1)
    check_printed_changes(lines)


def test_without_plpython_watch_and_status_rate_in_the_client(
    bare_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hosted Supabase has no PL/Python: the client rates every version."""
    installer.install(bare_dsn, plpython=False)
    code, lines = status(bare_dsn, capsys)
    assert (
        "no PL/Python diff here: the client computes each version's changes and severities" in lines
    )
    with Watcher(bare_dsn) as watcher:
        migrate(bare_dsn)
        lines = watcher.wait_for(lambda lines: versions_printed(lines) >= 2)
    check_printed_changes(lines)
    code, lines = status(bare_dsn, capsys)
    assert "last change: 1 change(s), max severity critical, tables public.profiles" in lines
