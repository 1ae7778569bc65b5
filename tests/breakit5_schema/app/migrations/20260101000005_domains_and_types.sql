-- Domains and composite types are not tracked objects: no version.
create domain public.email_address as text check (value ~ '^[^@]+@[^@]+$');
create type public.postal_address as (street text, city text, zip text);
comment on type public.postal_address is 'shipping address';
