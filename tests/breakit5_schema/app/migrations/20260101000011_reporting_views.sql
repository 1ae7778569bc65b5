create view public.order_totals with (security_invoker = true) as
    select o.organization_id, o.status, count(*) as order_count, sum(o.total) as revenue
    from public.orders as o
    group by o.organization_id, o.status;
create view public.organization_dashboard with (security_invoker = true) as
    select org.id, org.name, t.status, t.order_count, t.revenue
    from public.organizations as org
    join public.order_totals as t on t.organization_id = org.id;
create view public.public_profiles as
    select p.id, p.username, p.full_name, p.avatar_url from public.profiles as p;
