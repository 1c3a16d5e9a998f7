-- API processes keep what an API key authenticated to for a few seconds. Any change that could
-- make such an answer wrong (a key revoked, expiring sooner, rescoped, deleted; its user
-- deactivated, given another role or tenant, deleted) notifies the channel `nimbus_auth_changed`
-- when it commits, and every process forgets what it kept. Only rows that really changed notify
-- (a statement that matches nothing, or a `last_used_at` write, does not), so no caller can keep
-- every process's cache empty by repeating a no-op. Notifications within one transaction are
-- delivered once.

create function notify_auth_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('nimbus_auth_changed', '');
    return null;
end;
$$;

create trigger api_keys_auth_changed after update on api_keys for each row
    when ((old.tenant_id, old.user_id, old.prefix, old.secret_sha256, old.scopes, old.expires_at, old.revoked_at)
        is distinct from
        (new.tenant_id, new.user_id, new.prefix, new.secret_sha256, new.scopes, new.expires_at, new.revoked_at))
    execute function notify_auth_changed();
create trigger api_keys_auth_deleted after delete on api_keys for each row
    execute function notify_auth_changed();
create trigger users_auth_changed after update on users for each row
    when ((old.tenant_id, old.email, old.display_name, old.role, old.active)
        is distinct from (new.tenant_id, new.email, new.display_name, new.role, new.active))
    execute function notify_auth_changed();
create trigger users_auth_deleted after delete on users for each row
    execute function notify_auth_changed();
