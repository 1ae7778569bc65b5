create type public.user_role as enum ('member', 'admin');
create type public.order_status as enum ('pending', 'paid', 'shipped');
