drop table public.orders_2026_01;
