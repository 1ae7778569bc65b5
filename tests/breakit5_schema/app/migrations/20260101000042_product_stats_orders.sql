drop materialized view public.product_stats;
create materialized view public.product_stats as
    select i.product_id, sum(i.quantity) as units_sold, sum(i.line_total) as revenue,
        count(distinct i.order_id) as order_count
    from public.order_items as i
    group by i.product_id
with no data;
create unique index product_stats_product_id_idx on public.product_stats (product_id);
