begin;
alter table public.profiles add column nickname text;
drop view public.public_profiles;
rollback;
