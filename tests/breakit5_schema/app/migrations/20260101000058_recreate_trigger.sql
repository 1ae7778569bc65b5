drop trigger handle_updated_at on public.profiles;
create trigger handle_updated_at before update on public.profiles
    for each row execute procedure extensions.moddatetime(updated_at);
