"""A database owner that is not superuser but has CREATEROLE (hosted
Supabase's `postgres`): install works, and every command the installer and
`status` then ask for works when run by the role they name."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgresilience.advice import follow_ups
from pgresilience.installer import install
from pgresilience.status import status_lines

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def owner_db(server, make_role):
    """(owner conninfo, superuser conninfo) of a bare database owned by a
    CREATEROLE, non-superuser role."""
    make_role("pgr_app_owner", createrole=True)
    name = "pgr_owned_" + os.urandom(6).hex()
    server.create_database(name, owner="pgr_app_owner")
    try:
        yield server.dsn(name, user="pgr_app_owner"), server.dsn(name)
    finally:
        with server.admin() as admin:
            admin.execute("alter role authenticator reset pgrst.db_pre_request")
            admin.execute("revoke set on parameter pgrst.db_pre_request from pgr_app_owner")
        server.drop_database(name)


@pytest.mark.min_server_version(15, reason="grant set on parameter")
def test_every_follow_up_works_for_the_role_it_names(owner_db):
    owner_dsn, admin_dsn = owner_db
    report = install(owner_dsn)
    assert not report.event_triggers and not report.plpython
    todo = report.follow_ups
    with psycopg.connect(admin_dsn) as admin:
        major = admin.info.server_version // 10000
    # 15: a superuser grants the parameter, the owner sets it; 16+: altering
    # role authenticator takes its ADMIN option, so a superuser sets it.
    expected = ["owner", "superuser", "owner"] if major == 15 else ["owner", "superuser"]
    assert [f.who for f in todo] == expected, todo
    for follow_up in todo:
        assert follow_up.line() in report.warnings

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        status = "\n".join(status_lines(conn))
    readme = (REPO / "README.md").read_text()
    for follow_up in todo:
        assert follow_up.sql in status
        # The README tells the same, for an owner named postgres (Supabase's).
        assert follow_up.sql.replace("pgr_app_owner", "postgres") in readme

    for follow_up in todo:
        who = admin_dsn if follow_up.who == "superuser" else owner_dsn
        with psycopg.connect(who, autocommit=True) as conn:
            conn.execute(follow_up.sql)

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        left = follow_ups(conn)
        # Recording a version after each migration stays the owner's job.
        assert [f.sql for f in left] == ["select resilience.schema_refresh();"]
        setting = conn.execute(
            "select setconfig from pg_db_role_setting s join pg_roles r on r.oid = s.setrole "
            "where r.rolname = 'authenticator'"
        ).fetchone()
        assert (
            setting is not None and "pgrst.db_pre_request=resilience.tx_pre_request" in (setting[0])
        )
        assert conninfo_to_dict(owner_dsn)["user"] == "pgr_app_owner"


@pytest.mark.plpython
@pytest.mark.min_server_version(15, reason="grant set on parameter")
def test_plpython_present_but_not_for_this_role(owner_db):
    """The extension exists (a superuser created it), but an untrusted
    language is for superusers only: install goes on without it."""
    owner_dsn, admin_dsn = owner_db
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("create extension plpython3u")
    report = install(owner_dsn)
    assert not report.plpython
    assert any("PL/Python" in warning for warning in report.warnings)
    assert install(owner_dsn).revision == report.revision  # and again, as an upgrade
