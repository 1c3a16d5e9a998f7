-- API processes keep what an API key authenticated to for a few seconds. Any change that could
-- make such an answer wrong (a key revoked, expiring sooner, rescoped, deleted; its user
-- deactivated, given another role or tenant, deleted) notifies the channel `nimbus_auth_changed`
-- when it commits, and every process forgets what it kept. `last_used_at` writes do not notify.

create function notify_auth_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('nimbus_auth_changed', '');
    return null;
end;
$$;

create trigger api_keys_auth_changed
    after update of tenant_id, user_id, prefix, secret_sha256, scopes, expires_at, revoked_at or delete
    on api_keys for each statement execute function notify_auth_changed();
create trigger users_auth_changed
    after update of tenant_id, email, display_name, role, active or delete
    on users for each statement execute function notify_auth_changed();
