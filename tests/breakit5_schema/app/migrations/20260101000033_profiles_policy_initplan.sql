-- Supabase's advice: wrap auth.uid() in a subquery so it runs once per query.
drop policy "Users can update own profile" on public.profiles;
create policy "Users can update own profile" on public.profiles
    for update to authenticated using ((select auth.uid()) = id) with check ((select auth.uid()) = id);
