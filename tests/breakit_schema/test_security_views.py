"""security_invoker turned off on a view over a table with row level
security is an exposure: critical, however the migration turns it off."""

from __future__ import annotations

import pytest

from .conftest import Tracker, one_change

RLS_VIEW = (
    "create table secret (a int, owner_name text)",
    "alter table secret enable row level security",
    "create policy mine on secret using (owner_name = current_user)",
    "create view v with (security_invoker = on) as select a from secret",
)


@pytest.mark.parametrize(
    "statements",
    [
        ("alter view v set (security_invoker = off)",),
        ("alter view v set (security_invoker = false)",),
        ("alter view v reset (security_invoker)",),
        ("drop view v", "create view v as select a from secret"),
        ("create or replace view v as select a from secret",),
    ],
    ids=["off", "false", "reset", "drop-create", "create-or-replace"],
)
@pytest.mark.min_server_version(15, reason="security_invoker views")
def test_security_invoker_off_over_rls_is_critical(
    tracker: Tracker, statements: tuple[str, ...]
) -> None:
    for statement in RLS_VIEW:
        tracker.conn.execute(statement)  # type: ignore[arg-type]  # literal test SQL
    change = one_change(tracker.migrate(*statements))
    assert (change["type"], change["severity"]) == ("view_changed", "critical")


@pytest.mark.xfail(
    strict=True,
    reason="reads_rls looks at the relations a view reads directly: a view over a "
    "security_invoker view over an RLS table is not seen to read RLS, so turning its "
    "security_invoker off is rated medium",
)
@pytest.mark.min_server_version(15, reason="security_invoker views")
def test_security_invoker_off_over_an_invoker_view_over_rls_is_critical(tracker: Tracker) -> None:
    for statement in RLS_VIEW:
        tracker.conn.execute(statement)  # type: ignore[arg-type]
    tracker.conn.execute("create view outer_v with (security_invoker = on) as select a from v")
    change = one_change(tracker.migrate("alter view outer_v set (security_invoker = off)"))
    assert change["severity"] == "critical"
