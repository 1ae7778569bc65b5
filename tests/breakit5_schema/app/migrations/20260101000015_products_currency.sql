alter table public.products add column currency char(3) not null default 'USD';
