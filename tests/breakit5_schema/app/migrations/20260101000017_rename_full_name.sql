alter table public.profiles rename column full_name to display_name;
