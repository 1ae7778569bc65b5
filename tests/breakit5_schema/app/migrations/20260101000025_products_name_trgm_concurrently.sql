create index concurrently products_name_trgm_idx on public.products using gin (name extensions.gin_trgm_ops);
