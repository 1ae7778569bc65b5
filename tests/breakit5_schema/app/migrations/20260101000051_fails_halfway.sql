-- Fails at its second statement: nothing of it may be recorded.
alter table public.profiles add column nickname text;
alter table public.no_such_table add column nickname text;
