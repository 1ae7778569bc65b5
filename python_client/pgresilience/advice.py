"""What is left for someone to run after an install, as exact commands: the
one source for the installer's warnings, ``pgresilience status`` and the docs'
non-superuser section (a test runs every command as the role it names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgresilience.queries import query

__all__ = ["FollowUp", "follow_ups"]

PRE_REQUEST = (
    "alter role authenticator set pgrst.db_pre_request = 'resilience.tx_pre_request'; "
    "notify pgrst, 'reload config';"
)
# Every request then runs the hook as its role, anon's too, which may call
# nothing of the package (README, "As a database owner that is not superuser").
ANON_HOOK = (
    " (requests made with the anon key then fail with 42501 unless you also run "
    "`grant usage on schema resilience to anon; "
    "grant execute on function resilience.tx_pre_request() to anon;`)"
)


@dataclass(frozen=True)
class FollowUp:
    """``who`` (``owner``: the role that installed, ``superuser``, or
    ``createrole``: any role with CREATEROLE) runs ``sql``, because ``why``."""

    who: str
    sql: str
    why: str

    def line(self) -> str:
        runner = {
            "owner": "you run",
            "superuser": "a superuser runs",
            "createrole": ("a role with CREATEROLE runs"),
        }[self.who]
        return f"{self.why}: {runner} `{self.sql}`"


def follow_ups(conn: psycopg.Connection[Any]) -> list[FollowUp]:
    """The commands still to run in this database, in order."""
    row = conn.execute(query("follow_up_state")).fetchone()
    assert row is not None
    roles, event_triggers, authenticator, pre_request, can_set, me, memberships = row
    can_alter = True
    if authenticator and conn.info.server_version >= 150000:  # parameter privileges: 15+
        privileged = conn.execute(query("may_set_pre_request")).fetchone()
        can_set, can_alter = (
            (bool(privileged[0]), bool(privileged[1])) if privileged else (False, False)
        )
    todo = []
    if roles < 2:
        todo.append(
            FollowUp(
                "createrole",
                "create role resilience_user nologin; create role resilience_admin nologin;",
                "roles resilience_user/resilience_admin are missing, so only the owner can "
                "call the API (then run `pgresilience install` again)",
            )
        )
    if memberships:
        todo.append(
            FollowUp(
                "superuser",
                memberships,
                "role memberships are missing (granting them takes the ADMIN option on "
                "resilience_user/resilience_admin)",
            )
        )
    if not event_triggers:
        todo.append(
            FollowUp(
                "owner",
                "select resilience.schema_refresh();",
                "no event triggers (creating them needs superuser): after each migration, "
                "record the new schema version",
            )
        )
    if authenticator and not pre_request and not can_alter:
        # PostgreSQL 16+: altering role authenticator takes its ADMIN option.
        todo.append(
            FollowUp(
                "superuser",
                PRE_REQUEST,
                "PostgREST's db-pre-request is not resilience.tx_pre_request (on PostgreSQL "
                "16+ only a superuser or a holder of authenticator's ADMIN option may set it)"
                + ANON_HOOK,
            )
        )
    elif authenticator and not pre_request:
        if not can_set:
            todo.append(
                FollowUp(
                    "superuser",
                    # ``me`` is quote_ident(current_user), quoted by PostgreSQL.
                    sql.SQL("grant set on parameter pgrst.db_pre_request to {};")
                    .format(sql.SQL(me))
                    .as_string(None),
                    "setting PostgREST's db-pre-request on role authenticator needs this "
                    "privilege (or set db-pre-request in PostgREST's own configuration)",
                )
            )
        todo.append(
            FollowUp(
                "owner",
                PRE_REQUEST,
                "PostgREST's db-pre-request is not resilience.tx_pre_request: a write "
                "meeting an expired claim fails with 55P03 until the next reap" + ANON_HOOK,
            )
        )
    return todo
