alter table public.orders attach partition public.orders_2026_03
    for values from ('2026-03-01') to ('2026-04-01');
alter table public.orders_2026_03 drop constraint orders_2026_03_bound;
