-- upgrade --
do $$
declare
    active record;
    failure text;
begin
    -- v1's functions are still in place while revisions run (the SQL files of
    -- the new release are applied after alembic).
    if pg_catalog.to_regprocedure('resilience._undo(uuid, bigint, boolean)') is null
        or pg_catalog.to_regclass('resilience.restore_points') is null
    then
        return;
    end if;
    for active in
        select t.id from resilience.transactions as t where t.status = 'active' order by t.started_at
        for update
    loop
        begin
            execute 'select resilience._undo($1, 0, false)' using active.id;
            update resilience.transactions as t
            set status = 'rolled_back', finished_at = pg_catalog.clock_timestamp(),
                outcome = pg_catalog.jsonb_build_object('reason', 'upgrade to typed images')
            where t.id = active.id;
            insert into resilience.audit_log (event, tx_id, actor_role, detail)
            values ('rollback', active.id, current_user,
                pg_catalog.jsonb_build_object('reason', 'upgrade to typed images'));
        exception when others then
            get stacked diagnostics failure = message_text;
            update resilience.transactions as t
            set status = 'failed', finished_at = pg_catalog.clock_timestamp(),
                outcome = pg_catalog.jsonb_build_object(
                    'reason', 'upgrade to typed images: rollback failed', 'error', failure)
            where t.id = active.id;
            insert into resilience.audit_log (event, tx_id, actor_role, detail)
            values ('conflict', active.id, current_user,
                pg_catalog.jsonb_build_object('during', 'upgrade', 'error', failure));
        end;
    end loop;
end;
$$;

-- v1 functions replaced by others of another signature (their capture
-- triggers go with _capture(); this release's SQL regenerates them).
drop function if exists resilience._capture() cascade;
drop function if exists resilience._claim_conflict(regclass, jsonb, uuid);
drop function if exists resilience._execute_sql(regclass, text, jsonb, jsonb);
drop function if exists resilience._match_sql(regclass, jsonb);
drop function if exists resilience._require_columns(regclass, text[]);
drop function if exists resilience._execute_done(uuid, regclass, text, bigint, timestamptz);
-- Same arguments, another result type (the descriptor).
drop function if exists resilience._execute_prepare(uuid, regclass);
drop function if exists resilience._release_claims(uuid);
drop function if exists resilience._undo_batch(uuid, bigint, oid, text, boolean);
drop function if exists resilience._undo_conflicts(uuid, bigint, oid, text, text, text);
drop function if exists resilience._key_join_sql(regclass);
drop function if exists resilience._restorable_columns(regclass, boolean);
drop function if exists resilience._raise_undo_conflict(uuid, jsonb);
drop function if exists resilience._audit(text, uuid, jsonb);

-- v1 storage: jsonb images and separate claims.
drop table if exists resilience.restore_points cascade;
drop table if exists resilience.claims cascade;
delete from resilience.claimed_tables;

-- The journal: one row per captured statement (and per lock), in the global
-- order of restore_point_seq. Rollback walks it newest first; each row names
-- the table whose image table holds the statement's rows.
create table resilience.tx_statements (
    tx_id uuid not null,
    seq bigint not null,
    relation regclass not null,
    operation text not null check (operation in ('insert', 'update', 'delete', 'lock')),
    row_count bigint not null check (row_count >= 0),
    primary key (tx_id, seq)
);
comment on table resilience.tx_statements is
    'Captured statements of logical transactions; their rows live in the typed image tables';
alter table resilience.tx_statements enable row level security;

-- The registry keeps, per managed table, what manage_table generated: the
-- image table, its row type, the table's shape when generated, and the
-- descriptor tx_execute builds statements from (no catalog reads per call).
alter table resilience.managed_tables
    add column image_table regclass,
    add column image_type regtype,
    add column capture_function regprocedure,
    add column undo_function regprocedure,
    add column lock_function regprocedure,
    add column shape text,
    add column descriptor jsonb,
    -- Images of statements up to this seq lack columns added since: conflicts.
    add column reshaped_at_seq bigint;

-- downgrade --
-- What manage_table generated: triggers on user tables, image tables, row
-- types, functions.
do $$
declare
    obj record;
begin
    for obj in
        select t.tgname, t.tgrelid::regclass as relation
        from pg_trigger as t
        join pg_proc as p on p.oid = t.tgfoid
        where p.pronamespace = 'resilience'::regnamespace
            and (p.proname ~ '^_capture_' or p.proname = '_guard_truncate')
    loop
        execute format('drop trigger if exists %I on %s', obj.tgname, obj.relation);
    end loop;
    for obj in
        select c.oid::regclass as image from pg_class as c
        where c.relnamespace = 'resilience'::regnamespace and c.relkind = 'r' and c.relname ~ '^_img_'
    loop
        execute format('drop table if exists %s', obj.image);
    end loop;
    for obj in
        select t.oid::regtype as row_type from pg_type as t
        where t.typnamespace = 'resilience'::regnamespace and t.typtype = 'c' and t.typname ~ '^_row_'
    loop
        execute format('drop type if exists %s cascade', obj.row_type);
    end loop;
    drop event trigger if exists resilience_managed_ddl_end;
    drop event trigger if exists resilience_managed_sql_drop;
end;
$$;
drop table if exists resilience.tx_statements cascade;
alter table resilience.managed_tables
    drop column if exists image_table,
    drop column if exists image_type,
    drop column if exists capture_function,
    drop column if exists undo_function,
    drop column if exists lock_function,
    drop column if exists shape,
    drop column if exists descriptor,
    drop column if exists reshaped_at_seq;
