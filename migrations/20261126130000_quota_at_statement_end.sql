-- The plan's limits are checked where the counters grow for new instances: in
-- `tenant_usage_add`, which the insert trigger on `instances` runs at the end of every statement
-- that inserts some. (An existing instance taking its share again, `failed` back to
-- `provisioning`, is not refused here: whoever revives it checks first, under the same lock.) The counters' row is locked by that update
-- and stays locked until commit, so the check is as safe under concurrency as before; but a
-- create now takes the lock after its inserts instead of before them, and in autocommit it holds
-- the lock for the commit alone. Concurrent creates of one tenant take turns for microseconds.
--
-- Over a limit the statement fails with SQLSTATE NQ001 and a DETAIL of
-- `{"resource", "limit", "used", "requested"}` (QuotaExceeded in nimbus-domain), checked in the
-- same order as `PlanLimits::check`: instances, vCPUs, memory, disk. The plan is read after the
-- counters are locked, so a plan change committed meanwhile (it locks the same row) is seen.

create function tenant_quota_exceeded(resource text, lim bigint, used bigint, requested bigint)
returns void
language plpgsql as $$
begin
    raise exception 'quota exceeded: % (limit %, used %, requested %)', resource, lim, used, requested
        using errcode = 'NQ001',
              detail = json_build_object(
                  'resource', resource, 'limit', lim, 'used', used, 'requested', requested
              )::text;
end;
$$;

-- Adds `n` instances of the given total size to `tenant`'s counters and, if `checked`, refuses
-- them over the plan's limits.
create function tenant_usage_add(
    tenant uuid, n bigint, cores bigint, memory bigint, disk bigint, checked boolean
)
returns void
language plpgsql as $$
declare
    u tenant_usage%rowtype;
    l record;
begin
    update tenant_usage set
        instances = instances + n,
        vcpus = vcpus + cores,
        memory_mib = memory_mib + memory,
        disk_gib = disk_gib + disk
    where tenant_id = tenant
    returning * into u;
    if not found then
        insert into tenant_usage as t (tenant_id, instances, vcpus, memory_mib, disk_gib)
        values (tenant, n, cores, memory, disk)
        on conflict (tenant_id) do update set
            instances = t.instances + excluded.instances,
            vcpus = t.vcpus + excluded.vcpus,
            memory_mib = t.memory_mib + excluded.memory_mib,
            disk_gib = t.disk_gib + excluded.disk_gib
        returning * into u;
    end if;
    if not checked then
        return;
    end if;
    select p.max_instances, p.max_vcpus, p.max_memory_mib, p.max_disk_gib into l
    from tenants t join plans p on p.id = t.plan_id
    where t.id = tenant;
    if not found then
        -- The tenant is gone (or going): its foreign keys refuse the row, not the quota.
        return;
    end if;
    if u.instances > l.max_instances then
        perform tenant_quota_exceeded('instances', l.max_instances, u.instances - n, n);
    elsif u.vcpus > l.max_vcpus then
        perform tenant_quota_exceeded('vcpus', l.max_vcpus, u.vcpus - cores, cores);
    elsif u.memory_mib > l.max_memory_mib then
        perform tenant_quota_exceeded('memoryMib', l.max_memory_mib, u.memory_mib - memory, memory);
    elsif u.disk_gib > l.max_disk_gib then
        perform tenant_quota_exceeded('diskGib', l.max_disk_gib, u.disk_gib - disk, disk);
    end if;
end;
$$;

-- Updates and deletes still go row by row.
create or replace function tenant_usage_apply(tenant uuid, sign integer, cores integer, memory bigint, disk bigint)
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
        perform tenant_usage_add(tenant, 1, cores, memory, disk, false);
    end if;
end;
$$;

-- Inserts count once per statement and tenant: a statement inserting many instances (the API
-- accepts concurrent creates together) updates each tenant's counters once, in tenant order, so
-- two such statements never wait on each other in opposite orders.
create function instances_usage_inserted() returns trigger
language plpgsql as $$
declare
    t record;
begin
    for t in
        select tenant_id, count(*) as n, sum(cores)::bigint as cores, sum(memory_mib)::bigint as memory,
               sum(disk_gib)::bigint as disk
        from inserted_instances
        where status not in ('failed', 'deleted')
        group by tenant_id
        order by tenant_id
    loop
        perform tenant_usage_add(t.tenant_id, t.n, t.cores, t.memory, t.disk, true);
    end loop;
    return null;
end;
$$;
drop trigger instances_usage_insert on instances;
create trigger instances_usage_insert after insert on instances
    referencing new table as inserted_instances
    for each statement execute function instances_usage_inserted();

-- `(tenant_id, id)` was kept unique for composite foreign keys from tenant-owned children; no
-- table references it (VMID reservations reference the id alone), and every create paid for it.
alter table instances drop constraint instances_tenant_id_key;
