-- Grants, comments, a refresh: nothing tracked changes.
comment on table public.profiles is 'one row per auth.users row';
comment on column public.profiles.username is 'case-insensitive handle';
grant select on public.public_profiles to anon, authenticated;
grant select, update on public.profiles to authenticated;
grant select on public.order_totals, public.organization_dashboard to authenticated;
revoke execute on function public.handle_new_user() from public, anon, authenticated;
revoke all on public.audit_events from anon;
refresh materialized view public.product_stats;
