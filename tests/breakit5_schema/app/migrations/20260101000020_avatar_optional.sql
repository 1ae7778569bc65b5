alter table public.audit_events alter column action drop not null;
