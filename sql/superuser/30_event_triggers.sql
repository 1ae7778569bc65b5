-- Event triggers of schema version tracking (need superuser; the installer
-- skips this file with a message where it is not permitted).
-- Both only remember the touched objects (resilience._schema_remember); the
-- deferred constraint trigger on resilience.schema_pending folds them into one
-- version at commit. They catch every error of their own: tracking must never
-- block DDL (the trap and what runs outside it: _schema_ddl_command_end).

-- Is this transaction pgresilience's own installer (it holds the install
-- advisory lock)? Its DDL (rpc() wrappers...) is not a schema change, and a
-- pending commit-time trigger would stop it from altering our tables.
-- Asked once per transaction, at its first tracked DDL.
create or replace function resilience._schema_in_installer()
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
    -- pg_lock_status() itself, not the pg_locks view over it: a new session
    -- parses the view's definition at its first DDL.
    select exists (
        select from pg_catalog.pg_lock_status() as l
        where l.locktype = 'advisory' and l.pid = pg_catalog.pg_backend_pid() and l.objsubid = 1
            and l.granted
            and l.objid = (pg_catalog.hashtext('pgresilience-install')::bigint operator(pg_catalog.&) 4294967295)::oid
            and l.classid = ((pg_catalog.hashtext('pgresilience-install')::bigint operator(pg_catalog.>>) 32)
                operator(pg_catalog.&) 4294967295)::oid
    );
$$;

-- Is this transaction already appending to its pending entries (its first
-- tracked DDL went through the error trap and wrote its schema_pending row)?
-- The count must name a chunk that exists: a count we did not write is not
-- trusted. Reads settings and nothing else, so it cannot fail.
create or replace function resilience._schema_appending()
returns boolean
language sql
stable
as $$
    select case when coalesce(pg_catalog.current_setting('resilience.schema_pending_n', true), '')
            operator(pg_catalog.~) '^[1-9][0-9]{0,8}$'
        then pg_catalog.current_setting(
                'resilience.schema_pending_' operator(pg_catalog.||) pg_catalog.current_setting('resilience.schema_pending_n'),
                true) is not null
            and coalesce(pg_catalog.current_setting('resilience.installing', true), '') operator(pg_catalog.<>) 'on'
        else false end;
$$;

-- Remember the objects one DDL statement touched ("classid,objid,tag;..."),
-- in transaction-local settings so that a savepoint rollback forgets them
-- too. Chunks of ~32 kB (resilience.schema_pending_1, _2, ...) keep each
-- append cheap in a migration of thousands of statements. The first tracked
-- statement of a transaction writes its row in resilience.schema_pending,
-- whose deferred trigger folds everything at commit. No SECURITY DEFINER nor
-- SET clause (each costs on every DDL): its callers are, names are qualified.
create or replace function resilience._schema_remember(entries text)
returns void
language plpgsql
volatile
as $$
declare
    -- 0: this is the transaction's first tracked statement (or a savepoint
    -- rollback or RESET ALL took the count, or it is no count we wrote).
    chunk integer := case when resilience._schema_appending()
        then pg_catalog.current_setting('resilience.schema_pending_n', true)::integer else 0 end;
    collected text;
    lost boolean;
begin
    if chunk = 0 then
        if resilience._schema_in_installer() then
            perform pg_catalog.set_config('resilience.installing', 'on', true);
            return;
        end if;
        -- Folded at commit even after the migration's SET CONSTRAINTS ALL
        -- IMMEDIATE (which would fold at the end of this very insert, before
        -- this statement is remembered).
        set constraints resilience.schema_fold_at_commit deferred;
        insert into resilience.schema_pending (tx) values (pg_catalog.txid_current())
        on conflict do nothing;
        lost := not found;
        chunk := 1;
        perform pg_catalog.set_config('resilience.schema_pending_n', '1', true);
        if lost then
            -- The row was there: an earlier statement of this transaction
            -- wrote it, and a RESET ALL since lost its entries. Marked for a
            -- re-read of everything at commit (_schema_take_pending).
            entries := '0,0,;' operator(pg_catalog.||) entries;
        end if;
    end if;
    collected := coalesce(pg_catalog.current_setting('resilience.schema_pending_' || chunk, true), '');
    if pg_catalog.length(collected) operator(pg_catalog.>) 32000 then
        chunk := chunk operator(pg_catalog.+) 1;
        collected := '';
        perform pg_catalog.set_config('resilience.schema_pending_n', chunk::text, true);
    end if;
    perform pg_catalog.set_config(
        'resilience.schema_pending_' || chunk,
        case when collected = '' then entries else collected || ';' || entries end,
        true
    );
end;
$$;

-- Tracking switched off, or pgresilience's own installer at work: the event
-- triggers then note nothing. (No SET clause: called on every DDL, its
-- callers are SECURITY DEFINER with search_path '', and names are qualified.)
create or replace function resilience._schema_tracking_skipped()
returns boolean
language sql
stable
as $$
    select pg_catalog.current_setting('resilience.installing', true) operator(pg_catalog.=) 'on'
        or exists (
            select from resilience.settings as s
            where s.name operator(pg_catalog.=) 'schema_tracking'
                and s.value operator(pg_catalog.<>) 'on'
        );
$$;

-- Schemas whose objects are never tracked, whatever the settings say:
-- pg_* (temporary objects included), information_schema, resilience. Inlined
-- (language sql, no SET clause): it runs for every object of every DDL.
create or replace function resilience._schema_never_tracked(schema_name text)
returns boolean
language sql
immutable
as $$
    select schema_name operator(pg_catalog.~) '^pg_'
        or schema_name operator(pg_catalog.=) 'information_schema'
        or schema_name operator(pg_catalog.=) 'resilience';
$$;

-- The head of the client's query text (64 kB), comments taken out.
create or replace function resilience._schema_query_head()
returns text
language sql
stable
as $$
    select pg_catalog.regexp_replace(pg_catalog.regexp_replace(
        pg_catalog.left(pg_catalog.current_query(), 65536),
        -- E'' literals: their meaning does not depend on standard_conforming_strings.
        E'/\\*([^*]|\\*+[^*/])*\\*+/', ' ', 'g'), E'--[^\n]*', ' ', 'g');
$$;

-- The objects one DDL statement touched, remembered for the commit's fold.
-- Called by the event trigger only (pg_event_trigger_ddl_commands() needs
-- it); no SECURITY DEFINER nor SET clause: the trigger is, names are
-- qualified.
create or replace function resilience._schema_note_commands(tag text, first_in_transaction boolean)
returns void
language plpgsql
volatile
as $$
declare
    entries text;
    views_changed boolean;
begin
    -- CONCURRENTLY shares its command tag with the plain form: the query
    -- text says which. Asked only of a transaction's first tracked statement
    -- (CONCURRENTLY runs alone, outside any transaction block), so never on
    -- the appending path; and it must start the query, comments taken out,
    -- so a comment in a migration that mentions it does not make a plain
    -- index one. Only the text's head: a regular expression over a huge query
    -- text (a seed file sent as one string) costs time and memory.
    select pg_catalog.string_agg(
        c.classid::text || ',' || c.objid::text || ',' || c.command_tag
        || case when c.command_tag <> 'CREATE INDEX' or not first_in_transaction then ''
            when resilience._schema_query_head() operator(pg_catalog.~*)
                '^[[:space:]]*create[[:space:]]+(unique[[:space:]]+)?index[[:space:]]+concurrently[[:>:]]'
            then ' CONCURRENTLY' else '' end,
        ';'
    ), pg_catalog.bool_or(c.object_type in ('view', 'materialized view', 'schema'))
    into entries, views_changed
    from pg_catalog.pg_event_trigger_ddl_commands() as c
    where not c.in_extension
        and (c.classid in (
            'pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_constraint'::pg_catalog.regclass,
            'pg_catalog.pg_policy'::pg_catalog.regclass, 'pg_catalog.pg_attrdef'::pg_catalog.regclass,
            'pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_type'::pg_catalog.regclass,
            'pg_catalog.pg_proc'::pg_catalog.regclass
        -- Schemas, collations, extensions...: their ALTER only (a full
        -- re-read at commit, resilience._schema_reread_all_catalogs).
        ) or c.classid operator(pg_catalog.=) any(resilience._schema_reread_all_catalogs())
            and c.command_tag operator(pg_catalog.~~) 'ALTER %')
        -- Only the schemas never tracked are left out here (a cheap test on
        -- every statement); the setting-driven choice is made at commit, where
        -- the catalog is re-read from tracked schemas only.
        and (c.schema_name is null or not resilience._schema_never_tracked(c.schema_name));
    -- DROP OWNED reports no command, yet takes the role out of the policies
    -- it leaves (a full re-read).
    if tag = 'DROP OWNED' then
        entries := pg_catalog.concat_ws(';', entries, '0,0,DROP OWNED');
    end if;
    if entries is not null then
        perform resilience._schema_remember(entries);
    end if;
    -- For the commit: its views are read before the fold lock is taken
    -- (resilience._schema_read_own_views).
    if views_changed then
        perform pg_catalog.set_config('resilience.schema_views_changed', 'on', true);
    end if;
end;
$$;

create or replace function resilience._schema_note_dropped(tag text)
returns void
language plpgsql
volatile
as $$
declare
    entries text;
begin
    select pg_catalog.string_agg(s.classid::text || ',' || s.objid::text || ',' || tag, ';') into entries
    from pg_catalog.pg_event_trigger_dropped_objects() as d
    -- PostgreSQL 14 reports no schema_name for a column default (15+ do);
    -- its address names the schema first on every version. A dropped
    -- default is noted as its table (the snapshot has no row of its own to
    -- find the table by at commit): DROP EXTENSION, FUNCTION or SEQUENCE
    -- ... CASCADE drops a default and reports nothing else of the table.
    cross join lateral (
        select
            case when d.classid operator(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                then d.address_names[1] else d.schema_name end,
            case when d.classid operator(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                then 'pg_catalog.pg_class'::pg_catalog.regclass else d.classid end,
            case when d.classid operator(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                then pg_catalog.to_regclass(pg_catalog.format('%I.%I', d.address_names[1], d.address_names[2]))::oid
                else d.objid end
    ) as s (schema_name, classid, objid)
    where not d.is_temporary and s.objid is not null
        and d.classid in (
            'pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_constraint'::pg_catalog.regclass,
            'pg_catalog.pg_policy'::pg_catalog.regclass, 'pg_catalog.pg_attrdef'::pg_catalog.regclass,
            'pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_type'::pg_catalog.regclass,
            'pg_catalog.pg_proc'::pg_catalog.regclass
        )
        -- The fold ignores whatever the snapshot never had.
        and (s.schema_name is null or not resilience._schema_never_tracked(s.schema_name));
    if entries is not null then
        perform resilience._schema_remember(entries);
    end if;
end;
$$;

-- The error trap (a plpgsql exception block) is a subtransaction, and the
-- end of a subtransaction scans every relation cache entry and every lock
-- of a transaction that created more than 32 relations: in a migration of
-- N CREATE TABLE, trapping every statement costs O(N^2) (measured: 1,000
-- CREATE TABLE took 2.6x as long as untracked, 1.3x without it). So only a
-- transaction's first tracked statement runs in the trap: it reads the
-- settings, checks for the installer and writes the schema_pending row,
-- all of which can fail. Once that succeeded, the later statements read no
-- table and write only transaction-local settings (_schema_appending);
-- schema_tracking is thus read at a transaction's first tracked DDL.
create or replace function resilience._schema_ddl_command_end()
returns event_trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if resilience._schema_appending() then
        perform resilience._schema_note_commands(tg_tag, false);
        return;
    end if;
    begin
        if resilience._schema_tracking_skipped() then
            return;
        end if;
        perform resilience._schema_note_commands(tg_tag, true);
    exception when others then
        raise warning 'pgresilience: schema tracking skipped this DDL (%: %)', sqlstate, sqlerrm;
    end;
end;
$$;

create or replace function resilience._schema_sql_drop()
returns event_trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if resilience._schema_appending() then
        perform resilience._schema_note_dropped(tg_tag);
        return;
    end if;
    begin
        if resilience._schema_tracking_skipped() then
            return;
        end if;
        perform resilience._schema_note_dropped(tg_tag);
    exception when others then
        raise warning 'pgresilience: schema tracking skipped this DROP (%: %)', sqlstate, sqlerrm;
    end;
end;
$$;

-- Recreated on every install so that they always point at the current
-- functions (in a DO block: sqlfluff cannot parse event trigger DDL).
do $$
begin
    drop event trigger if exists resilience_schema_ddl_end;
    create event trigger resilience_schema_ddl_end on ddl_command_end
    execute function resilience._schema_ddl_command_end();

    drop event trigger if exists resilience_schema_sql_drop;
    create event trigger resilience_schema_sql_drop on sql_drop
    execute function resilience._schema_sql_drop();

    -- ALWAYS: also under session_replication_role = replica (pg_restore
    -- --disable-triggers, logical replication appliers, some migration tools),
    -- where an ORIGIN trigger would silently record nothing.
    alter event trigger resilience_schema_ddl_end enable always;
    alter event trigger resilience_schema_sql_drop enable always;
end;
$$;
