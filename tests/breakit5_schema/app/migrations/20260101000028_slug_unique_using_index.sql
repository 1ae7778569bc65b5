alter table public.organizations add constraint organizations_slug_key unique using index organizations_slug_idx;
