alter table public.orders validate constraint orders_total_nonnegative;
