create table public.profiles (
    id uuid primary key references auth.users (id) on delete cascade,
    username extensions.citext unique,
    full_name varchar(100),
    avatar_url text,
    website text,
    role public.user_role not null default 'member',
    created_at timestamptz not null default now(),
    updated_at timestamptz,
    constraint username_length check (char_length(username::text) >= 3)
);
alter table public.profiles enable row level security;
create policy "Users can view own profile" on public.profiles
    for select to authenticated using (auth.uid() = id);
create policy "Users can update own profile" on public.profiles
    for update to authenticated using (auth.uid() = id);
