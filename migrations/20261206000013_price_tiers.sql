-- Flat prices per size tier (DESIGN §10): a price version may list tiers, each an exact size
-- (vCPUs, memory, disk) with its own hourly price and monthly cap. An instance of a tier's size
-- is rated at the tier's price instead of per resource; any other size per resource.
create table plan_price_tiers (
    price_id uuid not null constraint plan_price_tiers_price_fkey references plan_prices (id) on delete cascade,
    name text not null,
    cores integer not null,
    memory_mib bigint not null,
    disk_gib bigint not null,
    hour_price numeric(20, 10) not null,
    monthly_cap numeric(20, 10),
    constraint plan_price_tiers_pkey primary key (price_id, cores, memory_mib, disk_gib),
    constraint plan_price_tiers_name_key unique (price_id, name),
    constraint plan_price_tiers_amounts_check check (hour_price >= 0 and (monthly_cap is null or monthly_cap >= 0)),
    constraint plan_price_tiers_size_check check (cores > 0 and memory_mib > 0 and disk_gib > 0),
    constraint plan_price_tiers_name_check check (length(name) between 1 and 40)
);

-- What each metered hour was rated as: the tier (null: per resource) and the monthly cap that
-- applies to it (the tier's, or the version's), so invoices cap by what was rated.
alter table usage_records add column tier text, add column monthly_cap numeric(20, 10);
update usage_records u set monthly_cap = p.monthly_cap from plan_prices p where p.id = u.price_id;
