-- Thin wrappers in an "exposed" schema (default public), so that
-- supabase.rpc('tx_begin', ...) works without exposing schema resilience.
-- Each wrapper is SECURITY INVOKER and just forwards its arguments: the
-- caller's identity and privileges are unchanged.

create or replace function resilience._expose(target_schema text)
returns setof regprocedure
language plpgsql
volatile
set search_path = ''
as $$
declare
    api record;
    wrapper regprocedure;
    grantee name;
    allowed boolean;
    is_new boolean;
    has_user_role boolean := exists (select 1 from pg_catalog.pg_roles where rolname = 'resilience_user');
    -- By name as given (the wrappers are created in %I of it): a cast to
    -- regnamespace would fold "Api" to api and refuse quotes.
    target oid := (select n.oid from pg_catalog.pg_namespace as n where n.nspname = target_schema);
begin
    if target is null then
        raise exception using errcode = '3F000',
            message = pg_catalog.format('schema %I does not exist', target_schema);
    end if;
    for api in
        select p.oid, p.proname,
            pg_catalog.pg_get_function_arguments(p.oid) as arguments,
            pg_catalog.pg_get_function_result(p.oid) as result,
            p.provolatile,
            -- Only the input arguments are forwarded (OUT and TABLE columns
            -- are results); a VARIADIC one keeps its keyword.
            (select pg_catalog.string_agg(
                    pg_catalog.format(case when a.mode = 'v' then 'variadic %I => %I' else '%I => %I' end,
                        a.name, a.name), ', ' order by a.ord)
                from rows from (pg_catalog.unnest(p.proargnames), pg_catalog.unnest(p.proargmodes))
                    with ordinality as a (name, mode, ord)
                where coalesce(a.mode, 'i') in ('i', 'b', 'v')) as forwarded,
            -- A row of OUT columns is read as columns, like a set.
            p.proretset or 'o' = any(p.proargmodes) or 't' = any(p.proargmodes) as returns_columns
        from pg_catalog.pg_proc as p
        where p.pronamespace = 'resilience'::regnamespace
            and p.proname !~ '^_'
            and p.prokind = 'f'
            and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
    loop
        -- CREATE OR REPLACE would silently take over a function of the app's
        -- own with this signature, and uninstall would then drop it.
        select w.oid::regprocedure into wrapper
        from pg_catalog.pg_proc as w, pg_catalog.pg_proc as original
        where original.oid = api.oid
            and w.pronamespace = target
            and w.proname = api.proname
            and w.proargtypes = original.proargtypes
            and not exists (select 1 from resilience.exposed_functions as e where e.signature = w.oid);
        if wrapper is not null then
            raise exception using
                errcode = '42723',
                message = pg_catalog.format('function %s exists and is not a pgresilience wrapper', wrapper),
                hint = 'Rename or drop it, or expose the wrappers in another schema '
                    '(pgresilience install --expose SCHEMA, or --expose none).';
        end if;
        execute pg_catalog.format(
            'create or replace function %I.%I(%s) returns %s language sql %s security invoker '
            'set search_path = '''' as $wrapper$ select %s resilience.%I(%s) $wrapper$',
            target_schema, api.proname, api.arguments, api.result,
            case api.provolatile when 'i' then 'immutable' when 's' then 'stable' else 'volatile' end,
            case when api.returns_columns then '* from' else '' end,
            api.proname, coalesce(api.forwarded, ''));
        select w.oid::regprocedure into strict wrapper
        from pg_catalog.pg_proc as w, pg_catalog.pg_proc as original
        where original.oid = api.oid
            and w.pronamespace = target
            and w.proname = api.proname
            and w.proargtypes = original.proargtypes;
        execute pg_catalog.format('comment on function %s is %L', wrapper,
            'pgresilience wrapper of resilience.' || api.proname);
        -- A new wrapper gets the grants its function has; one kept from an
        -- earlier install (_unexpose) keeps the app's grants and revokes,
        -- losing only what its function no longer grants.
        insert into resilience.exposed_functions (signature) values (wrapper)
        on conflict do nothing;
        is_new := found;
        if is_new then
            execute pg_catalog.format('revoke all on function %s from public', wrapper);
            if has_user_role then
                execute pg_catalog.format('grant execute on function %s to resilience_user', wrapper);
            end if;
        end if;
        -- Supabase's roles are NOINHERIT: membership in resilience_user alone
        -- does not let them call anything (see 90_grants.sql), so they are
        -- granted directly, and only where the role may call the function
        -- itself (90_grants.sql keeps some from authenticated).
        for grantee, allowed in
            select r.rolname, pg_catalog.has_function_privilege(r.oid, api.oid, 'execute')
            from pg_catalog.pg_roles as r
            where r.rolname in ('authenticated', 'service_role')
        loop
            if is_new or not allowed then
                execute pg_catalog.format(
                    case when allowed then 'grant execute on function %s to %I'
                        else 'revoke execute on function %s from %I' end,
                    wrapper, grantee);
            end if;
        end loop;
        return next wrapper;
    end loop;
end;
$$;

-- Drops the wrappers, except those in keep_schema that _expose(keep_schema)
-- will re-create with the same arguments and result: CREATE OR REPLACE keeps
-- them, with the grants the app added (anon, its own roles) and the views
-- and policies of the app that call them, so installing again changes none
-- of those. A wrapper whose function changed shape is dropped, RESTRICT: an
-- app object depending on it stops the install rather than going silently.
create or replace function resilience._unexpose(keep_schema text default null)
returns setof regprocedure
language plpgsql
volatile
set search_path = ''
as $$
declare
    wrapper regprocedure;
begin
    for wrapper in
        delete from resilience.exposed_functions as e
        where not exists (
            select 1
            from pg_catalog.pg_proc as w, pg_catalog.pg_proc as api
            where w.oid = e.signature
                and w.pronamespace = (
                    select n.oid from pg_catalog.pg_namespace as n where n.nspname = keep_schema)
                and api.pronamespace = 'resilience'::regnamespace
                and api.proname = w.proname
                and api.proname !~ '^_'
                and api.prokind = 'f'
                and api.proargtypes = w.proargtypes
                and pg_catalog.pg_get_function_arguments(api.oid) = pg_catalog.pg_get_function_arguments(w.oid)
                and pg_catalog.pg_get_function_result(api.oid) = pg_catalog.pg_get_function_result(w.oid)
        )
        returning e.signature
    loop
        execute pg_catalog.format('drop function if exists %s', wrapper);
        return next wrapper;
    end loop;
end;
$$;
