alter table public.profiles alter column updated_at set default now();
create trigger handle_updated_at before update on public.profiles
    for each row execute procedure extensions.moddatetime(updated_at);
