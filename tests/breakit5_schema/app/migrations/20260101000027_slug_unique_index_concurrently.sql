create unique index concurrently organizations_slug_idx on public.organizations (slug);
