create or replace function private.is_member(org bigint)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
    select exists (
        select from public.memberships as m
        where m.organization_id = org and m.user_id = (select auth.uid())
    )
$$;
