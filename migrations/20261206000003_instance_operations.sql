-- Instance operations: one at a time per instance, enforced by the database.
--
-- A job acts on the instance named by its first resource (`{"type": "instance", "id"}`): the
-- provision job that creates it, and every action after (power, resize, rebuild, snapshots,
-- delete). `instance_id` is derived from that resource (when it holds a UUID, as the ids Nimbus
-- makes do), so no writer can forget it, and the partial unique index lets only one such job be
-- queued or running per instance: a second mutating request fails its insert with
-- `jobs_instance_busy_key` (409 `INSTANCE_BUSY`) instead of racing a check made a moment earlier.

alter table jobs add column instance_id uuid generated always as (
    case when resources -> 0 ->> 'type' = 'instance'
              and resources -> 0 ->> 'id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
         then (resources -> 0 ->> 'id')::uuid end
) stored;

create unique index jobs_instance_busy_key on jobs (instance_id)
    where status in ('queued', 'running') and instance_id is not null;

-- `GET /v1/jobs?instance=`: an instance's jobs, newest first.
create index jobs_instance_created_idx on jobs (instance_id, created_at desc, id desc)
    where instance_id is not null;

-- Snapshots a plan allows per instance (Proxmox keeps them on the guest's storage).
alter table plans add column max_snapshots_per_instance integer not null default 5
    constraint plans_max_snapshots_check check (max_snapshots_per_instance between 0 and 100);
