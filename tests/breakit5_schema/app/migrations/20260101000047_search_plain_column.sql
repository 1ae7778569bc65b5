alter table public.catalog_items alter column search drop expression;
