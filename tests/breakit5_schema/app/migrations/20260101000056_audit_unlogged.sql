alter table public.audit_events set unlogged;
