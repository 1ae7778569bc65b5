alter view public.order_totals rename to order_summary;
