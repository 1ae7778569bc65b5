"""On Supabase, PostgREST switches to `authenticated` (signed-in users) or
`service_role`; both are NOINHERIT, so they get nothing from being members of
resilience_user: the install must grant them the API itself, and its
row-level security policies must apply to them. Checked on the database
exactly as the installer left it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from .sessions import Session


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
def test_supabase_roles_can_call_the_api_as_installed(
    conn: psycopg.Connection[Any], role: str
) -> None:
    missing = conn.execute(
        """
        select p.oid::regprocedure::text from pg_proc as p
        where (
                (p.pronamespace = 'resilience'::regnamespace and p.proname !~ '^_')
                -- the wrappers supabase.rpc() calls, in the exposed schema
                or p.oid in (select e.signature from resilience.exposed_functions as e)
            )
            and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
            and not has_function_privilege(%s, p.oid, 'execute')
            -- schema tracking is for server roles, not signed-in end users
            -- (tests/breakit_security/test_schema_api.py)
            and not (%s = 'authenticated' and p.proname like 'schema\\_%%')
        order by 1
        """,
        (role, role),
    ).fetchall()
    assert missing == []


def test_a_signed_in_user_reads_its_own_audit_rows_as_installed(
    conn: psycopg.Connection[Any], session: Callable[..., Session]
) -> None:
    user = session("user-a")
    tx_id = user.rpc("tx_begin")
    events = user.query("select event, tx_id from resilience.audit_log")
    assert ("begin", tx_id) in events
