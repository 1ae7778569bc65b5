-- The view reading the column has to go while its type changes.
drop view public.public_profiles;
alter table public.profiles alter column display_name type varchar(200);
create view public.public_profiles as
    select p.id, p.username, p.display_name as full_name, p.avatar_url from public.profiles as p;
grant select on public.public_profiles to anon, authenticated;
