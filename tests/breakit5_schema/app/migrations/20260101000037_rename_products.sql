alter table public.products rename to catalog_items;
