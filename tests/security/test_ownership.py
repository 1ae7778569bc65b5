"""A logical transaction belongs to its owner: the caller's role plus the JWT
subject. Nobody else can see it, write in it, commit it or roll it back;
a member of resilience_admin may roll back any (and only roll back).

Not yours reads exactly like "does not exist" (RZ001): existence is not leaked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from .conftest import raises_sqlstate, table_rows
from .sessions import Session

NOTES = "public.notes"


def begin_with_a_write(owner: Session) -> str:
    """The owner begins a transaction and inserts a note in it."""
    tx_id = str(owner.rpc("tx_begin"))
    result = owner.rpc(
        "tx_execute", tx_id=tx_id, table_name=NOTES, operation="insert", data={"body": "draft"}
    )
    assert result["success"] is True and result["count"] == 1
    return tx_id


def owner_actions(tx_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every call that acts on a transaction, with valid arguments."""
    return {
        "tx_status": ("tx_status", {"tx_id": tx_id}),
        "tx_execute": (
            "tx_execute",
            {
                "tx_id": tx_id,
                "table_name": NOTES,
                "operation": "insert",
                "data": {"body": "intruder"},
            },
        ),
        "tx_savepoint": ("tx_savepoint", {"tx_id": tx_id, "name": "sp"}),
        "tx_rollback_to": ("tx_rollback_to", {"tx_id": tx_id, "name": "sp"}),
        "tx_commit": ("tx_commit", {"tx_id": tx_id}),
        "tx_rollback": ("tx_rollback", {"tx_id": tx_id}),
    }


def active_ids(session: Session) -> str:
    """tx_active() of this session, as text (the ids it lists)."""
    return json.dumps(session.rpc_set("tx_active"), default=str)


def test_owner_sees_its_transaction_and_others_do_not(
    app: psycopg.Connection[Any], user_a: Session, user_b: Session
) -> None:
    tx_id = begin_with_a_write(user_a)

    assert user_a.rpc("tx_status", tx_id=tx_id)["status"] == "active"
    assert tx_id in active_ids(user_a)

    with raises_sqlstate("RZ001"):
        user_b.rpc("tx_status", tx_id=tx_id)
    assert tx_id not in active_ids(user_b)


ACTIONS = list(owner_actions("x"))


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(
    "intruder_kind",
    ["other subject, same role", "same subject, other role", "same role, no subject"],
)
def test_nobody_but_the_owner_can_act_on_a_transaction(
    app: psycopg.Connection[Any],
    user_a: Session,
    session: Callable[..., Session],
    make_role: Callable[..., str],
    connect_as: Callable[[str], psycopg.Connection[Any]],
    action: str,
    intruder_kind: str,
) -> None:
    tx_id = begin_with_a_write(user_a)
    user_a.rpc("tx_savepoint", tx_id=tx_id, name="sp")
    notes_before = table_rows(app, NOTES)

    if intruder_kind == "other subject, same role":
        intruder = session("user-b")
    elif intruder_kind == "same role, no subject":
        intruder = session(None)
    else:
        # A direct SQL user can put any JWT claims in its session: the role
        # still differs, so the subject alone does not make it the owner.
        make_role("pgr_sec_impostor", member_of=("resilience_user",))
        intruder = Session(connect_as("pgr_sec_impostor"), "pgr_sec_impostor", "user-a")

    function, arguments = owner_actions(tx_id)[action]
    with raises_sqlstate("RZ001"):
        intruder.rpc(function, **arguments)

    # Nothing happened to the owner's transaction: still active, its write
    # still there, and the owner can finish it.
    assert table_rows(app, NOTES) == notes_before
    assert user_a.rpc("tx_status", tx_id=tx_id)["status"] == "active"
    assert user_a.rpc("tx_commit", tx_id=tx_id)["status"] == "committed"


def test_admin_can_roll_back_anyones_transaction(
    app: psycopg.Connection[Any],
    user_a: Session,
    make_role: Callable[..., str],
    connect_as: Callable[[str], psycopg.Connection[Any]],
) -> None:
    notes_before = table_rows(app, NOTES)
    tx_id = begin_with_a_write(user_a)
    assert len(table_rows(app, NOTES)) == len(notes_before) + 1

    make_role("pgr_sec_admin", member_of=("resilience_admin",))
    admin = Session(connect_as("pgr_sec_admin"), "pgr_sec_admin", None)
    result = admin.rpc("tx_rollback", tx_id=tx_id, reason="admin cleanup")

    assert result["success"] is True and result["status"] == "rolled_back"
    assert table_rows(app, NOTES) == notes_before
    with raises_sqlstate("RZ002"):
        user_a.rpc("tx_commit", tx_id=tx_id)


def test_admin_cannot_write_in_or_commit_anothers_transaction(
    app: psycopg.Connection[Any],
    user_a: Session,
    make_role: Callable[..., str],
    connect_as: Callable[[str], psycopg.Connection[Any]],
) -> None:
    tx_id = begin_with_a_write(user_a)
    make_role("pgr_sec_admin", member_of=("resilience_admin",))
    admin = Session(connect_as("pgr_sec_admin"), "pgr_sec_admin", None)

    for action in ("tx_execute", "tx_commit"):
        function, arguments = owner_actions(tx_id)[action]
        with raises_sqlstate("RZ001"):
            admin.rpc(function, **arguments)
    assert user_a.rpc("tx_status", tx_id=tx_id)["status"] == "active"
