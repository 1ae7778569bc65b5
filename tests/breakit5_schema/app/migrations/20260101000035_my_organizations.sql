create function public.my_organizations()
returns setof bigint
language sql
stable
as $$
    select m.organization_id from public.memberships as m where m.user_id = auth.uid()
$$;
alter function public.my_organizations() security definer;
alter function public.my_organizations() set search_path = '';
