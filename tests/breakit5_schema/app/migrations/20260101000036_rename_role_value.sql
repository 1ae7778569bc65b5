alter type public.user_role rename value 'member' to 'user';
