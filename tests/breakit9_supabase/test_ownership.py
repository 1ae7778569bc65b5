"""A logical transaction belongs to its owner, the role plus the JWT subject,
as PostgREST sets them: another signed-in user, anon, and (for writes)
service_role cannot use it; service_role is the project's admin."""

from __future__ import annotations

from typing import Any

import psycopg

from .supa import ALICE, BOB, Rest, sqlstate, table_rows

FOREIGN_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("tx_status", {}),
    ("tx_execute", {"table_name": "todos", "operation": "insert", "data": {"title": "x"}}),
    ("tx_savepoint", {"name": "s"}),
    ("tx_rollback_to", {"name": "s"}),
    ("tx_commit", {}),
    ("tx_rollback", {}),
]


def _alice_tx(conn: psycopg.Connection[Any]) -> Any:
    alice = Rest(conn, sub=ALICE)
    tx = alice.rpc("tx_begin", timeout_ms=30000, label="signup")
    alice.rpc("tx_savepoint", tx_id=tx, name="s")
    alice.rpc(
        "tx_execute", tx_id=tx, table_name="todos", operation="insert", data={"title": "mine"}
    )
    return tx


def test_another_user_or_role_gets_not_found_for_every_call_and_cannot_unmanage(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    tx = _alice_tx(authenticator)
    before = table_rows(project)
    bob = Rest(authenticator, sub=BOB)
    for function, args in FOREIGN_CALLS:
        assert sqlstate(lambda f=function, a=args: bob.rpc(f, tx_id=tx, **a)) == "RZ001", function
    assert table_rows(project) == before
    # Alice's subject under another role (a forged or reused JWT) is another owner.
    forged = Rest(authenticator, role="service_role", sub=ALICE)
    for function in ("tx_execute", "tx_commit"):
        args = dict(FOREIGN_CALLS)[function]
        assert sqlstate(lambda f=function, a=args: forged.rpc(f, tx_id=tx, **a)) == "RZ001"
    # Nor may a signed-in user stop the capture of the app's tables.
    assert sqlstate(lambda: bob.rpc("unmanage_table", table_name="todos")) == "42501"
    assert sqlstate(lambda: bob.rpc("manage_table", table_name="todos")) == "42501"
    alice = Rest(authenticator, sub=ALICE)
    assert alice.rpc("tx_status", tx_id=tx)["rows"] == 1
    assert alice.rpc("tx_commit", tx_id=tx)["status"] == "committed"


def test_another_user_cannot_join_by_header_nor_read_audit_images_or_the_list(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    tx = _alice_tx(authenticator)
    bob = Rest(authenticator, sub=BOB, headers={"x-resilience-tx": str(tx)})
    assert sqlstate(lambda: bob.request("insert into todos (title) values ('b')")) == "RZ001"
    assert sqlstate(lambda: bob.rpc("tx_images", tx_id=tx)) == "42501"
    bob.headers = {}
    assert bob.request("select count(*) from tx_active()") == [(0,)]
    audit = "select count(*) from resilience.audit_log where tx_id = %s"
    assert bob.request(audit, (tx,)) == [(0,)]
    assert Rest(authenticator, sub=ALICE).request(audit, (tx,)) == [(3,)]


def test_anon_may_call_no_wrapper(authenticator: psycopg.Connection[Any]) -> None:
    tx = _alice_tx(authenticator)
    anon = Rest(authenticator, role="anon", sub=None)
    for function, args in FOREIGN_CALLS + [("tx_images", {})]:
        assert sqlstate(lambda f=function, a=args: anon.rpc(f, tx_id=tx, **a)) == "42501", function
    for function in ("tx_begin", "tx_active", "tx_reap", "tx_pre_request"):
        assert sqlstate(lambda f=function: anon.rpc(f)) == "42501", function


def test_service_role_rolls_back_and_inspects_any_transaction_but_never_writes_in_it(
    project: str, authenticator: psycopg.Connection[Any]
) -> None:
    before = table_rows(project)
    tx = _alice_tx(authenticator)
    service = Rest(authenticator, role="service_role", sub=None)
    for function, args in FOREIGN_CALLS:
        if function not in ("tx_status", "tx_rollback"):
            assert sqlstate(lambda f=function, a=args: service.rpc(f, tx_id=tx, **a)) == "RZ001"
    assert service.rpc("tx_status", tx_id=tx)["owner_sub"] == ALICE
    audit = "select count(*) from resilience.audit_log where tx_id = %s"
    assert service.request(audit, (tx,)) == [(3,)]  # every audit row (resilience_admin)
    assert len(service.rpc("tx_images", tx_id=tx)) >= 1
    assert service.rpc("tx_rollback", tx_id=tx, reason="admin")["status"] == "rolled_back"
    assert table_rows(project) == before
