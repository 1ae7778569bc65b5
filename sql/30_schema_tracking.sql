-- Schema version tracking (DESIGN.md section 2, docs/schema_tracking.md).
--
-- Event triggers (sql/superuser/30_event_triggers.sql) remember the objects
-- each DDL command touched and mark the transaction in
-- resilience.schema_pending. At commit a deferred constraint trigger on it
-- folds all of the transaction's DDL into ONE version: only the touched
-- objects are re-read from the catalog, their OID-free canonical JSON is
-- hashed, the snapshot is updated and listeners are notified. The diff
-- (PL/Python) runs at commit (setting schema_diff_at_commit on, the
-- default); with it off the version's first reader rates it
-- (resilience._schema_rate).
-- Tracking never blocks DDL: every entry point catches its own errors.

-- Names of the schemas whose objects are tracked: every schema except pg_*,
-- information_schema, resilience and the ignored ones (setting), or only the
-- listed ones (setting schema_tracked_schemas). Read once per statement.
create or replace function resilience._schema_tracked_names()
returns text[]
language plpgsql
stable
as $$
declare
    ignored text[];
    listed text[];
begin
    -- plpgsql, not sql: its plans are cached per session (it runs on every
    -- DDL). No SECURITY DEFINER nor SET clause (each costs per call): its
    -- callers are, and every name here is qualified. Two flat statements
    -- rather than one with subqueries: a new session plans each statement
    -- (and each subquery) once, at its first DDL's commit.
    select
        pg_catalog.string_to_array(pg_catalog.replace(
            pg_catalog.max(s.value) filter (where s.name = 'schema_ignored_schemas'), ' ', ''
        ), ','),
        pg_catalog.string_to_array(pg_catalog.replace(
            pg_catalog.max(s.value) filter (
                where s.name = 'schema_tracked_schemas' and s.value operator(pg_catalog.<>) '*'
            ), ' ', ''
        ), ',')
    into ignored, listed
    from resilience.settings as s
    where s.name in ('schema_ignored_schemas', 'schema_tracked_schemas');
    return array(
        select n.nspname::text
        from pg_catalog.pg_namespace as n
        where n.nspname operator(pg_catalog.!~) '^pg_'
            and n.nspname operator(pg_catalog.<>) 'information_schema'
            and n.nspname operator(pg_catalog.<>) 'resilience'
            and not n.nspname::text operator(pg_catalog.=) any(coalesce(ignored, '{}'))
            and (listed is null or n.nspname::text operator(pg_catalog.=) any(listed))
    );
end;
$$;

-- Catalogs of objects that tracked texts print by name but the snapshot does
-- not hold: schemas, collations, extensions (their types), text search
-- configurations (regconfig constants), operator classes and operators. An
-- ALTER of one (RENAME, SET SCHEMA) re-reads everything at commit: pg_depend
-- cannot lead to every text naming it. Inlined (sql, immutable, no SET
-- clause): the event trigger reads it on every DDL.
create or replace function resilience._schema_reread_all_catalogs()
returns oid[]
language sql
immutable
as $$
    select array[
        'pg_catalog.pg_namespace'::pg_catalog.regclass, 'pg_catalog.pg_collation'::pg_catalog.regclass,
        'pg_catalog.pg_extension'::pg_catalog.regclass, 'pg_catalog.pg_ts_config'::pg_catalog.regclass,
        'pg_catalog.pg_opclass'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass
    ]::pg_catalog.oid [];
$$;

-- SHA-256 (hex) of one object: kind, a colon, then its canonical JSON text
-- (jsonb prints keys in a fixed order). schema_diff.object_hash() agrees.
-- No SET clause (names are qualified): it is inlined, it runs once per object.
create or replace function resilience._schema_object_hash(kind text, data jsonb)
returns text
language sql
-- stable, not immutable: convert_to() is stable, and an immutable function
-- over a stable one is never inlined (it was called once per object).
stable
as $$
    select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
        kind operator(pg_catalog.||) ':' operator(pg_catalog.||) data::text, 'UTF8'
    )), 'hex');
$$;

-- Every trackable object id, for a full re-snapshot.
create or replace function resilience._schema_all_ids(
    out rels oid[], out procs oid[], out types oid[]
)
language sql
stable
security definer
set search_path = ''
as $$
    with tracked as (
        select n.oid from pg_catalog.pg_namespace as n
        where n.nspname::text operator(pg_catalog.=) any(resilience._schema_tracked_names())
    )

    select
        array(select c.oid from pg_catalog.pg_class as c
            where c.relkind in ('r', 'p', 'f', 'v', 'm') and c.relnamespace in (select t.oid from tracked as t)),
        array(select p.oid from pg_catalog.pg_proc as p
            where p.pronamespace in (select t.oid from tracked as t)),
        array(select ty.oid from pg_catalog.pg_type as ty
            where ty.typtype = 'e' and ty.typnamespace in (select t.oid from tracked as t));
$$;

-- Lookups the snapshot makes for some objects only (a partition's parent, a
-- foreign key's table, a column's own collation): plpgsql functions, whose
-- query a session plans when first called, rather than subqueries that every
-- new session plans with the catalog query (~0.1 ms each at its first DDL).
-- No SET clause (names are qualified): called per object.
create or replace function resilience._schema_rel_name(rel oid)
returns text
language plpgsql
stable
as $$
begin
    return (
        select n.nspname::text operator(pg_catalog.||) '.' operator(pg_catalog.||) c.relname::text
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
        where c.oid operator(pg_catalog.=) rel
    );
end;
$$;

create or replace function resilience._schema_partition_parent(rel oid)
returns text
language plpgsql
stable
as $$
begin
    return (
        select n.nspname::text operator(pg_catalog.||) '.' operator(pg_catalog.||) c.relname::text
        from pg_catalog.pg_inherits as i
        inner join pg_catalog.pg_class as c on i.inhparent = c.oid
        inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
        where i.inhrelid operator(pg_catalog.=) rel
    );
end;
$$;

-- A policy's roles by name, sorted.
create or replace function resilience._schema_policy_roles(roles oid[])
returns jsonb
language plpgsql
stable
as $$
begin
    return pg_catalog.to_jsonb(array(
        select case when r.role_oid = 0 then 'public' else pg_catalog.pg_get_userbyid(r.role_oid)::text end
        from pg_catalog.unnest(roles) as r (role_oid)
        order by 1
    ));
end;
$$;

create or replace function resilience._schema_collation_name(coll oid)
returns text
language plpgsql
stable
as $$
begin
    return (select c.collname::text from pg_catalog.pg_collation as c where c.oid operator(pg_catalog.=) coll);
end;
$$;

-- Views and materialized views among `rel_ids` (part of _schema_catalog: a
-- function of its own so that a session whose DDL touched no view never
-- compiles this query).
create or replace function resilience._schema_catalog_views(rel_ids oid[])
returns table (kind text, object_oid oid, sub_id integer, table_oid oid, data jsonb)
language plpgsql
stable
security definer
set search_path = ''
set jit = off
as $$
begin
    return query
    select 'view', c.oid, 0, c.oid, pg_catalog.jsonb_build_object(
        'schema', n.nspname::text,
        'name', c.relname::text,
        'kind', case c.relkind when 'm' then 'materialized view' else 'view' end,
        'definition', pg_catalog.pg_get_viewdef(c.oid),
        -- Options that decide whose rights and RLS a reader gets.
        'security_invoker', coalesce((
            select o.option_value::boolean from pg_catalog.pg_options_to_table(c.reloptions) as o
            where o.option_name = 'security_invoker'
        ), false),
        'security_barrier', coalesce((
            select o.option_value::boolean from pg_catalog.pg_options_to_table(c.reloptions) as o
            where o.option_name = 'security_barrier'
        ), false),
        'check_option', (
            select o.option_value from pg_catalog.pg_options_to_table(c.reloptions) as o
            where o.option_name = 'check_option'
        ),
        -- Reads a table with row level security (turning security_invoker off is then an exposure).
        'reads_rls', exists (
            select from pg_catalog.pg_rewrite as rw
            inner join pg_catalog.pg_depend as d
                on d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass and d.objid = rw.oid
            inner join pg_catalog.pg_class as base
                on d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.refobjid = base.oid
            where rw.ev_class = c.oid and base.oid operator(pg_catalog.<>) c.oid and base.relrowsecurity
        ),
        'columns', coalesce((
            select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                'name', a.attname::text, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod)
            ) order by a.attnum)
            from pg_catalog.pg_attribute as a
            where a.attrelid = c.oid and a.attnum operator(pg_catalog.>) 0 and not a.attisdropped
        ), '[]')
    )
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
    where c.oid operator(pg_catalog.=) any(rel_ids) and c.relkind in ('v', 'm');
end;
$$;

-- Functions and procedures (part of _schema_catalog, see _schema_catalog_views).
create or replace function resilience._schema_catalog_functions(procs oid[], tracked text[])
returns table (kind text, object_oid oid, sub_id integer, table_oid oid, data jsonb)
language plpgsql
stable
security definer
set search_path = ''
set jit = off
as $$
begin
    return query
    select 'function', p.oid, 0, null::oid, pg_catalog.jsonb_build_object(
        'schema', n.nspname::text,
        'name', p.proname::text,
        'kind', case p.prokind when 'p' then 'procedure' else 'function' end,
        'arguments', pg_catalog.pg_get_function_identity_arguments(p.oid),
        'result', pg_catalog.pg_get_function_result(p.oid),
        'language', l.lanname::text,
        -- SQL-standard bodies (BEGIN ATOMIC) leave prosrc empty.
        'body', case when coalesce(p.prosrc, '') = '' then pg_catalog.pg_get_functiondef(p.oid) else p.prosrc end,
        'volatility', case p.provolatile when 'i' then 'immutable' when 's' then 'stable' else 'volatile' end,
        'security_definer', p.prosecdef,
        'strict', p.proisstrict,
        'config', pg_catalog.to_jsonb(p.proconfig)
    )
    from pg_catalog.pg_proc as p
    inner join pg_catalog.pg_namespace as n on p.pronamespace = n.oid
    inner join pg_catalog.pg_language as l on p.prolang = l.oid
    where p.oid operator(pg_catalog.=) any(procs)
        and p.prokind in ('f', 'p')
        and n.nspname::text operator(pg_catalog.=) any(tracked)
        and not exists (
            select from pg_catalog.pg_depend as d
            where d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass and d.objid = p.oid and d.deptype = 'e'
        )
        -- pgresilience's own rpc() wrappers (resilience._expose)
        and not exists (select from resilience.exposed_functions as w where w.signature::oid = p.oid);
end;
$$;

-- Enum types (part of _schema_catalog, see _schema_catalog_views).
create or replace function resilience._schema_catalog_enums(types oid[], tracked text[])
returns table (kind text, object_oid oid, sub_id integer, table_oid oid, data jsonb)
language plpgsql
stable
security definer
set search_path = ''
set jit = off
as $$
begin
    return query
    select 'enum', t.oid, 0, null::oid, pg_catalog.jsonb_build_object(
        'schema', n.nspname::text,
        'name', t.typname::text,
        'values', pg_catalog.to_jsonb(array(
            select e.enumlabel::text from pg_catalog.pg_enum as e
            where e.enumtypid = t.oid order by e.enumsortorder
        ))
    )
    from pg_catalog.pg_type as t
    inner join pg_catalog.pg_namespace as n on t.typnamespace = n.oid
    where t.oid operator(pg_catalog.=) any(types)
        and t.typtype = 'e'
        and n.nspname::text operator(pg_catalog.=) any(tracked)
        and not exists (
            select from pg_catalog.pg_depend as d
            where d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass and d.objid = t.oid and d.deptype = 'e'
        );
end;
$$;

-- The catalog as snapshot objects, for the given relations (tables, views,
-- and everything on them), functions and enum types. `data` holds names, never
-- OIDs, so equal schemas give equal JSON on any server. Extension members, the
-- rpc() wrappers of pgresilience and untracked schemas are left out.
-- One query per kind, run only where that kind can be: a new session plans
-- each statement it runs once, and a migration's commit in a new session
-- (one client process per migration file) paid ~5 ms to plan one query over
-- every kind. Relations are resolved once (`rel_ids`; `tab_ids`: tables),
-- so most per-kind queries join no pg_class/pg_namespace of their own.
create or replace function resilience._schema_catalog(rels oid[], procs oid[], types oid[])
returns table (kind text, object_oid oid, sub_id integer, table_oid oid, data jsonb)
language plpgsql
stable
security definer
set search_path = ''
-- Generic estimates must never buy a JIT compile for a few rows (see _schema_fold).
set jit = off
as $$
declare
    tracked text[];
    rel_ids oid[];
    rel_names text[];
    tab_ids oid[];
    tab_names text[];
    has_views boolean;
    has_indexes boolean;
    has_constraints boolean;
begin
    if coalesce(pg_catalog.cardinality(rels), 0) operator(pg_catalog.>) 0 then
        tracked := resilience._schema_tracked_names();
        select
            pg_catalog.array_agg(c.oid),
            pg_catalog.array_agg(qualified.name),
            pg_catalog.array_agg(c.oid) filter (where c.relkind in ('r', 'p', 'f')),
            pg_catalog.array_agg(qualified.name) filter (where c.relkind in ('r', 'p', 'f')),
            coalesce(pg_catalog.bool_or(c.relkind in ('v', 'm')), false),
            -- pg_class says when a relation has (or may have) no index, no
            -- CHECK and no foreign key (no trigger): those queries are then
            -- skipped, and a new session never plans them.
            coalesce(pg_catalog.bool_or(c.relhasindex), false),
            coalesce(pg_catalog.bool_or(
                c.relhasindex or c.relchecks operator(pg_catalog.>) 0 or c.relhastriggers
            ) filter (where c.relkind in ('r', 'p', 'f')), false)
        into rel_ids, rel_names, tab_ids, tab_names, has_views, has_indexes, has_constraints
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
        cross join lateral (
            select n.nspname::text operator(pg_catalog.||) '.' operator(pg_catalog.||) c.relname::text
        ) as qualified (name)
        where c.oid operator(pg_catalog.=) any(rels)
            and c.relkind in ('r', 'p', 'f', 'v', 'm')
            and c.relpersistence operator(pg_catalog.<>) 't'
            and n.nspname::text operator(pg_catalog.=) any(tracked)
            and not exists (
                select from pg_catalog.pg_depend as d
                where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and d.objid = c.oid and d.deptype = 'e'
            );
    end if;

    if tab_ids is not null then
        return query
        select 'table', c.oid, 0, c.oid, pg_catalog.jsonb_build_object(
            'schema', n.nspname::text,
            'name', c.relname::text,
            'kind', case c.relkind when 'p' then 'partitioned table' when 'f' then 'foreign table' else 'table' end,
            'persistence', case c.relpersistence when 'u' then 'unlogged' else 'logged' end,
            'rls', c.relrowsecurity,
            'rls_forced', c.relforcerowsecurity,
            'partition_of', case when c.relispartition then resilience._schema_partition_parent(c.oid) end,
            'partition_bound', pg_catalog.pg_get_expr(c.relpartbound, c.oid),
            'partition_key', case when c.relkind = 'p' then pg_catalog.pg_get_partkeydef(c.oid) end,
            'columns', pg_catalog.to_jsonb(array(
                select a.attname::text from pg_catalog.pg_attribute as a
                where a.attrelid = c.oid and a.attnum operator(pg_catalog.>) 0 and not a.attisdropped
                order by a.attnum
            ))
        )
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
        where c.oid operator(pg_catalog.=) any(tab_ids);

        return query
        select 'column', r.oid, a.attnum::integer, r.oid, pg_catalog.jsonb_build_object(
            'table', r.qualified,
            'name', a.attname::text,
            'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
            'not_null', a.attnotnull,
            'default', case when a.attgenerated = '' then pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) end,
            'generated', case when a.attgenerated operator(pg_catalog.<>) '' then pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) end,
            'identity', case a.attidentity when 'a' then 'always' when 'd' then 'by default' end,
            'collation', case when a.attcollation operator(pg_catalog.<>) t.typcollation
                then resilience._schema_collation_name(a.attcollation)
            end
        )
        from rows from (pg_catalog.unnest(tab_ids), pg_catalog.unnest(tab_names)) as r (oid, qualified)
        inner join pg_catalog.pg_attribute as a on r.oid = a.attrelid
        inner join pg_catalog.pg_type as t on a.atttypid = t.oid
        left join pg_catalog.pg_attrdef as ad on a.attrelid = ad.adrelid and a.attnum = ad.adnum
        where a.attnum operator(pg_catalog.>) 0 and not a.attisdropped;

        if has_constraints then
            return query
            select 'constraint', con.oid, 0, r.oid, pg_catalog.jsonb_build_object(
                'table', r.qualified,
                'name', con.conname::text,
                'type', case con.contype
                    when 'p' then 'primary key' when 'u' then 'unique' when 'c' then 'check'
                    when 'f' then 'foreign key' when 'x' then 'exclusion'
                end,
                'definition', pg_catalog.pg_get_constraintdef(con.oid),
                'references', case when con.confrelid operator(pg_catalog.<>) 0
                    then resilience._schema_rel_name(con.confrelid)
                end,
                'validated', con.convalidated,
                'deferrable', con.condeferrable,
                'deferred', con.condeferred
            )
            from rows from (pg_catalog.unnest(tab_ids), pg_catalog.unnest(tab_names)) as r (oid, qualified)
            inner join pg_catalog.pg_constraint as con on r.oid = con.conrelid
            where con.contype in ('p', 'u', 'c', 'f', 'x');
        end if;

        return query
        select 'policy', pol.oid, 0, r.oid, pg_catalog.jsonb_build_object(
            'table', r.qualified,
            'name', pol.polname::text,
            'command', case pol.polcmd
                when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                when 'd' then 'delete' else 'all'
            end,
            'permissive', pol.polpermissive,
            'roles', resilience._schema_policy_roles(pol.polroles),
            'using', pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
            'check', pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid)
        )
        from rows from (pg_catalog.unnest(tab_ids), pg_catalog.unnest(tab_names)) as r (oid, qualified)
        inner join pg_catalog.pg_policy as pol on r.oid = pol.polrelid;
    end if;

    if has_indexes then
        -- Indexes (of tables and materialized views); those behind a primary
        -- key, unique or exclusion constraint are reported as that constraint.
        return query
        select 'index', i.indexrelid, 0, r.oid, pg_catalog.jsonb_build_object(
            'table', r.qualified,
            'name', ic.relname::text,
            'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
            'unique', i.indisunique,
            -- false: left behind by a failed CREATE INDEX CONCURRENTLY
            'valid', i.indisvalid
        )
        from rows from (pg_catalog.unnest(rel_ids), pg_catalog.unnest(rel_names)) as r (oid, qualified)
        inner join pg_catalog.pg_index as i on r.oid = i.indrelid
        inner join pg_catalog.pg_class as ic on i.indexrelid = ic.oid
        where not exists (
            select from pg_catalog.pg_constraint as k
            where k.conindid = i.indexrelid and k.conrelid = r.oid and k.contype in ('p', 'u', 'x')
        );
    end if;

    if has_views then
        return query select * from resilience._schema_catalog_views(rel_ids);
    end if;

    if coalesce(pg_catalog.cardinality(procs), 0) operator(pg_catalog.>) 0 then
        tracked := coalesce(tracked, resilience._schema_tracked_names());
        return query select * from resilience._schema_catalog_functions(procs, tracked);
    end if;

    if coalesce(pg_catalog.cardinality(types), 0) operator(pg_catalog.>) 0 then
        tracked := coalesce(tracked, resilience._schema_tracked_names());
        return query select * from resilience._schema_catalog_enums(types, tracked);
    end if;
end;
$$;

-- The objects this transaction's DDL touched (collected by
-- resilience._schema_remember), resolved to relations, functions and enum
-- types, plus the objects whose definition text names them (a view or foreign
-- key naming a renamed table, a column of a renamed enum type) are added by
-- resilience._schema_dependents. Consumes what was collected.
-- full_scan: a schema was renamed, re-read everything.
create or replace function resilience._schema_take_pending(
    out rels oid[], out procs oid[], out types oid[], out full_scan boolean, out commands text[],
    out created oid[]
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    chunks integer := coalesce(nullif(
        pg_catalog.current_setting('resilience.schema_pending_n', true), ''
    )::integer, 0);
    entries text[] := '{}';
    classes oid[];
    objids oid[];
    found_rels oid[];
begin
    -- Plain assignments, not a query over the chunks: each statement a new
    -- session runs is planned once, at its first DDL's commit.
    for chunk in 1..chunks loop
        -- Chunks are written in order: a count past the last one is no count
        -- of ours (a set_config of the private setting), not a long loop.
        exit when pg_catalog.current_setting('resilience.schema_pending_' operator(pg_catalog.||) chunk, true) is null;
        entries := entries operator(pg_catalog.||) pg_catalog.string_to_array(
            pg_catalog.current_setting('resilience.schema_pending_' operator(pg_catalog.||) chunk, true), ';'
        );
    end loop;
    -- One pass over the entries ("classid,objid,tag"). A new session plans
    -- every subquery of a statement (~0.1 ms each), so each catalog that
    -- resolves an object to its relation is read below by a statement of its
    -- own, run only when an entry of that catalog is pending.
    select
        pg_catalog.array_agg(e.classid),
        pg_catalog.array_agg(e.objid),
        coalesce(pg_catalog.array_agg(distinct e.objid) filter (
            where e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
        ), '{}'),
        coalesce(pg_catalog.array_agg(distinct e.objid) filter (
            where e.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
        ), '{}'),
        -- A re-read of everything: the event triggers keep entries of these
        -- catalogs for ALTER commands only, and DROP OWNED takes a role out
        -- of policies it reports nowhere.
        coalesce(pg_catalog.bool_or(
            e.classid operator(pg_catalog.=) any(resilience._schema_reread_all_catalogs())
            or e.command_tag = 'DROP OWNED'
            -- _schema_remember's mark: entries of this transaction were lost
            or e.classid = 0
        ), false),
        coalesce(pg_catalog.array_agg(distinct e.command_tag) filter (where e.classid <> 0), '{}'),
        -- Created by this transaction: nothing older can name them, so their
        -- dependents need no re-read (those created since are pending too).
        coalesce(pg_catalog.array_agg(distinct e.objid) filter (
            where e.command_tag in (
                'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE VIEW',
                'CREATE MATERIALIZED VIEW', 'CREATE SEQUENCE', 'CREATE FOREIGN TABLE',
                'CREATE TYPE', 'CREATE FUNCTION', 'CREATE PROCEDURE'
            )
        ), '{}')
    into classes, objids, procs, types, full_scan, commands, created
    from pg_catalog.unnest(entries) as entry (line)
    cross join lateral (
        select
            pg_catalog.split_part(entry.line, ',', 1)::oid,
            pg_catalog.split_part(entry.line, ',', 2)::oid,
            pg_catalog.split_part(entry.line, ',', 3)
    ) as e (classid, objid, command_tag);
    -- This transaction's row is pending but its entries are gone: the
    -- migration ran RESET ALL after its DDL (transaction-local settings are
    -- reset too). Only a re-read of everything finds what it changed.
    if pg_catalog.current_setting('resilience.schema_pending_n', true) is null
        or pg_catalog.current_setting('resilience.schema_pending_n', true) = '' then
        full_scan := full_scan or exists (
            select from resilience.schema_pending as p
            -- (no xid yet: nothing of this transaction's is pending, as in a
            -- schema_preview() before any DDL; none is assigned here)
            where p.tx operator(pg_catalog.=) pg_catalog.txid_current_if_assigned()
        );
    end if;

    -- Dropped objects are gone from the catalog: the snapshot knows their table.
    rels := array(
        select distinct o.table_oid from resilience.schema_objects as o
        where o.object_oid operator(pg_catalog.=) any(objids) and o.table_oid is not null
    );
    -- Live objects: the relation itself, or the one they belong to.
    if 'pg_catalog.pg_class'::pg_catalog.regclass operator(pg_catalog.=) any(classes) then
        rels := rels operator(pg_catalog.||) array(
            select coalesce(i.indrelid, x.objid)
            from rows from (pg_catalog.unnest(classes), pg_catalog.unnest(objids)) as x (classid, objid)
            left join pg_catalog.pg_index as i on x.objid = i.indexrelid
            where x.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
        );
        -- Attaching a partition, or an index to a partitioned one, may make
        -- the partitioned indexes above it valid, up the tree: an ancestor
        -- whose snapshot holds an invalid index is re-read.
        rels := rels operator(pg_catalog.||) array(
            select i.indrelid
            from pg_catalog.pg_class as c
            cross join lateral pg_catalog.pg_partition_ancestors(c.oid) as a (relid)
            inner join pg_catalog.pg_index as i on a.relid = i.indrelid
            where c.oid operator(pg_catalog.=) any(rels) and c.relispartition
                and a.relid operator(pg_catalog.<>) c.oid
                and exists (
                    select from resilience.schema_objects as o
                    where o.object_oid = i.indexrelid and o.sub_id = 0 and o.kind = 'index'
                        and (o.data operator(pg_catalog.->>) 'valid') = 'false'
                )
        );
    end if;
    if 'pg_catalog.pg_constraint'::pg_catalog.regclass operator(pg_catalog.=) any(classes) then
        rels := rels operator(pg_catalog.||) array(
            select c.conrelid from pg_catalog.pg_constraint as c
            where c.oid operator(pg_catalog.=) any(objids) and c.conrelid operator(pg_catalog.<>) 0
        );
    end if;
    if 'pg_catalog.pg_policy'::pg_catalog.regclass operator(pg_catalog.=) any(classes) then
        rels := rels operator(pg_catalog.||) array(
            select pol.polrelid from pg_catalog.pg_policy as pol where pol.oid operator(pg_catalog.=) any(objids)
        );
    end if;
    if 'pg_catalog.pg_attrdef'::pg_catalog.regclass operator(pg_catalog.=) any(classes) then
        rels := rels operator(pg_catalog.||) array(
            select ad.adrelid from pg_catalog.pg_attrdef as ad where ad.oid operator(pg_catalog.=) any(objids)
        );
    end if;
    if 'pg_catalog.pg_rewrite'::pg_catalog.regclass operator(pg_catalog.=) any(classes) then
        rels := rels operator(pg_catalog.||) array(
            select rw.ev_class from pg_catalog.pg_rewrite as rw where rw.oid operator(pg_catalog.=) any(objids)
        );
    end if;
    if 'pg_catalog.pg_type'::pg_catalog.regclass operator(pg_catalog.=) any(classes) then
        rels := rels operator(pg_catalog.||) array(
            select t.typrelid from pg_catalog.pg_type as t
            where t.oid operator(pg_catalog.=) any(types) and t.typrelid operator(pg_catalog.<>) 0
        );
    end if;
    -- Consumed: DDL after this point (SET CONSTRAINTS ... IMMEDIATE) starts afresh.
    perform pg_catalog.set_config('resilience.schema_pending_n', '0', true);
    perform pg_catalog.set_config('resilience.schema_pending_1', '', true);
end;
$$;

-- Relations and functions whose stored definition text names one of the given
-- objects (relations, functions, types: pg_depend): a view or a foreign key
-- naming a renamed table, a column or function using a renamed enum type.
-- They must be re-read too. plpgsql, not sql: a sql function with a SET
-- clause is planned again on every call.
create or replace function resilience._schema_dependents(
    objects oid[], out dep_rels oid[], out dep_procs oid[]
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    descendants oid[];
begin
    -- ALTER TABLE recurses to every level of partitions and inheritance
    -- children (a column added, renamed, retyped; an index or key created
    -- on each partition), but pg_depend ties a child to its direct parent
    -- only: the whole tree below a touched relation is re-read.
    descendants := array(
        with recursive below (rel) as (
            select i.inhrelid from pg_catalog.pg_inherits as i
            where i.inhparent operator(pg_catalog.=) any(objects)
            union
            select i.inhrelid from pg_catalog.pg_inherits as i
            inner join below as b on i.inhparent = b.rel
        )

        select b.rel from below as b
    );
    objects := objects operator(pg_catalog.||) descendants;
    -- A type's name is also printed by what uses its array type (`mood[]`),
    -- and a relation's by what uses its row type or that one's array
    -- (`setof users`, a column `users[]`): pg_depend points at those types,
    -- not at the renamed object. (Added to the array, not joined below: the
    -- lookup of pg_depend stays one index scan.)
    objects := objects operator(pg_catalog.||) array(
        select t.typarray from pg_catalog.pg_type as t
        where t.oid operator(pg_catalog.=) any(objects) and t.typarray operator(pg_catalog.<>) 0
        union all
        select r.oid from pg_catalog.pg_class as c
        inner join pg_catalog.pg_type as t on c.reltype = t.oid
        cross join lateral (values (t.oid), (t.typarray)) as r (oid)
        where c.oid operator(pg_catalog.=) any(objects) and r.oid operator(pg_catalog.<>) 0
    );
    with dep as (
        select d.classid, d.objid from pg_catalog.pg_depend as d
        where d.refclassid in (
            'pg_catalog.pg_class'::pg_catalog.regclass,
            'pg_catalog.pg_type'::pg_catalog.regclass,
            'pg_catalog.pg_proc'::pg_catalog.regclass
        )
            and d.refobjid operator(pg_catalog.=) any(objects)
    )

    select
        array(
            select distinct x.rel from (
                select case dep.classid
                    when 'pg_catalog.pg_class'::pg_catalog.regclass then coalesce(
                        (select i.indrelid from pg_catalog.pg_index as i where i.indexrelid = dep.objid), dep.objid
                    )
                    when 'pg_catalog.pg_rewrite'::pg_catalog.regclass then
                        (select rw.ev_class from pg_catalog.pg_rewrite as rw where rw.oid = dep.objid)
                    when 'pg_catalog.pg_constraint'::pg_catalog.regclass then
                        (select nullif(c.conrelid, 0) from pg_catalog.pg_constraint as c where c.oid = dep.objid)
                    when 'pg_catalog.pg_attrdef'::pg_catalog.regclass then
                        (select ad.adrelid from pg_catalog.pg_attrdef as ad where ad.oid = dep.objid)
                    when 'pg_catalog.pg_policy'::pg_catalog.regclass then
                        (select pol.polrelid from pg_catalog.pg_policy as pol where pol.oid = dep.objid)
                end as rel
                from dep
                union all
                -- Partitions the snapshot holds of a touched partitioned table:
                -- DETACH PARTITION leaves no pg_depend row to find them by.
                select o.object_oid from resilience.schema_objects as o
                where exists (
                    select from pg_catalog.pg_class as pc
                    where pc.oid operator(pg_catalog.=) any(objects) and pc.relkind = 'p'
                )
                    and o.kind = 'table'
                    and (o.data operator(pg_catalog.->>) 'partition_of') in (
                        select (p.data operator(pg_catalog.->>) 'schema') operator(pg_catalog.||) '.'
                            operator(pg_catalog.||) (p.data operator(pg_catalog.->>) 'name')
                        from resilience.schema_objects as p
                        where p.kind = 'table' and p.object_oid operator(pg_catalog.=) any(objects)
                    )
                union all
                select pg_catalog.unnest(descendants)
            ) as x where x.rel is not null
        ),
        array(select distinct dep.objid from dep where dep.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass)
    into dep_rels, dep_procs;
end;
$$;

-- A version's deltas in the shape schema_diff.compute_changes() takes:
-- [{kind, id, table_id, old, new}], ids being OIDs (and attnum) as text.
create or replace function resilience._schema_diff_input(for_version bigint, commands text[])
returns json
language sql
stable
security definer
set search_path = ''
as $$
    -- json, not jsonb: built and handed over as text, several times faster.
    select coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
        'kind', d.kind,
        'id', d.object_oid::text operator(pg_catalog.||)
        case when d.sub_id operator(pg_catalog.>) 0 then '.' operator(pg_catalog.||) d.sub_id::text else '' end,
        'table_id', d.table_oid::text,
        'old', d.old_data,
        'new', d.new_data,
        -- CONCURRENTLY runs alone in its transaction: the version's command says it.
        'concurrently', case when d.kind = 'index' then
            'CREATE INDEX CONCURRENTLY' operator(pg_catalog.=) any(commands)
        end
    ) order by d.kind, d.object_oid, d.sub_id), '[]')
    from resilience.schema_deltas as d
    where d.version operator(pg_catalog.=) for_version;
$$;

-- Schema hash: SHA-256 over the group hashes in sorted ("C") order (each group
-- hash: SHA-256 over its objects' sorted hashes). The hash index holds them
-- sorted already: read it rather than sort.
create or replace function resilience._schema_hash()
returns text
language sql
stable
security definer
set search_path = ''
set enable_sort = off
set enable_seqscan = off
as $$
    select
        pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
            coalesce(pg_catalog.string_agg(sorted.hash, ''), ''), 'UTF8'
        )), 'hex')
    from (select g.hash from resilience.schema_groups as g order by g.hash) as sorted;
$$;

-- An object's identity by name, for re-keying the snapshot where OIDs
-- changed: relations and enum types by schema and name, functions with their
-- arguments, everything on a relation by that relation's schema and name
-- (``owner``: the relation's data) and its own name. Built as a JSON array:
-- names may hold any character, dots included.
create or replace function resilience._schema_name_key(kind text, data jsonb, owner jsonb)
returns text
language sql
immutable
as $$
    select pg_catalog.jsonb_build_array(
        kind,
        case when kind in ('column', 'constraint', 'index', 'policy')
            then owner operator(pg_catalog.->>) 'schema' else data operator(pg_catalog.->>) 'schema'
        end,
        case when kind in ('column', 'constraint', 'index', 'policy')
            then owner operator(pg_catalog.->>) 'name'
        end,
        data operator(pg_catalog.->>) 'name',
        data operator(pg_catalog.->>) 'arguments'
    )::text;
$$;

-- _schema_rekey's work where the snapshot is not keyed by this catalog:
-- `moved`, another catalog (pair by name), else another format (by OID).
create or replace function resilience._schema_rekey_objects(moved boolean)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    everything record;
    snapshot resilience.schema_objects[];
begin
    if exists (select from resilience.schema_objects) then
        select * into everything from resilience._schema_all_ids();
        with live as (
            select f.kind, f.object_oid, f.sub_id, f.table_oid, f.data,
                resilience._schema_object_hash(f.kind, f.data) as hash
            from resilience._schema_catalog(everything.rels, everything.procs, everything.types) as f
        ),

        fresh as (
            select f.kind, f.object_oid, f.sub_id, f.table_oid, f.data, f.hash,
                resilience._schema_name_key(f.kind, f.data, rel.data) as name_key
            from live as f
            left join live as rel
                on f.kind in ('column', 'constraint', 'index', 'policy')
                and rel.kind in ('table', 'view') and rel.object_oid = f.table_oid
        ),

        stale as (
            select o.kind, o.object_oid, o.sub_id, o.data, o.hash,
                resilience._schema_name_key(o.kind, o.data, rel.data) as name_key
            from resilience.schema_objects as o
            left join resilience.schema_objects as rel
                on o.kind in ('column', 'constraint', 'index', 'policy')
                and rel.kind in ('table', 'view') and rel.object_oid = o.table_oid and rel.sub_id = 0
        ),

        -- Another catalog: pair by name. Same catalog, other format: by OID.
        paired as (
            select f.kind, f.object_oid, f.sub_id, f.table_oid, s.object_oid as old_oid, s.sub_id as old_sub,
                f.data as fresh_data, f.hash as fresh_hash, s.data as stale_data, s.hash as stale_hash
            from stale as s inner join fresh as f on s.kind = f.kind and s.name_key = f.name_key
            where moved
            union all
            select f.kind, f.object_oid, f.sub_id, f.table_oid, s.object_oid, s.sub_id,
                f.data, f.hash, s.data, s.hash
            from stale as s
            inner join fresh as f on s.kind = f.kind and s.object_oid = f.object_oid and s.sub_id = f.sub_id
            where not moved
        ),

        rekeyed as (
            select p.kind, p.object_oid, p.sub_id, p.table_oid, p.old_oid, p.old_sub,
                -- Equal but for keys this format added: the fresh row. Otherwise a
                -- real difference: keep what was stored, the next diff reports it.
                case when (p.fresh_data operator(pg_catalog.-) array(
                    select k.key from pg_catalog.jsonb_object_keys(p.fresh_data) as k (key)
                    where not p.stale_data operator(pg_catalog.?) k.key
                )) = p.stale_data then p.fresh_data else p.stale_data end as data,
                case when (p.fresh_data operator(pg_catalog.-) array(
                    select k.key from pg_catalog.jsonb_object_keys(p.fresh_data) as k (key)
                    where not p.stale_data operator(pg_catalog.?) k.key
                )) = p.stale_data then p.fresh_hash else p.stale_hash end as hash
            from paired as p
        ),

        -- Stored objects without a live counterpart (dropped while DDL was not
        -- tracked) stay, for the next diff to report them dropped. In another
        -- catalog their OIDs may now be other objects': they get keys no live
        -- object has (OIDs from the top of the range, attnums past the limit),
        -- on the re-keyed table they belong to.
        kept as (
            select o.kind, o.object_oid, o.sub_id, o.table_oid, o.data, o.hash,
                (4294967295 operator(pg_catalog.-) pg_catalog.row_number() over (
                    order by o.kind, o.object_oid, o.sub_id
                ))::oid as ghost,
                100000 operator(pg_catalog.+) pg_catalog.row_number() over (
                    order by o.kind, o.object_oid, o.sub_id
                ) as ghost_sub
            from resilience.schema_objects as o
            where not exists (
                select from rekeyed as r
                where r.kind = o.kind and r.old_oid = o.object_oid and r.old_sub = o.sub_id
            )
        ),

        everything_kept as (
            select r.kind, r.object_oid, r.sub_id, r.table_oid, r.data, r.hash from rekeyed as r
            union all
            select k.kind,
                case when not moved then k.object_oid
                    when k.kind = 'column' then coalesce(t.object_oid, k.ghost)
                    else k.ghost
                end,
                case when moved and k.kind = 'column' then k.ghost_sub::integer else k.sub_id end,
                case when not moved then k.table_oid
                    when k.kind in ('column', 'constraint', 'index', 'policy') then coalesce(t.object_oid, k.ghost)
                    when k.kind in ('table', 'view') then k.ghost
                end,
                k.data, k.hash
            from kept as k
            left join rekeyed as t
                on moved and t.kind in ('table', 'view') and t.old_oid = k.table_oid and t.old_sub = 0
                and k.kind in ('column', 'constraint', 'index', 'policy')
        )

        -- Collected first, written after: old and new keys may overlap.
        select pg_catalog.array_agg(row(
            e.kind, e.object_oid, e.sub_id, e.table_oid, e.data, e.hash
        )::resilience.schema_objects) into snapshot
        from everything_kept as e;
        delete from resilience.schema_objects;
        insert into resilience.schema_objects (kind, object_oid, sub_id, table_oid, data, hash)
        select o.kind, o.object_oid, o.sub_id, o.table_oid, o.data, o.hash
        from pg_catalog.unnest(snapshot) as o;

        delete from resilience.schema_groups;
        insert into resilience.schema_groups (group_oid, hash)
        select coalesce(o.table_oid, o.object_oid),
            pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                pg_catalog.string_agg(o.hash, '' order by o.hash), 'UTF8'
            )), 'hex')
        from resilience.schema_objects as o
        group by coalesce(o.table_oid, o.object_oid);
    end if;

end;
$$;

-- Before any diff: is the stored snapshot keyed by this catalog's OIDs, in
-- this release's format? After pg_dump/pg_restore or pg_upgrade it is not:
-- every stored object is then matched to the live one of the same name and
-- takes its OIDs (no phantom drop, no phantom add); after an upgrade that
-- reads more per object, the same object (same OID) takes the new keys.
-- What really differs is kept as stored, for the next diff to report. The
-- caller holds the fold lock.
create or replace function resilience._schema_rekey()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    -- 2: views' options and reads_rls, indexes' valid flag.
    current_format constant integer := 2;
    here record;
    stored record;
    moved boolean;
begin
    select
        (select c.system_identifier from pg_catalog.pg_control_system() as c) as system_identifier,
        (select d.oid from pg_catalog.pg_database as d where d.datname = pg_catalog.current_database())
        as database_oid,
        'resilience.schema_catalog'::pg_catalog.regclass::oid as table_oid
    into here;
    select * into stored from resilience.schema_catalog;
    -- Another database OID alone is a file copy of the database in this
    -- cluster (CREATE DATABASE ... TEMPLATE: this very table kept its OID,
    -- which a restore or pg_upgrade would not), so every OID still holds.
    -- Pairing by name there would read the copy's first migration's renames
    -- as drops plus adds (re-keying runs after its DDL).
    if found and stored.system_identifier = here.system_identifier
        and stored.table_oid = here.table_oid and stored.snapshot_format = current_format then
        if stored.database_oid operator(pg_catalog.<>) here.database_oid then
            update resilience.schema_catalog set database_oid = here.database_oid;
        end if;
        return;
    end if;
    moved := found and (stored.system_identifier, stored.table_oid)
        is distinct from (here.system_identifier, here.table_oid);

    -- The rare path (a restored or upgraded database) is a function of its
    -- own: every new session compiles the functions it calls, and this one
    -- runs at each fold.
    perform resilience._schema_rekey_objects(moved);

    insert into resilience.schema_catalog (system_identifier, database_oid, table_oid, snapshot_format)
    values (here.system_identifier, here.database_oid, here.table_oid, current_format)
    on conflict (singleton) do update set
        system_identifier = excluded.system_identifier, database_oid = excluded.database_oid,
        table_oid = excluded.table_oid, snapshot_format = excluded.snapshot_format;
end;
$$;

-- A version's change records, diffed by PL/Python (plpython/schema_diff.py),
-- or null where that cannot run here (no plpython3u; or it failed: warning,
-- and the client diffs the deltas with the same module).
create or replace function resilience._schema_diff_version(for_version bigint, commands text[])
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    diff_changes jsonb;
begin
    if pg_catalog.to_regprocedure('resilience._schema_diff(json)') is null then
        return null;
    end if;
    execute 'select resilience._schema_diff($1)::jsonb' into diff_changes
    using resilience._schema_diff_input(for_version, commands);
    return diff_changes;
exception when others then
    raise warning 'pgresilience: schema diff failed, the client will compute it (%): %',
        sqlstate, sqlerrm;
    return null;
end;
$$;

-- The highest severity among change records (null: none).
create or replace function resilience._schema_max_severity(changes jsonb)
returns text
language sql
immutable
as $$
    select x.s
    from pg_catalog.jsonb_array_elements(changes) as c (change),
        lateral (select c.change operator(pg_catalog.->>) 'severity') as x (s)
    order by pg_catalog.array_position(array['low', 'medium', 'high', 'critical'], x.s) desc
    limit 1;
$$;

-- Rate the versions after `after_version` that their commit left unrated
-- (setting schema_diff_at_commit off): diff each with PL/Python and store the
-- result, so it is rated once, by its first reader. A concurrent reader's
-- FOR UPDATE waits for this one, then finds the row rated and skips it; it
-- waits 3 s at most (a reader idle in its transaction holds the lock), then
-- gets the deltas. Nothing happens where PL/Python is missing (the client
-- rates) or in a read-only transaction (a standby): the reader then gets the
-- deltas too.
create or replace function resilience._schema_rate(after_version bigint)
returns void
language plpgsql
volatile
security definer
set search_path = ''
set lock_timeout = '3s'
as $$
declare
    unrated record;
    diff_changes jsonb;
begin
    -- The common case (everything rated) costs one index probe, no lock.
    if not exists (
        select from resilience.schema_versions as v
        where v.version operator(pg_catalog.>) coalesce(after_version, 0) and v.changes is null
    ) or pg_catalog.to_regprocedure('resilience._schema_diff(json)') is null
        or pg_catalog.current_setting('transaction_read_only') = 'on' then
        return;
    end if;
    for unrated in
        select v.version, v.commands from resilience.schema_versions as v
        where v.version operator(pg_catalog.>) coalesce(after_version, 0) and v.changes is null
        order by v.version
        for update
    loop
        diff_changes := resilience._schema_diff_version(unrated.version, unrated.commands);
        exit when diff_changes is null;
        update resilience.schema_versions as v set
            changes = diff_changes,
            diffed_in = 'database',
            change_count = pg_catalog.jsonb_array_length(diff_changes),
            max_severity = resilience._schema_max_severity(diff_changes)
        where v.version = unrated.version;
    end loop;
exception when serialization_failure or lock_not_available then
    -- REPEATABLE READ and a concurrent reader rated it first, or another
    -- reader holds the lock: the client rates this reader's copy.
    null;
end;
$$;

-- Re-read the given objects (all of them when full_scan), store what changed
-- as a new version, diff it, audit it, notify. Returns the new version, or
-- null when nothing tracked changed. The caller holds the fold lock.
create or replace function resilience._schema_fold(
    origin text, rels oid[], procs oid[], types oid[], full_scan boolean, commands text[]
)
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
-- A generic plan's estimates follow the average version; after versions of
-- thousands of objects they can pass jit_above_cost or call for parallel
-- workers (measured: +130 ms per ALTER), for statements that read a few rows.
set jit = off
set max_parallel_workers_per_gather = 0
as $$
declare
    delta_count bigint;
    new_hash text;
    new_version bigint;
    object_total integer;
    diff_changes jsonb;
    diffed_in text := 'client';
    severity text;
    touched text[];
    shown text[];
    payload jsonb;
    dropped_count bigint;
    groups oid[] := rels operator(pg_catalog.||) procs operator(pg_catalog.||) types;
    at_commit text;
    notify_postgrest text;
begin
    -- Each statement here (and in _schema_catalog) costs more to plan than
    -- to run for one table: later folds of a session reuse generic plans.
    -- A session's first fold, the only one of a migration tool's one
    -- process per file, plans for its own values instead (a custom plan
    -- leaves out the branches those values rule out: ~1.5 ms less).
    if pg_catalog.current_setting('resilience.schema_folded', true) is distinct from 'on' then
        perform pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', true);
        perform pg_catalog.set_config('resilience.schema_folded', 'on', false);
    end if;
    perform resilience._schema_rekey();
    -- Version numbers follow commit order: the caller holds the fold lock.
    -- The object count is kept incrementally (counting every object costs a scan).
    select v.version, v.object_count into new_version, object_total
    from resilience.schema_versions as v order by v.version desc limit 1;
    new_version := coalesce(new_version, 0) operator(pg_catalog.+) 1;
    object_total := coalesce(object_total, 0);

    -- The deltas go in before their version row: their key is checked at
    -- the end of the fold, even after the migration's SET CONSTRAINTS ALL
    -- IMMEDIATE (which would check it at this very insert).
    set constraints resilience.schema_deltas_version_fkey deferred;
    with fresh as (
        select f.kind, f.object_oid, f.sub_id, f.table_oid, f.data,
            resilience._schema_object_hash(f.kind, f.data) as hash
        from resilience._schema_catalog(rels, procs, types) as f
    ),

    -- Separate branches, not one OR: each uses its index under a generic
    -- plan. The touched groups are read by one index scan (`groups`), then
    -- kept by kind: an OID is unique within its catalog only.
    stale as (
        select o.kind, o.object_oid, o.sub_id, o.table_oid, o.data, o.hash
        from resilience.schema_objects as o
        where full_scan
        union all
        select o.kind, o.object_oid, o.sub_id, o.table_oid, o.data, o.hash
        from resilience.schema_objects as o
        where not full_scan
            and coalesce(o.table_oid, o.object_oid) operator(pg_catalog.=) any(groups)
            and case
                when o.table_oid is not null then o.table_oid operator(pg_catalog.=) any(rels)
                when o.kind = 'function' then o.object_oid operator(pg_catalog.=) any(procs)
                else o.object_oid operator(pg_catalog.=) any(types)
            end
    ),

    written as (
        insert into resilience.schema_deltas (
            version, kind, object_oid, sub_id, table_oid, old_data, new_data, new_hash
        )
        select new_version, coalesce(f.kind, s.kind), coalesce(f.object_oid, s.object_oid),
            coalesce(f.sub_id, s.sub_id), coalesce(f.table_oid, s.table_oid), s.data, f.data, f.hash
        from fresh as f
        full join stale as s on f.kind = s.kind and f.object_oid = s.object_oid and f.sub_id = s.sub_id
        where f.hash is distinct from s.hash
        returning kind, old_data, new_data
    )

    -- What the version says at once: how many deltas, objects added and
    -- dropped, the tables (and views, functions, enum types) they belong to.
    select
        pg_catalog.count(*),
        pg_catalog.count(*) filter (where w.new_data is null),
        object_total operator(pg_catalog.+) pg_catalog.count(*) filter (where w.old_data is null)
        operator(pg_catalog.-) pg_catalog.count(*) filter (where w.new_data is null),
        coalesce(pg_catalog.array_agg(distinct x.name order by x.name) filter (
            where w.kind in ('table', 'column', 'constraint', 'index', 'policy', 'view')
        ), '{}')
    into delta_count, dropped_count, object_total, touched
    from written as w
    cross join lateral (
        select coalesce(
            w.new_data operator(pg_catalog.->>) 'table', w.old_data operator(pg_catalog.->>) 'table',
            (w.new_data operator(pg_catalog.->>) 'schema') operator(pg_catalog.||) '.'
            operator(pg_catalog.||) (w.new_data operator(pg_catalog.->>) 'name'),
            (w.old_data operator(pg_catalog.->>) 'schema') operator(pg_catalog.||) '.'
            operator(pg_catalog.||) (w.old_data operator(pg_catalog.->>) 'name')
        )
    ) as x (name);

    if delta_count = 0 and origin operator(pg_catalog.<>) 'baseline' then
        return null;
    end if;

    -- The snapshot: dropped objects deleted, the others written (an added or
    -- changed object has one key: an upsert). Run only when something was
    -- dropped, the delete looks up the snapshot per delta (a lateral
    -- subquery that cannot be flattened, OFFSET 0): under the generic plan
    -- a join would be planned for the average version, and after a version
    -- of thousands of objects that plan scans the whole snapshot each time.
    if dropped_count operator(pg_catalog.>) 0 then
        delete from resilience.schema_objects as o
        where o.ctid operator(pg_catalog.=) any(array(
            select x.ctid
            from resilience.schema_deltas as d
            cross join lateral (
                select s.ctid from resilience.schema_objects as s
                where s.object_oid = d.object_oid and s.sub_id = d.sub_id and s.kind = d.kind
                offset 0
            ) as x
            where d.version = new_version and d.new_data is null
        ));
    end if;

    insert into resilience.schema_objects as o (kind, object_oid, sub_id, table_oid, data, hash)
    select d.kind, d.object_oid, d.sub_id, d.table_oid, d.new_data, d.new_hash
    from resilience.schema_deltas as d
    where d.version = new_version and d.new_data is not null
    on conflict (object_oid, sub_id, kind) do update set
        table_oid = excluded.table_oid, data = excluded.data, hash = excluded.hash;

    -- Re-hash the groups (tables, functions, enum types) this version touched
    -- (null: nothing left in the group).
    with rehashed as (
        select t.group_oid, (
            select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                pg_catalog.string_agg(o.hash, '' order by o.hash), 'UTF8'
            )), 'hex')
            from resilience.schema_objects as o
            where coalesce(o.table_oid, o.object_oid) = t.group_oid
        ) as hash
        from (
            select distinct coalesce(d.table_oid, d.object_oid) as group_oid
            from resilience.schema_deltas as d
            where d.version = new_version
        ) as t
    ),

    emptied as (
        delete from resilience.schema_groups as g
        where g.group_oid in (select r.group_oid from rehashed as r where r.hash is null)
    )

    insert into resilience.schema_groups (group_oid, hash)
    select r.group_oid, r.hash from rehashed as r
    where r.hash is not null
    on conflict (group_oid) do update set hash = excluded.hash;

    new_hash := resilience._schema_hash();
    -- Both settings in one read (resilience._setting reads one; a new
    -- session plans each statement it runs).
    select
        coalesce(pg_catalog.max(s.value) filter (where s.name = 'schema_diff_at_commit'), 'on'),
        coalesce(pg_catalog.max(s.value) filter (where s.name = 'notify_postgrest'), 'off')
    into at_commit, notify_postgrest
    from resilience.settings as s
    where s.name in ('schema_diff_at_commit', 'notify_postgrest');

    if origin = 'baseline' then
        diff_changes := '[]';
    elsif origin = 'ddl' and at_commit operator(pg_catalog.<>) 'on' then
        -- Off: a migration's commit never starts PL/Python
        -- (~20 ms of a new session's CPU); the version keeps its deltas and
        -- its first reader rates it (resilience._schema_rate).
        diff_changes := null;
    else
        diff_changes := resilience._schema_diff_version(new_version, commands);
    end if;

    if diff_changes is not null then
        diffed_in := 'database';
        severity := resilience._schema_max_severity(diff_changes);
    end if;

    insert into resilience.schema_versions (
        version, hash, origin, actor_role, object_count, commands, tables, diffed_in,
        changes, change_count, max_severity
    ) values (
        new_version, new_hash, origin, resilience._caller_role(), object_total,
        coalesce(commands, '{}'), touched, diffed_in, diff_changes,
        pg_catalog.jsonb_array_length(diff_changes), severity
    );

    -- Check the deltas' key now rather than at commit: a pending check would
    -- stop later DDL on schema_deltas in this transaction (an install).
    set constraints resilience.schema_deltas_version_fkey immediate;
    set constraints resilience.schema_deltas_version_fkey deferred;

    perform resilience._audit('schema_change', null, pg_catalog.jsonb_build_object(
        'version', new_version, 'hash', new_hash, 'origin', origin, 'commands', commands,
        'tables', touched, 'change_count', pg_catalog.jsonb_array_length(diff_changes),
        'max_severity', severity, 'diffed_in', diffed_in
    ));

    -- NOTIFY payloads must stay under 8000 bytes: shorten the table list.
    shown := touched;
    loop
        payload := pg_catalog.jsonb_build_object(
            'version', new_version, 'hash', new_hash, 'origin', origin,
            'max_severity', severity, 'change_count', pg_catalog.jsonb_array_length(diff_changes),
            -- false: not diffed yet (max_severity and change_count null); the
            -- first reader rates it (schema_changes_since, schema_history).
            'rated', diff_changes is not null,
            'diffed_in', diffed_in, 'tables', pg_catalog.to_jsonb(shown),
            'tables_truncated', coalesce(pg_catalog.cardinality(shown), 0)
            operator(pg_catalog.<) coalesce(pg_catalog.cardinality(touched), 0)
        );
        exit when pg_catalog.octet_length(payload::text) operator(pg_catalog.<) 7900;
        shown := shown[1:coalesce(pg_catalog.cardinality(shown), 0) operator(pg_catalog./) 2];
    end loop;
    -- PREPARE TRANSACTION refuses a transaction that sent a NOTIFY (0A000):
    -- a two-phase migration gets its version without one (a listener learns
    -- of it at the next version's NOTIFY, or by polling).
    if pg_catalog.current_query() operator(pg_catalog.!~*) '[[:<:]]prepare[[:space:]]+transaction[[:>:]]' then
        perform pg_catalog.pg_notify('resilience_schema', payload::text);
        if notify_postgrest = 'on' then
            perform pg_catalog.pg_notify('pgrst', 'reload schema');
        end if;
    end if;
    return new_version;
end;
$$;

-- Reading a view's definition (pg_get_viewdef) locks the relations it reads
-- (ACCESS SHARE, until commit). A fold holds the fold lock until its commit,
-- so it must not wait there for a lock that another migration holds: that
-- migration would wait at its own commit for the fold lock, and PostgreSQL
-- would cancel one fold (its version lost until schema_refresh). Two rules
-- keep a fold from waiting: the views this transaction changed are read
-- before the fold lock is taken (_schema_read_own_views), and a dependent
-- view another migration is changing is left to that migration's own
-- version (_schema_without_busy_views).
create or replace function resilience._schema_read_own_views()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    -- Only where this transaction's DDL named a view or a schema (the event
    -- trigger's mark): reading pg_locks costs a new session ~0.8 ms.
    if pg_catalog.current_setting('resilience.schema_views_changed', true) is distinct from 'on' then
        return;
    end if;
    -- DDL on a view (CREATE, ALTER, CREATE OR REPLACE) holds ACCESS EXCLUSIVE
    -- on it; ALTER SCHEMA ... RENAME holds it on the schema (an object lock),
    -- not on the views it renames.
    perform pg_catalog.pg_get_viewdef(c.oid)
    from pg_catalog.pg_locks as l
    inner join pg_catalog.pg_class as c
        on (l.locktype = 'relation' and c.oid = l.relation)
        or (l.locktype = 'object' and l.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
            and c.relnamespace = l.objid)
    where l.pid = pg_catalog.pg_backend_pid()
        and l.mode = 'AccessExclusiveLock' and c.relkind in ('v', 'm');
end;
$$;

-- `rels` without the views whose definition cannot be read at once: a view
-- another migration is changing (or one reading a relation it changes).
-- That migration re-reads it in its own version. The read that succeeds
-- keeps its locks, so the fold's own read of the view does not wait.
create or replace function resilience._schema_without_busy_views(rels oid[])
returns oid[]
language plpgsql
volatile
security definer
set search_path = ''
set lock_timeout = '1ms'
as $$
declare
    view_oid oid;
    busy oid[] := '{}';
begin
    for view_oid in
        select c.oid from pg_catalog.pg_class as c
        where c.oid operator(pg_catalog.=) any(rels) and c.relkind in ('v', 'm')
    loop
        begin
            perform pg_catalog.pg_get_viewdef(view_oid);
        exception when lock_not_available then
            busy := busy operator(pg_catalog.||) view_oid;
        end;
    end loop;
    if pg_catalog.cardinality(busy) operator(pg_catalog.=) 0 then
        return rels;
    end if;
    return array(select r.oid from pg_catalog.unnest(rels) as r (oid) where r.oid operator(pg_catalog.<>) all(busy));
end;
$$;

-- Serializes folds: versions are numbered in commit order and every hash
-- covers all earlier versions.
create or replace function resilience._schema_lock()
returns void
language sql
volatile
set search_path = ''
as $$
    select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgresilience-schema-fold'));
$$;

-- Fold this transaction's DDL (collected by the event triggers) into one
-- version; returns it, or null when nothing tracked changed. The caller
-- holds the fold lock.
create or replace function resilience._schema_fold_pending()
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    pending record;
    dependents record;
    everything record;
    older oid[];
begin
    select * into pending from resilience._schema_take_pending();
    if pending.full_scan then
        select * into everything from resilience._schema_all_ids();
        return resilience._schema_fold(
            'ddl', everything.rels, everything.procs, everything.types, true, pending.commands
        );
    end if;
    -- Only what existed before this transaction can be named by others; a
    -- transaction that only created objects has none (tested by an array
    -- operator: a new session plans each query it runs). Except a new
    -- partition: PostgreSQL gives every foreign key to its partitioned
    -- table a clone naming it, on the referencing table.
    if (pending.rels operator(pg_catalog.||) pending.procs operator(pg_catalog.||) pending.types)
        operator(pg_catalog.<@) pending.created
        and not ('CREATE TABLE' operator(pg_catalog.=) any(pending.commands) and exists (
            select from pg_catalog.pg_class as c
            where c.oid operator(pg_catalog.=) any(pending.created) and c.relispartition
        )) then
        older := '{}';
    else
        older := array(
            select pg_catalog.unnest(pending.rels operator(pg_catalog.||) pending.procs operator(pg_catalog.||) pending.types)
            except select x.oid from pg_catalog.unnest(pending.created) as x (oid)
            where not exists (
                select from pg_catalog.pg_class as c where c.oid operator(pg_catalog.=) x.oid and c.relispartition
            )
        );
    end if;
    if pg_catalog.cardinality(older) operator(pg_catalog.>) 0 then
        select * into dependents from resilience._schema_dependents(older);
        return resilience._schema_fold(
            'ddl',
            pending.rels operator(pg_catalog.||) resilience._schema_without_busy_views(dependents.dep_rels),
            pending.procs operator(pg_catalog.||) dependents.dep_procs,
            pending.types, false, pending.commands
        );
    end if;
    return resilience._schema_fold('ddl', pending.rels, pending.procs, pending.types, false, pending.commands);
end;
$$;

-- Deferred constraint trigger on schema_pending: runs once per
-- transaction that ran tracked DDL, just before it commits. Never raises:
-- a tracking bug must not block a migration.
create or replace function resilience._schema_on_commit()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    begin
        perform resilience._schema_read_own_views();
        perform resilience._schema_lock();
        -- Folded while this transaction's row is there (_schema_take_pending
        -- looks for it); then the row goes, and any a failed fold left behind.
        perform resilience._schema_fold_pending();
        delete from resilience.schema_pending;
    -- query_canceled too (OTHERS leaves it out): a statement_timeout that
    -- fires in a fold run by SET CONSTRAINTS ALL IMMEDIATE must not fail it.
    exception when others or query_canceled then
        raise warning 'pgresilience: schema version not recorded (%: %); resilience.schema_refresh() catches up',
            sqlstate, sqlerrm;
    end;
    return null;
end;
$$;

drop trigger if exists schema_fold_at_commit on resilience.schema_pending;
create constraint trigger schema_fold_at_commit
after insert on resilience.schema_pending
deferrable initially deferred
for each row execute function resilience._schema_on_commit();
-- ALWAYS: the fold must run under session_replication_role = replica too.
alter table resilience.schema_pending enable always trigger schema_fold_at_commit;

-- The first snapshot, taken at install (version 1, no changes).
create or replace function resilience._schema_baseline()
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    everything record;
begin
    perform resilience._schema_lock();
    if exists (select from resilience.schema_versions) then
        return null;
    end if;
    select * into everything from resilience._schema_all_ids();
    return resilience._schema_fold('baseline', everything.rels, everything.procs, everything.types, true, '{}');
end;
$$;

-- Public API ---------------------------------------------------------------

create or replace function resilience.schema_current()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select pg_catalog.jsonb_build_object(
        'version', v.version,
        'hash', v.hash,
        'taken_at', v.taken_at,
        'tables', coalesce((
            select pg_catalog.jsonb_object_agg(
                (t.data operator(pg_catalog.->>) 'schema') operator(pg_catalog.||) '.'
                operator(pg_catalog.||) (t.data operator(pg_catalog.->>) 'name'),
                pg_catalog.jsonb_build_object(
                    'kind', t.data operator(pg_catalog.->) 'kind',
                    'rls', coalesce(t.data operator(pg_catalog.->) 'rls', 'false'),
                    'columns', case when t.kind = 'view' then t.data operator(pg_catalog.->) 'columns' else coalesce((
                        select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                            'name', c.data operator(pg_catalog.->) 'name',
                            'type', c.data operator(pg_catalog.->) 'type',
                            'not_null', c.data operator(pg_catalog.->) 'not_null',
                            'default', c.data operator(pg_catalog.->) 'default'
                        ) order by c.sub_id)
                        from resilience.schema_objects as c
                        where c.kind = 'column' and coalesce(c.table_oid, c.object_oid) = t.object_oid
                    ), '[]') end
                )
            )
            from resilience.schema_objects as t
            where t.kind in ('table', 'view')
        ), '{}')
    )
    from (select null) as one
    left join lateral (
        select sv.version, sv.hash, sv.taken_at from resilience.schema_versions as sv
        order by sv.version desc limit 1
    ) as v on true;
$$;

-- Full re-snapshot (the force refresh): records what changed while tracking
-- was off or where event triggers could not be installed.
create or replace function resilience.schema_refresh()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    everything record;
    new_version bigint;
    latest record;
begin
    perform resilience._schema_lock();
    select * into everything from resilience._schema_all_ids();
    new_version := resilience._schema_fold(
        case when exists (select from resilience.schema_versions) then 'refresh' else 'baseline' end,
        everything.rels, everything.procs, everything.types, true, '{}'
    );
    select v.version, v.hash, v.change_count, v.max_severity into latest
    from resilience.schema_versions as v order by v.version desc limit 1;
    return pg_catalog.jsonb_build_object(
        'version', latest.version,
        'hash', latest.hash,
        'changed', new_version is not null,
        'change_count', case when new_version is not null then latest.change_count else 0 end,
        'max_severity', case when new_version is not null then latest.max_severity end
    );
end;
$$;

create or replace function resilience._schema_version_json(v resilience.schema_versions)
returns jsonb
language sql
stable
set search_path = ''
as $$
    select pg_catalog.jsonb_build_object(
        'version', v.version, 'hash', v.hash, 'taken_at', v.taken_at, 'origin', v.origin,
        'actor_role', v.actor_role, 'object_count', v.object_count, 'commands', v.commands,
        'tables', v.tables, 'diffed_in', v.diffed_in, 'change_count', v.change_count,
        'max_severity', v.max_severity
    );
$$;

-- The changes the DDL run so far in this transaction would record at
-- commit, without recording anything: the fold runs in a subtransaction that
-- is rolled back (its version, snapshot, audit row and NOTIFY with it), and
-- the DDL collected so far stays pending for the real commit. Without event
-- triggers (either disabled), or with tracking off (setting schema_tracking,
-- or resilience.installing set by the transaction), there
-- is nothing collected: the preview then compares the whole catalog with the
-- last version (as schema_refresh() would), so that `pgresilience plan`
-- never calls a DROP TABLE "no schema change".
-- Shape: a schema_changes_since() row plus "preview": true; "changes" is
-- null (and "deltas" given) where PL/Python is missing. With no change, the
-- current version's row with no changes, no tables and no commands.
create or replace function resilience.schema_preview()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    result jsonb;
    new_version bigint;
    everything record;
begin
    begin
        perform resilience._schema_lock();
        -- Both event triggers: without the sql_drop one, dropped objects
        -- are never collected.
        if (
            select pg_catalog.count(*) from pg_catalog.pg_event_trigger as e
            where e.evtname in ('resilience_schema_ddl_end', 'resilience_schema_sql_drop')
                and e.evtenabled operator(pg_catalog.<>) 'D'
        ) operator(pg_catalog.=) 2
        and coalesce(resilience._setting('schema_tracking'), 'on') = 'on'
        and pg_catalog.current_setting('resilience.installing', true) is distinct from 'on' then
            new_version := resilience._schema_fold_pending();
        else
            select * into everything from resilience._schema_all_ids();
            new_version := resilience._schema_fold(
                'refresh', everything.rels, everything.procs, everything.types, true, '{}'
            );
        end if;
        select resilience._schema_version_json(v)
            operator(pg_catalog.||) pg_catalog.jsonb_build_object('changes', v.changes)
            operator(pg_catalog.||) case when v.changes is null
                then pg_catalog.jsonb_build_object(
                    'deltas', resilience._schema_diff_input(v.version, v.commands)::jsonb
                )
                else '{}'::jsonb
            end
        into result
        from resilience.schema_versions as v
        where v.version = new_version;
        -- Undo the fold: only the values read above survive.
        raise exception using errcode = 'RZ900', message = 'pgresilience: preview rolled back';
    exception when sqlstate 'RZ900' then
        null;
    end;
    if result is null then
        -- Nothing tracked changed: the current version, no changes.
        select resilience._schema_version_json(v)
            operator(pg_catalog.||) pg_catalog.jsonb_build_object(
                'changes', '[]'::jsonb, 'change_count', 0, 'max_severity', null,
                'tables', '[]'::jsonb, 'commands', '[]'::jsonb
            )
        into result
        from resilience.schema_versions as v
        order by v.version desc limit 1;
    end if;
    return result operator(pg_catalog.||) pg_catalog.jsonb_build_object('preview', true);
end;
$$;

-- Versions, newest first (rated first where their commit did not).
create or replace function resilience.schema_history(max_count integer default 50)
returns setof jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    oldest bigint;
begin
    select pg_catalog.min(w.version) into oldest
    from (
        select v.version from resilience.schema_versions as v
        order by v.version desc limit greatest(max_count, 0)
    ) as w;
    if oldest is not null then
        perform resilience._schema_rate(oldest operator(pg_catalog.-) 1);
    end if;
    return query
    select resilience._schema_version_json(v)
    from resilience.schema_versions as v
    order by v.version desc
    limit greatest(max_count, 0);
end;
$$;

-- Every version after `version`, oldest first, with its changes (rated
-- first where their commit did not). Where the database cannot diff (no
-- plpython3u, a read-only transaction), `changes` is null and `deltas` holds
-- the input the client diffs with the same module.
create or replace function resilience.schema_changes_since(version bigint)
returns setof jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    perform resilience._schema_rate(schema_changes_since.version);
    return query
    select resilience._schema_version_json(v)
        operator(pg_catalog.||) pg_catalog.jsonb_build_object('changes', v.changes)
        operator(pg_catalog.||) case when v.changes is null
            then pg_catalog.jsonb_build_object(
                'deltas', resilience._schema_diff_input(v.version, v.commands)::jsonb
            )
            else '{}'::jsonb
        end
    from resilience.schema_versions as v
    where v.version operator(pg_catalog.>) coalesce(schema_changes_since.version, 0)
    order by v.version;
end;
$$;

-- The installer takes the baseline (_schema_baseline) as its last step, after
-- exposing the wrappers: a wrapper it takes back (a restore of the app's
-- schema alone) must not be in the baseline.
