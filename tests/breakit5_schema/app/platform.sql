-- What the hosting platform creates before the app's first migration
-- (Supabase: schema auth, its users table, auth.uid() reading PostgREST's JWT
-- claims, an extensions schema). auth and extensions are in
-- schema_ignored_schemas: the app's migrations only reference them.
create schema if not exists auth;
create schema if not exists extensions;
create table auth.users (
    id uuid primary key default gen_random_uuid(),
    email text unique,
    raw_user_meta_data jsonb,
    created_at timestamptz not null default now()
);
create function auth.uid() returns uuid
language sql stable
as $$
    select nullif(current_setting('request.jwt.claims', true)::jsonb ->> 'sub', '')::uuid
$$;
create function auth.role() returns text
language sql stable
as $$
    select nullif(current_setting('request.jwt.claims', true)::jsonb ->> 'role', '')
$$;
grant usage on schema auth to anon, authenticated, service_role;
