"""What one client may make the database keep: timeouts within
max_timeout_ms, and bounded text for what is stored and shown again
(savepoint names, labels, rollback reasons). A long savepoint name used to
fail with 54000 (the index row size of the savepoints key), an error no doc
names, and a label of megabytes went into the transactions table and the
audit log on every tx_begin. The docs promise no cap on how many logical
transactions one user keeps open: none is tested here."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import pytest
from security.sessions import Session

from .conftest import raises_sqlstate


def _noise(chars: int) -> str:
    """Text that does not compress (a repeated letter would fit the index)."""
    out = ""
    n = 0
    while len(out) < chars:
        out += hashlib.sha256(str(n).encode()).hexdigest()
        n += 1
    return out[:chars]


def test_savepoint_names_are_bounded(app: psycopg.Connection[Any], user_a: Session) -> None:
    tx = user_a.rpc("tx_begin")
    user_a.rpc("tx_savepoint", tx_id=tx, name=_noise(200))
    for name in (_noise(201), _noise(10_000)):
        with raises_sqlstate("22023"):
            user_a.rpc("tx_savepoint", tx_id=tx, name=name)
    assert user_a.rpc("tx_status", tx_id=tx)["savepoints"] == [_noise(200)]
    with raises_sqlstate("RZ006"):
        user_a.rpc("tx_rollback_to", tx_id=tx, name=_noise(10_000))
    user_a.rpc("tx_rollback_to", tx_id=tx, name=_noise(200))
    assert user_a.rpc("tx_commit", tx_id=tx)["status"] == "committed"


def test_labels_are_bounded(app: psycopg.Connection[Any], user_a: Session) -> None:
    before = app.execute(
        "select (select count(*) from resilience.transactions),"
        " (select count(*) from resilience.audit_log)"
    ).fetchone()
    with raises_sqlstate("22023"):
        user_a.rpc("tx_begin", timeout_ms=1000, label=_noise(1001))
    with raises_sqlstate("22023"):
        user_a.rpc("tx_begin", timeout_ms=1000, label="x" * 5_000_000)
    assert (
        app.execute(
            "select (select count(*) from resilience.transactions),"
            " (select count(*) from resilience.audit_log)"
        ).fetchone()
        == before
    )
    tx = user_a.rpc("tx_begin", timeout_ms=1000, label=_noise(1000))
    assert user_a.rpc("tx_status", tx_id=tx)["label"] == _noise(1000)


def test_rollback_reasons_are_bounded(app: psycopg.Connection[Any], user_a: Session) -> None:
    tx = user_a.rpc("tx_begin")
    user_a.rpc("tx_execute", tx_id=tx, table_name="notes", operation="insert", data={"body": "x"})
    with raises_sqlstate("22023"):
        user_a.rpc("tx_rollback", tx_id=tx, reason=_noise(1001))
    assert user_a.rpc("tx_status", tx_id=tx)["status"] == "active"
    assert user_a.rpc("tx_rollback", tx_id=tx, reason=_noise(1000))["status"] == "rolled_back"


@pytest.mark.parametrize("timeout_ms", [0, -1, -(2**31), 86_400_001, 2**31 - 1])
def test_timeouts_stay_within_max_timeout_ms(
    app: psycopg.Connection[Any], user_a: Session, timeout_ms: int
) -> None:
    with raises_sqlstate("22023"):
        user_a.rpc("tx_begin", timeout_ms=timeout_ms)
    assert app.execute("select count(*) from resilience.transactions").fetchone() == (0,)


def test_a_lowered_max_timeout_binds_clients(app: psycopg.Connection[Any], user_a: Session) -> None:
    app.execute("update resilience.settings set value = '60000' where name = 'max_timeout_ms'")
    with raises_sqlstate("22023"):
        user_a.rpc("tx_begin", timeout_ms=60_001)
    with raises_sqlstate("42501"):
        user_a.query("update resilience.settings set value = '86400000'")
    assert user_a.rpc("tx_begin", timeout_ms=60_000)
