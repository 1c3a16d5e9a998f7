-- Schedules (DESIGN §9): a cron expression (UTC) and the job it starts, for the system (metering,
-- invoicing) or a tenant (backups). Every worker replica ticks; a fire is a row of
-- `schedule_fires`, unique per (schedule, fire time) and written in the transaction that starts
-- its job, so however many replicas tick, each fire starts one job.

create table schedules (
    id uuid primary key,
    -- Null for the system's own schedules.
    tenant_id uuid constraint schedules_tenant_fkey references tenants (id) on delete cascade,
    name text not null,
    cron text not null,
    job_kind text not null,
    queue text not null,
    payload jsonb not null default '{}',
    resources jsonb not null default '[]',
    missed_fire_policy text not null,
    next_fire_at timestamptz not null,
    paused boolean not null default false,
    last_fire_at timestamptz,
    -- Informational, without a foreign key: a tick updates it on every fire, and the index a
    -- foreign key's `on delete` needs would be one more to write each time.
    last_job_id uuid,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint schedules_name_check check (length(name) between 1 and 200),
    constraint schedules_cron_check check (length(cron) between 1 and 200),
    constraint schedules_kind_check check (job_kind ~ '^[a-z][a-z0-9_]*$'),
    constraint schedules_queue_check check (length(queue) between 1 and 100),
    constraint schedules_policy_check check (missed_fire_policy in ('catch_up_all', 'latest_only', 'skip'))
);
-- What a tick reads: the due, unpaused schedules, oldest first, each batch after the last one's
-- position (so it does not walk again over the index entries of the rows it just advanced).
create index schedules_due_idx on schedules (next_fire_at, id) where not paused;
create index schedules_tenant_idx on schedules (tenant_id);

create table schedule_fires (
    schedule_id uuid not null constraint schedule_fires_schedule_fkey references schedules (id) on delete cascade,
    fire_at timestamptz not null,
    -- The job it started (written by the same statement as the fire); null when none could start
    -- (`skipped` says why). No foreign key: jobs are the ledger's to keep or remove, and the index
    -- its `on delete` would need is one more write per fire.
    job_id uuid,
    skipped text,
    fired_at timestamptz not null default now(),
    constraint schedule_fires_pkey primary key (schedule_id, fire_at)
);
