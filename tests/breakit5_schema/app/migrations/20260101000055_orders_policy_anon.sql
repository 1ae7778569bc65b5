alter policy "members read orders" on public.orders to authenticated, anon;
