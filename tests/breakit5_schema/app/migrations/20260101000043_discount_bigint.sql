-- Discounts in basis points overflow integer: integer -> bigint rewrites the
-- table; its CHECK is rebuilt, with the same text.
alter table public.order_items alter column discount_percent type bigint;
