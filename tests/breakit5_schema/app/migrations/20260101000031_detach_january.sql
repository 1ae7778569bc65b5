alter table public.orders detach partition public.orders_2026_01;
