alter function public.search_products(text) security definer;
alter function public.search_products(text) set search_path = '';
