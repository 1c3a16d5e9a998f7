-- Events, webhooks and notifications (DESIGN §11).
--
-- Events go with their tenant (as everything else of it does), and what was made of them with them.
-- `seq` is an identity column, unique by construction: its index only cost every insert.
alter table events drop constraint events_tenant_fkey,
    add constraint events_tenant_fkey foreign key (tenant_id) references tenants (id) on delete cascade,
    drop constraint events_seq_key;

-- The changes users care about that happen in many places (an instance's status, a job ending, a
-- new API key) are recorded by triggers, so every path that makes the change records its event in
-- the same transaction, including ones written later. Billing records its own events in code.

-- Creates come many rows to a statement (the API batches them): one insert for the statement.
create function record_instances_created() returns trigger language plpgsql as $$
begin
    insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data)
    select gen_random_uuid(), 'instance.created', now(), n.tenant_id, 'instance', n.id::text,
           jsonb_build_object('id', n.id, 'name', n.name, 'type', n.kind, 'status', n.status, 'node', n.node,
                              'vmid', n.vmid)
    from created n;
    return null;
end $$;
create trigger instances_record_created after insert on instances referencing new table as created
    for each statement execute function record_instances_created();

-- Status changes (the `when` keeps every other update from calling the function).
create function record_instance_status() returns trigger language plpgsql as $$
declare
    view jsonb := jsonb_build_object('id', new.id, 'name', new.name, 'type', new.kind, 'status', new.status,
                                     'node', new.node, 'vmid', new.vmid);
begin
    insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data)
    values (gen_random_uuid(), 'instance.status_changed', now(), new.tenant_id, 'instance', new.id::text,
            view || jsonb_build_object('previousStatus', old.status));
    if new.status = 'deleted' then
        insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data)
        values (gen_random_uuid(), 'instance.deleted', now(), new.tenant_id, 'instance', new.id::text, view);
    end if;
    return null;
end $$;
create trigger instances_record_status after update of status on instances
    for each row when (new.status is distinct from old.status) execute function record_instance_status();

-- A tenant's job that ends: `job.succeeded` / `job.failed`, and for backups `backup.completed` /
-- `backup.failed` too. System jobs (metering, invoicing) and notification jobs record nothing.
create function record_job_event() returns trigger language plpgsql as $$
declare
    data jsonb;
begin
    data := jsonb_build_object('id', new.id, 'kind', new.kind, 'status', new.status, 'instanceId', new.instance_id,
                               'attempts', new.attempts, 'finishedAt', new.finished_at);
    if new.status = 'failed' then
        data := data || jsonb_build_object('error', jsonb_build_object('code', new.error_code, 'message', new.error_message));
    end if;
    insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data)
    values (gen_random_uuid(), 'job.' || new.status, now(), new.tenant_id, 'job', new.id::text, data);
    if new.kind = 'backup' and new.instance_id is not null then
        insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data)
        values (gen_random_uuid(), case new.status when 'succeeded' then 'backup.completed' else 'backup.failed' end,
                now(), new.tenant_id, 'instance', new.instance_id::text, data);
    end if;
    return null;
end $$;
create trigger jobs_record_event after update of status on jobs
    for each row when (new.status is distinct from old.status and new.status in ('succeeded', 'failed')
                       and new.tenant_id is not null and new.kind <> 'notify')
    execute function record_job_event();

create function record_api_key_event() returns trigger language plpgsql as $$
begin
    insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data)
    values (gen_random_uuid(), 'apikey.created', now(), new.tenant_id, 'apikey', new.id::text,
            jsonb_build_object('id', new.id, 'name', new.name, 'prefix', new.prefix, 'scopes', new.scopes,
                               'userId', new.user_id, 'expiresAt', new.expires_at));
    return null;
end $$;
create trigger api_keys_record_event after insert on api_keys for each row execute function record_api_key_event();

-- Webhook endpoints, per tenant. `event_types` empty means every type. The secret signs deliveries
-- (Standard Webhooks v1); during a rotation the previous one signs too until it expires.
create table webhook_endpoints (
    id uuid primary key,
    tenant_id uuid not null constraint webhook_endpoints_tenant_fkey references tenants (id) on delete cascade,
    url text not null,
    description text not null default '',
    event_types text[] not null default '{}',
    enabled boolean not null default true,
    -- Why it was disabled by the system (`gone`: the receiver answered 410; `failing`: 5 days of
    -- failures); null when enabled or disabled by its owner.
    disabled_reason text,
    secret text not null,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    -- Deliveries per second at most (null: no cap).
    rate_limit integer,
    -- The first failure since the last success.
    failing_since timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint webhook_endpoints_tenant_id_key unique (tenant_id, id),
    constraint webhook_endpoints_url_check check (url ~ '^https?://' and length(url) <= 2000),
    constraint webhook_endpoints_description_check check (length(description) <= 500),
    constraint webhook_endpoints_rate_limit_check check (rate_limit between 1 and 10000),
    constraint webhook_endpoints_previous_secret_check check ((previous_secret is null) = (previous_secret_expires_at is null))
);
create index webhook_endpoints_tenant_idx on webhook_endpoints (tenant_id, created_at);

-- One delivery per (endpoint, event): the fan-out inserts it at most once, so a consumer that
-- handles an event twice sends nothing twice. `payload` is the body as signed and sent.
create table webhook_deliveries (
    id uuid primary key,
    tenant_id uuid not null,
    endpoint_id uuid not null,
    event_id uuid not null constraint webhook_deliveries_event_fkey references events (id) on delete cascade,
    event_type text not null,
    payload jsonb not null,
    status text not null default 'pending',
    attempts integer not null default 0,
    next_attempt_at timestamptz,
    -- A worker sending it holds it until then.
    locked_until timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint webhook_deliveries_endpoint_fkey foreign key (tenant_id, endpoint_id)
        references webhook_endpoints (tenant_id, id) on delete cascade,
    constraint webhook_deliveries_endpoint_event_key unique (endpoint_id, event_id),
    constraint webhook_deliveries_status_check check (status in ('pending', 'succeeded', 'failed')),
    constraint webhook_deliveries_due_check check ((status = 'pending') = (next_attempt_at is not null))
);
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_endpoint_idx on webhook_deliveries (endpoint_id, created_at desc);

-- Every attempt of a delivery, as the delivery log shows it.
create table webhook_attempts (
    id bigint generated always as identity primary key,
    delivery_id uuid not null constraint webhook_attempts_delivery_fkey references webhook_deliveries (id) on delete cascade,
    attempted_at timestamptz not null,
    -- The receiver's HTTP status; null when there was no answer.
    status_code integer,
    -- Why there was no answer or why it failed (a refused address, a timeout).
    error text,
    latency_ms integer not null,
    -- The first KiB of the answer.
    response_body text not null default '',
    succeeded boolean not null
);
create index webhook_attempts_delivery_idx on webhook_attempts (delivery_id, id);

-- The in-app feed: one row per (user, event).
create table notifications (
    id uuid primary key,
    tenant_id uuid not null,
    user_id uuid not null,
    event_id uuid not null constraint notifications_event_fkey references events (id) on delete cascade,
    type text not null,
    title text not null,
    resource_type text,
    resource_id text,
    created_at timestamptz not null,
    read_at timestamptz,
    constraint notifications_user_fkey foreign key (tenant_id, user_id) references users (tenant_id, id) on delete cascade,
    constraint notifications_user_event_key unique (user_id, event_id)
);
create index notifications_feed_idx on notifications (user_id, (read_at is null) desc, created_at desc);
create index notifications_unread_idx on notifications (user_id) where read_at is null;

-- A user's choices per event type; a type without a row takes the default of its kind.
create table notification_preferences (
    user_id uuid not null constraint notification_preferences_user_fkey references users (id) on delete cascade,
    event_type text not null,
    email boolean not null,
    in_app boolean not null,
    primary key (user_id, event_type)
);

-- The emails owed: one per (user, event), sent by a `notify` job.
create table notification_emails (
    user_id uuid not null constraint notification_emails_user_fkey references users (id) on delete cascade,
    event_id uuid not null constraint notification_emails_event_fkey references events (id) on delete cascade,
    -- The `notify` job sending it (set in the transaction that records the row).
    job_id uuid,
    created_at timestamptz not null default now(),
    primary key (user_id, event_id)
);

-- An address the mail server refused for good: no more mail is sent to it until it changes.
alter table users add column email_bounced_at timestamptz;

create function reset_email_bounce() returns trigger language plpgsql as $$
begin
    if new.email is distinct from old.email then
        new.email_bounced_at := null;
    end if;
    return new;
end $$;
create trigger users_reset_email_bounce before update of email on users
    for each row execute function reset_email_bounce();
