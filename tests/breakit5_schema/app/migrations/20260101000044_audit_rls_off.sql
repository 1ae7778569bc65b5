alter table public.audit_events disable row level security;
