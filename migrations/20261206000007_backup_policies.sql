-- Backup policies (issue 12). A job waiting for something outside itself (a node's one backup
-- slot) is put back in the queue with the reason, which its handle shows while it is queued.
alter table jobs add column waiting_for text;

-- What a plan allows each instance: how many backups it may keep (made by Nimbus or on the
-- Proxmox side alike), and how often a schedule may take one.
alter table plans add column max_backups integer not null default 10;
alter table plans add column min_backup_interval_minutes integer not null default 60;
alter table plans add constraint plans_max_backups_check check (max_backups >= 0);
alter table plans add constraint plans_min_backup_interval_check check (min_backup_interval_minutes >= 0);

-- A customer's backup policy for one instance: the schedule that takes its backups and the
-- retention run after each (Proxmox's `prune-backups` keep options). The schedule row does the
-- firing; a policy is removed by deleting its schedule (the row goes with it).
create table backup_policies (
    instance_id uuid primary key constraint backup_policies_instance_fkey references instances (id) on delete cascade,
    tenant_id uuid not null constraint backup_policies_tenant_fkey references tenants (id) on delete cascade,
    schedule_id uuid not null unique constraint backup_policies_schedule_fkey references schedules (id) on delete cascade,
    keep_last integer not null default 0,
    keep_daily integer not null default 0,
    keep_weekly integer not null default 0,
    keep_monthly integer not null default 0,
    updated_at timestamptz not null default now(),
    constraint backup_policies_keep_check check (keep_last >= 0 and keep_daily >= 0 and keep_weekly >= 0 and keep_monthly >= 0)
);
create index backup_policies_tenant_idx on backup_policies (tenant_id);
