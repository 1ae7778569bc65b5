"""A name-based listing of a database's catalog, to compare installs.

OIDs differ from one install to the next, so every object is listed by what
identifies it to a person: kind, schema-qualified name, signature.
"""

from __future__ import annotations

from typing import Any

import psycopg

LISTING = """
select 'schema ' || nspname from pg_namespace
    where nspname !~ '^pg_(toast|temp)' and nspname <> 'information_schema'
union all
select 'relation ' || relkind::text || ' ' || c.oid::regclass::text from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    where n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
union all
select 'function ' || p.oid::regprocedure::text || ' ' || coalesce(
        (select string_agg(a::text, ',' order by a::text) from unnest(p.proacl) a), 'default')
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
union all
select 'type ' || t.oid::regtype::text from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' and t.typtype in ('e', 'c', 'd')
        and not exists (select 1 from pg_class c where c.reltype = t.oid)
union all
select 'trigger ' || tgrelid::regclass::text || '.' || tgname from pg_trigger where not tgisinternal
union all
select 'policy ' || polrelid::regclass::text || '.' || polname from pg_policy
union all
select 'event trigger ' || evtname from pg_event_trigger
union all
select 'extension ' || extname from pg_extension
union all
select 'schema acl ' || nspname || ' ' || coalesce(nspacl::text, 'default') from pg_namespace
    where nspname !~ '^pg_' and nspname <> 'information_schema'
order by 1
"""


# Roles are cluster-wide: shared by every database of the server.
ROLES = """
select 'role ' || rolname from pg_roles where rolname !~ '^pg_'
union all
select 'membership ' || r.rolname || ' in ' || g.rolname from pg_auth_members m
    join pg_roles r on r.oid = m.member join pg_roles g on g.oid = m.roleid
    where g.rolname !~ '^pg_'
order by 1
"""


def catalog_listing(dsn: str) -> list[str]:
    """Every object of this database (roles excluded)."""
    return _lines(dsn, LISTING)


def role_listing(dsn: str) -> list[str]:
    """Roles and memberships of the server."""
    return _lines(dsn, ROLES)


def _lines(dsn: str, listing: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows: list[Any] = conn.execute(listing).fetchall()
    return [row[0] for row in rows]
