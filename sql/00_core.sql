-- Core helpers shared by every feature: settings, caller identity, audit.
-- Every SECURITY DEFINER function pins search_path to '' and qualifies names.

-- plpgsql (not sql): a sql function with a SET clause is re-planned on every
-- call, a plpgsql one keeps its plan.
create or replace function resilience._setting(setting_name text)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return (select s.value from resilience.settings as s where s.name = setting_name);
end;
$$;

-- The role that called us. Inside a SECURITY DEFINER function current_user is
-- the owner, so read the SET ROLE value (PostgREST: `set local role
-- authenticated`), else the session user. The caller helpers carry no SET
-- clause so that they can be inlined; they qualify every name instead.
create or replace function resilience._caller_role()
returns text
language sql
stable
as $$
    select case
        when pg_catalog.current_setting('role') = 'none'
            then pg_catalog.session_user()::text
        else pg_catalog.current_setting('role')
    end;
$$;

-- The JWT subject PostgREST put in request.jwt.claims (an unset setting reads
-- ''), or null outside PostgREST.
create or replace function resilience._caller_sub()
returns text
language sql
stable
as $$
    select coalesce(
        nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb
            operator(pg_catalog.->>) 'sub',
        nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), '')
    );
$$;

-- The package's owner counts too: it owns every table the API guards (a
-- non-superuser owner, Supabase's postgres, is in no role of ours, and its
-- `uninstall --force` must roll back every role's transactions).
create or replace function resilience._is_admin()
returns boolean
language sql
stable
as $$
    select (exists (select 1 from pg_catalog.pg_roles as r where r.rolname = 'resilience_admin')
            and pg_catalog.pg_has_role(resilience._caller_role(), 'resilience_admin', 'member'))
        or pg_catalog.pg_has_role(resilience._caller_role(), (
            select n.nspowner from pg_catalog.pg_namespace as n where n.nspname = 'resilience'
        ), 'member');
$$;

-- One audit row. The actor is the caller, or, with on_behalf_of, the owner
-- of that transaction (the reaper acts for the owner: the row is the
-- owner's to read, not that of whoever's call happened to reap).
create or replace function resilience._audit(
    event text, tx_id uuid, detail jsonb default '{}', on_behalf_of uuid default null
)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if on_behalf_of is null then
        insert into resilience.audit_log (event, tx_id, actor_role, actor_sub, detail)
        values (event, tx_id, resilience._caller_role(), resilience._caller_sub(), coalesce(detail, '{}'));
    else
        insert into resilience.audit_log (event, tx_id, actor_role, actor_sub, detail)
        select event, tx_id, t.owner_role, t.owner_sub, coalesce(detail, '{}')
        from resilience.transactions as t where t.id = on_behalf_of;
    end if;
end;
$$;

-- Create a policy of ours (statement: its CREATE POLICY) unless it is in
-- place as that very statement made it (the statement's SHA-256 is kept as
-- the policy's comment). DROP and CREATE POLICY lock the table ACCESS
-- EXCLUSIVE, and every install runs the policies: re-created each time,
-- they made an install wait for every session whose open transaction had
-- used the table, and every call of the API wait behind the install.
create or replace function resilience._policy(relation regclass, policy_name name, statement text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    digest text := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(statement, 'UTF8')), 'hex');
    existing oid;
begin
    select p.oid into existing from pg_catalog.pg_policy as p
    where p.polrelid = relation and p.polname = policy_name;
    if existing is not null then
        if pg_catalog.obj_description(existing, 'pg_policy') is not distinct from digest then
            return;
        end if;
        execute pg_catalog.format('drop policy %I on %s', policy_name, relation);
    end if;
    execute statement;
    execute pg_catalog.format('comment on policy %I on %s is %L', policy_name, relation, digest);
end;
$$;
