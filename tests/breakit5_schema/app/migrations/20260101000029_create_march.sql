-- The partition is filled and its bound proven by a CHECK before it is attached.
create table public.orders_2026_03 (like public.orders including defaults including constraints);
alter table public.orders_2026_03 add constraint orders_2026_03_bound
    check (created_at >= '2026-03-01' and created_at < '2026-04-01');
