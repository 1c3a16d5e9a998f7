-- Backup storage, metered in GiB-hours (DESIGN §10): a price per GiB of an instance's backup
-- archives and hour, in each price version (0 until an operator prices it), and one row per
-- (instance, hour) of the archives' size Proxmox reported when the hour was metered, unique like
-- the compute rows. Backup storage is not under the instance's monthly cap.
alter table plan_prices add column backup_gib_hour numeric(20, 10) not null default 0,
    add constraint plan_prices_backup_gib_hour_check check (backup_gib_hour >= 0);

create table backup_usage_records (
    instance_id uuid not null,
    hour timestamptz not null,
    tenant_id uuid not null constraint backup_usage_records_tenant_fkey references tenants (id) on delete cascade,
    price_id uuid not null constraint backup_usage_records_price_fkey references plan_prices (id),
    archives integer not null,
    bytes bigint not null,
    amount numeric(20, 10) not null,
    currency char(3) not null,
    metered_at timestamptz not null default now(),
    constraint backup_usage_records_pkey primary key (instance_id, hour),
    constraint backup_usage_records_instance_fkey foreign key (instance_id) references instances (id) on delete cascade,
    constraint backup_usage_records_hour_check check (date_trunc('hour', hour, 'UTC') = hour),
    constraint backup_usage_records_bytes_check check (bytes > 0 and archives > 0)
);
create index backup_usage_records_tenant_hour_idx on backup_usage_records (tenant_id, hour);
