create table public.order_items (
    id bigint not null,
    order_id bigint not null,
    order_created_at timestamptz not null,
    product_id bigint not null,
    quantity integer not null check (quantity > 0),
    unit_price numeric(10, 2) not null,
    discount_percent integer not null default 0 check (discount_percent between 0 and 100),
    line_total numeric(12, 2) generated always as (quantity * unit_price) stored,
    primary key (id)
);
-- No foreign key to the partitioned orders: each partition attached or
-- detached would add or drop one on order_items (tests/breakit5_schema/test_partitions.py).
create sequence public.order_items_id_seq owned by public.order_items.id;
alter table public.order_items alter column id set default nextval('public.order_items_id_seq');
