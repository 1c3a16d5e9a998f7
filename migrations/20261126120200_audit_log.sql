-- The audit log (issue #4 item 7): one row per state-changing request, per request made under
-- impersonation, per admin action and per denied anonymous attempt, appended by the API's
-- group-commit writer (nimbus-api `audit`). Read by `GET /v1/admin/audit-logs`.
--
-- * Append-only, enforced here: UPDATE, DELETE and TRUNCATE raise, whoever runs them. Rows are
--   removed only by a migration or a superuser dropping the triggers on purpose.
-- * No foreign keys: a row must outlive the user, tenant or resource it names (and a cascade
--   from `tenants` would hit the DELETE trigger). Ids are kept as they were at the time.
-- * `id` is the order of appending; lists are newest first by `id`, filtered by the indexes
--   below (each ends with `id desc` so a filter and the page order share one index scan).

create table audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null default now(),
    -- The effective user (under impersonation: the user acted as); null when anonymous.
    actor_id uuid,
    -- The admin acting as `actor_id`, when impersonating.
    impersonator_id uuid,
    tenant_id uuid,
    -- `METHOD /route/{template}`, e.g. `POST /v1/admin/jobs/{id}/retry`.
    action text not null,
    resource_type text,
    resource_id text,
    request_id text not null,
    client_ip inet,
    outcome text not null,
    http_status smallint not null,
    details jsonb not null default '{}',
    constraint audit_log_outcome_check check (outcome in ('success', 'failure', 'denied')),
    constraint audit_log_action_check check (length(action) between 1 and 300),
    constraint audit_log_http_status_check check (http_status between 100 and 599),
    constraint audit_log_details_check check (jsonb_typeof(details) = 'object')
);

create index audit_log_actor_idx on audit_log (actor_id, id desc) where actor_id is not null;
create index audit_log_impersonator_idx on audit_log (impersonator_id, id desc) where impersonator_id is not null;
create index audit_log_tenant_idx on audit_log (tenant_id, id desc);
create index audit_log_action_idx on audit_log (action, id desc);
create index audit_log_resource_idx on audit_log (resource_type, resource_id, id desc);
-- Most rows succeed: only the rarer outcomes are worth an index.
create index audit_log_outcome_idx on audit_log (outcome, id desc) where outcome <> 'success';
create index audit_log_at_idx on audit_log (at);

create function audit_log_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege', hint = 'audit rows are never changed or removed';
end;
$$;
-- Statement-level, so even an UPDATE or DELETE that matches no row is refused.
create trigger audit_log_no_update before update on audit_log
    for each statement execute function audit_log_append_only();
create trigger audit_log_no_delete before delete on audit_log
    for each statement execute function audit_log_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_append_only();
