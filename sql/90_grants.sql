-- Grants and row-level security, re-applied on every install.
-- Public API = every function of schema resilience whose name does not start
-- with an underscore; resilience_user may call it, nobody else by default
-- (`anon` and PUBLIC get nothing).


-- Grant to `target` every privilege `source` holds on schema resilience and
-- its tables and functions, and add `target` to every policy naming `source`.
create or replace function resilience._mirror_privileges(source name, target name)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    obj record;
begin
    if pg_catalog.has_schema_privilege(source, 'resilience', 'usage') then
        execute pg_catalog.format('grant usage on schema resilience to %I', target);
    end if;
    for obj in
        select c.oid::regclass as relation, acl.privilege_type
        from pg_catalog.pg_class as c, pg_catalog.aclexplode(c.relacl) as acl
        where c.relnamespace = 'resilience'::regnamespace
            and acl.grantee = pg_catalog.to_regrole(source)
    loop
        execute pg_catalog.format('grant %s on %s to %I', obj.privilege_type, obj.relation, target);
    end loop;
    for obj in
        select p.oid::regprocedure as signature
        from pg_catalog.pg_proc as p, pg_catalog.aclexplode(p.proacl) as acl
        where p.pronamespace = 'resilience'::regnamespace
            and acl.grantee = pg_catalog.to_regrole(source) and acl.privilege_type = 'EXECUTE'
    loop
        execute pg_catalog.format('grant execute on function %s to %I', obj.signature, target);
    end loop;
    for obj in
        select pol.polname, pol.polrelid::regclass as relation,
            (select pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ')
                from pg_catalog.pg_roles as r
                where r.oid = any(pol.polroles) or r.rolname = target) as roles
        from pg_catalog.pg_policy as pol
        inner join pg_catalog.pg_class as c on c.oid = pol.polrelid
        where c.relnamespace = 'resilience'::regnamespace
            and pg_catalog.to_regrole(source) = any(pol.polroles)
            and not pg_catalog.to_regrole(target) = any(pol.polroles)
    loop
        execute pg_catalog.format('alter policy %I on %s to %s', obj.polname, obj.relation, obj.roles);
    end loop;
end;
$$;

-- The role memberships the package wants (Supabase: signed-in users and the
-- service role; `anon` gets nothing) that are not in place, between roles
-- that exist: the install grants them, advice.follow_ups lists what it could not.
create or replace function resilience._missing_memberships()
returns table (granted name, member name)
language sql
stable
set search_path = ''
as $$
    -- Joined by oid: pg_has_role raises on a role name that does not exist.
    select g.rolname, m.rolname
    from (values
        ('resilience_user'::name, 'resilience_admin'::name),
        ('resilience_user', 'authenticated'),
        ('resilience_user', 'service_role'),
        ('resilience_admin', 'service_role')
    ) as w (granted, member)
    inner join pg_catalog.pg_roles as g on w.granted = g.rolname
    inner join pg_catalog.pg_roles as m on w.member = m.rolname
    where not pg_catalog.pg_has_role(m.oid, g.oid, 'MEMBER')
$$;

revoke all on schema resilience from public;
-- Only the functions this role owns (or a role it belongs to): where a
-- superuser installed PL/Python into an owner's install, REVOKE on its
-- _schema_diff would fail the owner's next install (42501).
do $$
declare
    fn regprocedure;
begin
    for fn in
        select p.oid::regprocedure from pg_catalog.pg_proc as p
        where p.pronamespace = 'resilience'::regnamespace
            and pg_catalog.pg_has_role(p.proowner, 'USAGE')
    loop
        execute pg_catalog.format('revoke all on function %s from public', fn);
    end loop;
end;
$$;
revoke all on all tables in schema resilience from public;

do $$
declare
    obj record;
    has_roles boolean := exists (select 1 from pg_roles where rolname = 'resilience_user')
        and exists (select 1 from pg_roles where rolname = 'resilience_admin');
begin
    -- RLS on every table of ours: clients read their own rows at most.
    for obj in
        select c.oid::regclass as table_name from pg_class as c
        where c.relnamespace = 'resilience'::regnamespace and c.relkind in ('r', 'p')
            and not c.relrowsecurity
    loop
        execute format('alter table %s enable row level security', obj.table_name);
    end loop;

    if not has_roles then
        raise warning 'pgresilience: roles resilience_user/resilience_admin missing; API left to the owner only';
        return;
    end if;

    grant usage on schema resilience to resilience_user, resilience_admin;
    for obj in
        select p.oid::regprocedure as signature from pg_proc as p
        where p.pronamespace = 'resilience'::regnamespace
            and p.proname !~ '^_'
            and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
    loop
        execute format('grant execute on function %s to resilience_user', obj.signature);
    end loop;

    -- Row-level security policies call these as the querying user.
    grant execute on function resilience._caller_role(), resilience._caller_sub(),
        resilience._is_admin() to resilience_user;

    grant select on resilience.audit_log to resilience_user;
    perform resilience._policy('resilience.audit_log', 'audit_log_own_rows', $policy$
    create policy audit_log_own_rows on resilience.audit_log for select to resilience_user
        using (
            (actor_role = resilience._caller_role()
                and actor_sub is not distinct from resilience._caller_sub())
            or resilience._is_admin()
        )
    $policy$);

    -- Supabase's roles are NOINHERIT: membership in resilience_user alone
    -- gives them nothing. Mirror every privilege and policy of
    -- resilience_user onto them, so that what one may do the other may too.
    for obj in
        select r.rolname from pg_roles as r where r.rolname in ('authenticated', 'service_role')
    loop
        perform resilience._mirror_privileges('resilience_user', obj.rolname);
    end loop;
    -- Except what belongs to the app's server processes and operators
    -- (resilience_user, service_role), never to a signed-in end user:
    -- * the shared circuit state: forcing the app's breakers open, disabling
    --   or resetting them, holding the probe lease, filling the table
    --   (tests/breakit_security/test_circuits.py);
    -- * schema tracking: the whole schema with policy expressions (and,
    --   without PL/Python, function bodies in the deltas), full catalog
    --   re-reads, and the fold lock every migration's commit waits for
    --   (tests/breakit_security/test_schema_api.py).
    -- Revoked explicitly: an earlier install mirrored them. The exposed
    -- wrappers follow (a wrapper is granted to whoever may call its function).
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        for obj in
            select p.oid::regprocedure as signature from pg_proc as p
            where p.pronamespace = 'resilience'::regnamespace
                and p.proname in ('_circuit_publish', '_circuit_probe', '_circuit_get', 'schema_current',
                    'schema_refresh', 'schema_preview', 'schema_history', 'schema_changes_since')
        loop
            execute format('revoke execute on function %s from authenticated', obj.signature);
        end loop;
    end if;

    -- Role memberships need the ADMIN option on our roles, which a database
    -- owner without CREATEROLE lacks. Only missing ones are granted (granting
    -- an existing one needs that option too); what is left, the installer's
    -- warnings and `status` list (advice.follow_ups), so nothing is said here.
    begin
        for obj in select m.granted, m.member from resilience._missing_memberships() as m loop
            execute format('grant %I to %I', obj.granted, obj.member);
        end loop;
    exception when insufficient_privilege then
        null;
    end;
end;
$$;

-- Every install regenerates every managed table with this release's code
-- (images are kept): last, once every helper the generated code is built
-- from exists and tx_execute's grants (which the generated helpers copy)
-- are in place.
do $$
declare
    managed record;
begin
    for managed in select m.relation from resilience.managed_tables as m loop
        perform resilience._regenerate(managed.relation);
    end loop;
end;
$$;
