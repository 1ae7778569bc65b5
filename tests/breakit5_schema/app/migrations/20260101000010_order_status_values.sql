alter type public.order_status add value if not exists 'cancelled';
alter type public.order_status add value 'refunded' before 'shipped';
