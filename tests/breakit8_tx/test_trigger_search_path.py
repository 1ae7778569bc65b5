"""A common Supabase trigger: a BEFORE trigger function without its own
search_path that calls a function of schema public by its bare name. Plain
and header-mode writes work (the request's search_path finds it); the undo
runs as the table owner with search_path = '' (any caller's lazy reap may
run it, so the caller's path must not choose what runs with the owner's
rights), where the bare name does not resolve."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Server

from breakit8_tx.rest import Rest, table_text

SCHEMA = """
create function slugify(t text) returns text language sql immutable as $$ select lower(t) $$;
create table posts (id integer primary key, title text, slug text);
create function posts_slug() returns trigger language plpgsql as $$
begin
    new.slug := slugify(new.title);
    return new;
end;
$$;
create trigger posts_slug before insert or update on posts
    for each row execute function posts_slug();
insert into posts (id, title) values (1, 'Hello'), (2, 'Other');
grant select, insert, update, delete on posts to authenticated;
select resilience.manage_table('posts');
"""


@pytest.fixture
def app(server: Server, database: str, dsn: str) -> Iterator[tuple[Rest, Any]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        user = Rest(server, database, sub="writer")
        try:
            yield user, admin
        finally:
            user.close()


def _write_and_roll_back(user: Rest, admin: Any) -> Any:
    before = table_text(admin, "posts")
    tx = str(user.rpc("tx_begin", 60000))
    user.request("update posts set title = 'World' where id = 1", tx=tx)
    user.request("insert into posts (id, title) values (3, 'New')", tx=tx)
    user.request("delete from posts where id = 2", tx=tx)
    result = user.rpc("tx_rollback", tx)
    assert result["success"] is True, result
    assert table_text(admin, "posts") == before


@pytest.mark.xfail(
    strict=True,
    raises=psycopg.Error,
    reason="design decision: the undo runs as the table owner with search_path = '', so a "
    "trigger that names public objects without a schema makes every rollback RZ005 (42883) "
    "although every write worked; the reaper then leaves the transaction failed",
)
def test_a_trigger_calling_a_bare_public_function_rolls_back(app: tuple[Rest, Any]) -> None:
    _write_and_roll_back(*app)


def test_the_same_trigger_with_its_own_search_path_rolls_back(app: tuple[Rest, Any]) -> None:
    user, admin = app
    admin.execute("alter function posts_slug() set search_path = public")
    _write_and_roll_back(user, admin)
