alter table public.orders add constraint orders_total_nonnegative check (total >= 0) not valid;
