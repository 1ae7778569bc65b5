drop index concurrently public.memberships_user_id_idx;
