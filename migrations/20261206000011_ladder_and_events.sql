-- Domain events (DESIGN §11): what users care about, written in the transaction of the change that
-- caused it. `seq` orders them for relays and feeds; `relayed_at` marks those handed on.
create table events (
    id uuid primary key,
    seq bigint generated always as identity,
    type text not null,
    occurred_at timestamptz not null,
    tenant_id uuid constraint events_tenant_fkey references tenants (id),
    resource_type text,
    resource_id text,
    data jsonb not null default '{}',
    relayed_at timestamptz,
    constraint events_seq_key unique (seq),
    constraint events_type_check check (type ~ '^[a-z_]+(\.[a-z_]+)+$'),
    constraint events_resource_check check ((resource_type is null) = (resource_id is null))
);
create index events_tenant_idx on events (tenant_id, seq);
create index events_unrelayed_idx on events (seq) where relayed_at is null;

-- The prepaid ladder (DESIGN §10), each step configurable per tenant and its state recorded:
-- `ok` → `low` (the available balance below `low_balance_threshold`) → `exhausted` (at or below
-- zero: creates refused) → `suspended` (exhausted for `grace_period_hours`: instances stopped, the
-- API read-only but for billing). `suspension_reason` set is an operator's hold, lifted only by
-- an operator. `billing_state_since` is when the tenant entered its state.
alter table tenants
    add column low_balance_threshold numeric(20, 4) not null default 0,
    add column grace_period_hours integer not null default 72,
    add column billing_state text not null default 'ok',
    add column billing_state_since timestamptz not null default now(),
    add column suspension_reason text,
    add constraint tenants_low_balance_threshold_check check (low_balance_threshold >= 0),
    add constraint tenants_grace_period_hours_check check (grace_period_hours between 0 and 8760),
    add constraint tenants_billing_state_check check (billing_state in ('ok', 'low', 'exhausted', 'suspended')),
    add constraint tenants_suspension_reason_check check (suspension_reason is null or billing_state = 'suspended');

-- The instances a suspension stopped (or must still stop): they are started again when it is lifted.
create table suspended_instances (
    instance_id uuid primary key constraint suspended_instances_instance_fkey references instances (id) on delete cascade,
    tenant_id uuid not null constraint suspended_instances_tenant_fkey references tenants (id),
    recorded_at timestamptz not null,
    stop_job uuid
);
create index suspended_instances_tenant_idx on suspended_instances (tenant_id);

-- Creates of a prepaid tenant are refused once its ladder reached `exhausted` (the available
-- balance, usage not yet invoiced included, at or below zero) or its ledger alone is.
create or replace function refuse_unpaid_creates() returns trigger
language plpgsql as $$
declare
    t uuid;
    state text;
    left_over numeric;
begin
    for t, state in
        select distinct n.tenant_id, x.billing_state from new_instances n join tenants x on x.id = n.tenant_id
        where x.prepaid or x.billing_state = 'suspended'
    loop
        select coalesce(sum(amount), 0) into left_over from balance_entries where tenant_id = t;
        if state in ('exhausted', 'suspended') or left_over <= 0 then
            raise exception 'payment required: the prepaid balance is exhausted (%)', state
                using errcode = 'NQ002', detail = json_build_object('balance', left_over::text, 'state', state)::text;
        end if;
    end loop;
    return null;
end;
$$;
