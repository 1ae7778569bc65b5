alter view public.public_profiles set (security_invoker = true);
