"""A name-based listing of a database's catalog, to compare installs.

OIDs differ from one install to the next, so every object is listed by what
identifies it to a person: kind, schema-qualified name, signature.
"""

from __future__ import annotations

import hashlib
import re
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


# Beyond names: definitions, so that an upgraded database can be compared
# with a fresh install object by object.
DEFINITIONS = """
select 'function ' || p.oid::regprocedure::text
        || ' args(' || pg_get_function_arguments(p.oid) || ')'
        || ' returns ' || coalesce(pg_get_function_result(p.oid), '-')
        || ' owner ' || pg_get_userbyid(p.proowner)
        || ' acl ' || coalesce(p.proacl::text, 'default')
        || ' body ' || case when p.prokind in ('a', 'w') then '' else pg_get_functiondef(p.oid) end
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
union all
select 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' '
        || format_type(a.atttypid, a.atttypmod)
        || case when a.attnotnull then ' not null' else '' end
        || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        || ' identity ' || a.attidentity::text || ' generated ' || a.attgenerated::text
        || ' acl ' || coalesce(a.attacl::text, 'default')
    from pg_attribute a join pg_class c on c.oid = a.attrelid
    join pg_namespace n on n.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where a.attnum > 0 and not a.attisdropped
        and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
union all
select 'relation ' || c.oid::regclass::text || ' kind ' || c.relkind::text
        || ' owner ' || pg_get_userbyid(c.relowner)
        || ' acl ' || coalesce(c.relacl::text, 'default')
        || ' rls ' || c.relrowsecurity::text || ' force ' || c.relforcerowsecurity::text
        || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
union all
select 'constraint ' || conrelid::regclass::text || '.' || conname || ' '
        || pg_get_constraintdef(oid)
    from pg_constraint where connamespace in (
        select oid from pg_namespace where nspname !~ '^pg_' and nspname <> 'information_schema')
union all
select 'index ' || pg_get_indexdef(i.indexrelid)
    from pg_index i join pg_class c on c.oid = i.indexrelid
    join pg_namespace n on n.oid = c.relnamespace
    where n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
union all
select 'trigger ' || pg_get_triggerdef(oid) || ' enabled ' || tgenabled::text
    from pg_trigger where not tgisinternal
union all
select 'policy ' || polrelid::regclass::text || '.' || polname || ' ' || polcmd::text
        || ' ' || polroles::regrole[]::text
        || ' using ' || coalesce(pg_get_expr(polqual, polrelid), '-')
        || ' check ' || coalesce(pg_get_expr(polwithcheck, polrelid), '-')
    from pg_policy
union all
select 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc::text
        || ' enabled ' || evtenabled::text
    from pg_event_trigger
union all
select 'schema ' || nspname || ' owner ' || pg_get_userbyid(nspowner)
        || ' acl ' || coalesce(nspacl::text, 'default')
    from pg_namespace where nspname !~ '^pg_' and nspname <> 'information_schema'
union all
select 'extension ' || extname || ' ' || extversion from pg_extension
union all
select 'type ' || t.oid::regtype::text || ' '
        || coalesce((select string_agg(enumlabel::text, ',' order by enumsortorder)
            from pg_enum where enumtypid = t.oid), '')
    from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' and t.typtype in ('e', 'd')
order by 1
"""


USER_TABLES = """
select c.oid::text, c.relname::text from pg_class c
where c.relnamespace not in (select oid from pg_namespace
    where nspname ~ '^pg_' or nspname in ('information_schema', 'resilience'))
    and c.relkind in ('r', 'p')
"""


def definition_listing(dsn: str) -> list[str]:
    """Every object of this database with its definition (roles excluded).
    Objects generated for a user table carry its OID in their names and
    bodies; that OID is replaced by the table's name so that two databases
    compare equal. Function bodies are compared by their SHA-256."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(USER_TABLES).fetchall()
    pattern = re.compile(r"(?<![0-9])(" + "|".join(o for o, _ in tables) + r")(?![0-9])")
    names = dict(tables)
    lines = []
    for line in _lines(dsn, DEFINITIONS):
        if tables:
            line = pattern.sub(lambda m: f"<{names[m.group(1)]}>", line)
        head, sep, body = line.partition(" body ")
        if sep:
            line = f"{head} body-sha256 {hashlib.sha256(body.encode()).hexdigest()}"
        lines.append(line)
    return sorted(lines)
