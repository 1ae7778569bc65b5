alter table public.organizations add column invite_code uuid default gen_random_uuid();
