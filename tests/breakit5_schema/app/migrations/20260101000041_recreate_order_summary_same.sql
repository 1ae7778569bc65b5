-- A migration tool's "drop and create" of views: same definition again.
drop view public.organization_dashboard;
drop view public.order_summary;
create view public.order_summary with (security_invoker = true) as
    select o.organization_id, o.status, count(*) as order_count, sum(o.total) as revenue
    from public.orders as o
    group by o.organization_id, o.status;
create view public.organization_dashboard with (security_invoker = true) as
    select org.id, org.name, t.status, t.order_count, t.revenue
    from public.organizations as org
    join public.order_summary as t on t.organization_id = org.id;
grant select on public.order_summary, public.organization_dashboard to authenticated;
