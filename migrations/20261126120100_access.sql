-- Access management: API key names per user, and the indexes of the operators' user search.

-- A user's live keys have distinct names, so a list of keys reads unambiguously. Revoked keys
-- keep their name and free it (a revoked "ci" key can be replaced by a new "ci" key).
create unique index api_keys_user_name_key on api_keys (tenant_id, user_id, lower(name))
    where revoked_at is null;
-- The caller's own keys, newest first.
create index api_keys_user_created_idx on api_keys (tenant_id, user_id, created_at desc, id desc);

-- The operators' user list spans tenants: newest first, optionally narrowed by role.
create index users_created_idx on users (created_at desc, id desc);
create index users_role_idx on users (role, created_at desc);
