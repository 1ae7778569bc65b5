do $$
declare
    t text;
begin
    foreach t in array array['orders_2026_02', 'orders_2026_03'] loop
        execute format('create index %I on public.%I (status)', t || '_status_idx', t);
    end loop;
end;
$$;
