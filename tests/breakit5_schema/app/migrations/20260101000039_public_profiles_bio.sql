create or replace view public.public_profiles as
    select p.id, p.username, p.display_name as full_name, p.avatar_url, p.bio from public.profiles as p;
