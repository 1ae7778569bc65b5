"""A referencing table the package owner reads under row level security:
docs/transactions.md says the check reads the referencing tables as the
package owner and that a SELECT grant there gives the guarantee. A policy
that hides their rows from the package owner must not let the undo's
cascade delete those rows unchecked."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from pgresilience import installer
from tests.conftest import Server

from .test_fk_refusals import begin, execute, refused_fks, rows


@pytest.mark.xfail(
    strict=True,
    reason="RLS on a referencing table hides their rows from the check; the cascade deletes them",
)
def test_rls_on_the_child_hides_no_row_from_the_check(
    server: Server, make_role: Callable[..., str], dsn: str
) -> None:
    make_role("fk7_pkg")
    make_role("fk7_app")
    make_role("fk7_other")
    name = "pgr_fk7_rls"
    server.drop_database(name)
    with server.admin() as admin:
        admin.execute("grant fk7_app to fk7_pkg")
        admin.execute("grant resilience_user to fk7_app")
    server.create_database(name, owner="fk7_pkg")
    try:
        installer.install(server.dsn(name, user="fk7_pkg"))
        with psycopg.connect(server.dsn(name), autocommit=True) as su:
            su.execute(
                "create table parent (id integer primary key);"
                " alter table parent owner to fk7_app;"
                " grant references, select on parent to fk7_other;"
                " create table child (id integer primary key,"
                "  parent_id integer constraint child_parent references parent on delete cascade);"
                " alter table child owner to fk7_other;"
                " alter table child enable row level security;"
                " create policy own_rows on child to fk7_other using (true);"
                " grant select on child to fk7_pkg"
            )
        with psycopg.connect(server.dsn(name, user="fk7_pkg"), autocommit=True) as pkg:
            pkg.execute("select resilience.manage_table('parent')")
        with (
            psycopg.connect(server.dsn(name, user="fk7_app"), autocommit=True) as app,
            psycopg.connect(server.dsn(name, user="fk7_other"), autocommit=True) as other,
        ):
            tx = begin(app)
            execute(app, tx, "parent", "insert", {"id": 1})
            other.execute("insert into child values (10, 1)")
            try:
                assert refused_fks(app, tx) == ["child_parent"]
            finally:
                assert rows(other, "child") == ["(10,1)"]
    finally:
        server.drop_database(name)
