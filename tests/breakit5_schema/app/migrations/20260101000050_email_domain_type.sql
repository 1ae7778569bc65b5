alter table public.audit_events add column contact public.email_address;
alter table public.catalog_items alter column price type numeric(14, 2);
