-- Per-tenant quota counters, so the quota check of a create reads one row instead of summing
-- every instance of the tenant. `tenant_usage` holds what the instances that hold quota add up
-- to (status not 'failed' or 'deleted', as `InstanceStatus::holds_quota`); triggers on
-- `instances` keep it exact in the same transaction as every insert, update and delete, so no
-- caller has to remember it. A create locks the tenant's row `FOR UPDATE`, checks the plan's
-- limits against it and inserts: concurrent creates of one tenant still take turns, but each
-- turn is O(1).

create table tenant_usage (
    tenant_id uuid primary key constraint tenant_usage_tenant_fkey
        references tenants (id) on delete cascade,
    instances bigint not null default 0,
    vcpus bigint not null default 0,
    memory_mib bigint not null default 0,
    disk_gib bigint not null default 0,
    constraint tenant_usage_nonnegative_check check (
        instances >= 0 and vcpus >= 0 and memory_mib >= 0 and disk_gib >= 0
    )
);

-- Every tenant has its row from the start.
create function tenant_usage_init() returns trigger
language plpgsql as $$
begin
    insert into tenant_usage (tenant_id) values (new.id) on conflict (tenant_id) do nothing;
    return null;
end;
$$;
create trigger tenants_usage_init after insert on tenants
    for each row execute function tenant_usage_init();

-- Adds (sign 1) or removes (sign -1) one instance's size from its tenant's counters. Removing
-- only updates: when the tenant itself is being deleted its row may already be gone.
create function tenant_usage_apply(tenant uuid, sign integer, cores integer, memory bigint, disk bigint)
returns void
language plpgsql as $$
begin
    if sign < 0 then
        update tenant_usage set
            instances = instances - 1,
            vcpus = vcpus - cores,
            memory_mib = memory_mib - memory,
            disk_gib = disk_gib - disk
        where tenant_id = tenant;
    else
        insert into tenant_usage as u (tenant_id, instances, vcpus, memory_mib, disk_gib)
        values (tenant, 1, cores, memory, disk)
        on conflict (tenant_id) do update set
            instances = u.instances + 1,
            vcpus = u.vcpus + excluded.vcpus,
            memory_mib = u.memory_mib + excluded.memory_mib,
            disk_gib = u.disk_gib + excluded.disk_gib;
    end if;
end;
$$;

create function instances_usage() returns trigger
language plpgsql as $$
declare
    old_holds boolean := tg_op in ('UPDATE', 'DELETE') and old.status not in ('failed', 'deleted');
    new_holds boolean := tg_op in ('INSERT', 'UPDATE') and new.status not in ('failed', 'deleted');
begin
    if tg_op = 'UPDATE' and old_holds = new_holds and (not old_holds or (
        old.tenant_id = new.tenant_id and old.cores = new.cores
        and old.memory_mib = new.memory_mib and old.disk_gib = new.disk_gib
    )) then
        return null;
    end if;
    if old_holds then
        perform tenant_usage_apply(old.tenant_id, -1, old.cores, old.memory_mib, old.disk_gib);
    end if;
    if new_holds then
        perform tenant_usage_apply(new.tenant_id, 1, new.cores, new.memory_mib, new.disk_gib);
    end if;
    return null;
end;
$$;
create trigger instances_usage_insert after insert on instances
    for each row execute function instances_usage();
create trigger instances_usage_update after update of status, tenant_id, cores, memory_mib, disk_gib
    on instances for each row execute function instances_usage();
create trigger instances_usage_delete after delete on instances
    for each row execute function instances_usage();

-- Backfill.
insert into tenant_usage (tenant_id, instances, vcpus, memory_mib, disk_gib)
select t.id, count(i.id), coalesce(sum(i.cores), 0), coalesce(sum(i.memory_mib), 0),
       coalesce(sum(i.disk_gib), 0)
from tenants t
left join instances i on i.tenant_id = t.id and i.status not in ('failed', 'deleted')
group by t.id;
