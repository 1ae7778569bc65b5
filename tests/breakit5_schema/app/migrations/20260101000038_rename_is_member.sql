alter function private.is_member(bigint) rename to has_org_access;
