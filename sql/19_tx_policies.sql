-- Logical transactions: what clients may read (their own rows) and the
-- internal helpers SECURITY INVOKER tx_execute and tx_run call. Clients
-- write none of these tables directly, and read no image (images hold rows
-- the caller may not read: cascades under another user's RLS, columns
-- without a SELECT grant); tx_status gives counts, tx_images is for admins.

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'resilience_user') then
        return;
    end if;

    grant select on resilience.transactions, resilience.savepoints, resilience.managed_tables
    to resilience_user;

    perform resilience._policy('resilience.transactions', 'transactions_own_rows', $policy$
    create policy transactions_own_rows on resilience.transactions for select to resilience_user
        using (
            (owner_role = resilience._caller_role()
                and owner_sub is not distinct from resilience._caller_sub())
            or resilience._is_admin()
        )
    $policy$);

    -- Rows of a transaction are visible when the transaction is (its policy
    -- applies inside the subquery).
    perform resilience._policy('resilience.savepoints', 'savepoints_own_rows', $policy$
    create policy savepoints_own_rows on resilience.savepoints for select to resilience_user
        using (exists (select 1 from resilience.transactions as t where t.id = tx_id))
    $policy$);

    perform resilience._policy('resilience.managed_tables', 'managed_tables_readable', $policy$
    create policy managed_tables_readable on resilience.managed_tables for select to resilience_user
        using (true)
    $policy$);

    -- Internal steps of tx_execute and tx_run, which run as the caller.
    grant execute on function
        resilience._resolve_table(text),
        resilience._execute_prepare(uuid, regclass),
        resilience._descriptor(regclass),
        resilience._describe(regclass),
        resilience._has_equality(oid),
        resilience._equality_operator(oid),
        resilience._base_type(oid, integer),
        resilience._returning_sql(regclass, jsonb),
        resilience._execute_sql(regclass, text, jsonb, jsonb, uuid, jsonb),
        resilience._match_sql(jsonb, jsonb),
        resilience._require_columns(jsonb, text []),
        resilience._record_definition(jsonb, text []),
        resilience._insert_row_sql(jsonb, text [], text),
        resilience._match_definition(jsonb, text [])
    to resilience_user;
end;
$$;
