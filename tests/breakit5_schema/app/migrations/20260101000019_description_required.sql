update public.products set description = '' where description is null;
alter table public.products alter column description set not null;
