-- Billing (DESIGN §10): versioned prices, hourly usage, monthly invoices.

-- Prices per plan, versioned: a version applies from `valid_from` until the next one, and a usage
-- row names the version it was rated at, so a change never rewrites what was already rated.
-- `monthly_cap` bounds what one instance costs in a month (null: no cap).
create table plan_prices (
    id uuid primary key,
    plan_id uuid not null constraint plan_prices_plan_fkey references plans (id) on delete cascade,
    valid_from timestamptz not null,
    currency char(3) not null,
    vcpu_hour numeric(20, 10) not null default 0,
    memory_gib_hour numeric(20, 10) not null default 0,
    disk_gib_hour numeric(20, 10) not null default 0,
    monthly_cap numeric(20, 10),
    created_at timestamptz not null default now(),
    constraint plan_prices_plan_valid_from_key unique (plan_id, valid_from),
    constraint plan_prices_amounts_check check (
        vcpu_hour >= 0 and memory_gib_hour >= 0 and disk_gib_hour >= 0 and (monthly_cap is null or monthly_cap >= 0)
    ),
    constraint plan_prices_currency_check check (currency ~ '^[A-Z]{3}$')
);
-- A new plan's prices are its first version, valid since always.
create function plan_first_prices() returns trigger
language plpgsql as $$
begin
    insert into plan_prices (id, plan_id, valid_from, currency, vcpu_hour, memory_gib_hour, disk_gib_hour)
        values (gen_random_uuid(), new.id, '1970-01-01T00:00:00Z', new.currency, new.price_vcpu_hour, new.price_memory_gib_hour,
                new.price_disk_gib_hour);
    return new;
end;
$$;
create trigger plans_first_prices after insert on plans
    for each row execute function plan_first_prices();
-- Every plan's prices so far, valid since always (1970).
insert into plan_prices (id, plan_id, valid_from, currency, vcpu_hour, memory_gib_hour, disk_gib_hour)
    select gen_random_uuid(), id, '1970-01-01T00:00:00Z', currency, price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour
    from plans;

-- When an instance was deleted: billing runs until then.
alter table instances add column deleted_at timestamptz;
update instances set deleted_at = updated_at where status = 'deleted';
create function set_deleted_at() returns trigger
language plpgsql as $$
begin
    if new.status = 'deleted' and old.status <> 'deleted' then
        new.deleted_at = now();
    end if;
    return new;
end;
$$;
create trigger instances_deleted_at before update of status on instances
    for each row execute function set_deleted_at();

-- One row per instance and started hour (`hour` is the hour's start): the primary key makes a
-- re-run, a second replica or a catch-up insert nothing. The amount is rated at metering time
-- with the price version valid at the hour's start, at the instance's sizes then.
create table usage_records (
    instance_id uuid not null,
    hour timestamptz not null,
    tenant_id uuid not null constraint usage_records_tenant_fkey references tenants (id) on delete cascade,
    price_id uuid not null constraint usage_records_price_fkey references plan_prices (id),
    vcpus integer not null,
    memory_mib bigint not null,
    disk_gib bigint not null,
    amount numeric(20, 10) not null,
    currency char(3) not null,
    metered_at timestamptz not null default now(),
    constraint usage_records_pkey primary key (instance_id, hour),
    constraint usage_records_instance_fkey foreign key (instance_id) references instances (id) on delete cascade,
    constraint usage_records_hour_check check (date_trunc('hour', hour, 'UTC') = hour),
    constraint usage_records_amount_check check (amount >= 0)
);
create index usage_records_tenant_hour_idx on usage_records (tenant_id, hour);
-- The hours metered, each written with its rows: an invoice meters first the hours of its month
-- that no `meter` run has (yet) covered.
create table metered_hours (
    hour timestamptz primary key,
    records bigint not null,
    metered_at timestamptz not null default now()
);

-- Tax per tenant, shown on its invoices.
alter table tenants add column tax_rate numeric(7, 4) not null default 0;
alter table tenants add column tax_reverse_charge boolean not null default false;
alter table tenants add column tax_id text;
alter table tenants add constraint tenants_tax_rate_check check (tax_rate >= 0 and tax_rate < 1);

-- Invoice numbers, gapless per year: the counter row is locked by the transaction that issues
-- an invoice, so a rolled-back issue gives its number back and two runs take turns.
create table invoice_numbers (
    year integer primary key,
    last integer not null
);

-- Issued invoices and their lines: immutable (the triggers below refuse UPDATE, DELETE and
-- TRUNCATE to every role, the owner's ordinary statements included). Corrections are credit
-- notes, which reference the invoice they correct.
create table invoices (
    id uuid primary key,
    tenant_id uuid not null constraint invoices_tenant_fkey references tenants (id),
    number text not null,
    kind text not null default 'invoice',
    corrects uuid constraint invoices_corrects_fkey references invoices (id),
    period_start timestamptz not null,
    period_end timestamptz not null,
    currency char(3) not null,
    subtotal numeric(20, 4) not null,
    tax_rate numeric(7, 4) not null,
    tax_reverse_charge boolean not null,
    tax_id text,
    tax numeric(20, 4) not null,
    total numeric(20, 4) not null,
    issued_at timestamptz not null default now(),
    constraint invoices_number_key unique (number),
    constraint invoices_kind_check check (kind in ('invoice', 'credit_note')),
    constraint invoices_corrects_check check ((kind = 'credit_note') = (corrects is not null)),
    constraint invoices_total_check check (total = subtotal + tax)
);
-- One invoice per tenant and period (credit notes aside).
create unique index invoices_tenant_period_key on invoices (tenant_id, period_start) where kind = 'invoice';

create table invoice_lines (
    invoice_id uuid not null constraint invoice_lines_invoice_fkey references invoices (id),
    position integer not null,
    instance_id uuid,
    description text not null,
    hours integer not null,
    uncapped numeric(20, 10) not null,
    amount numeric(20, 4) not null,
    constraint invoice_lines_pkey primary key (invoice_id, position)
);

create function refuse_issued_change() returns trigger
language plpgsql as $$
begin
    raise exception '% is append-only: % refused (correct an invoice with a credit note)', tg_table_name, tg_op
        using errcode = 'integrity_constraint_violation';
end;
$$;
create trigger invoices_immutable before update or delete on invoices
    for each row execute function refuse_issued_change();
create trigger invoices_no_truncate before truncate on invoices
    for each statement execute function refuse_issued_change();
create trigger invoice_lines_immutable before update or delete on invoice_lines
    for each row execute function refuse_issued_change();
create trigger invoice_lines_no_truncate before truncate on invoice_lines
    for each statement execute function refuse_issued_change();

-- Prepaid credit: a ledger per tenant whose sum is the balance (never a stored number). Credits
-- are positive (top-ups, credit notes, adjustments up), debits negative (issued invoices,
-- adjustments down). Append-only, like the invoices.
create table balance_entries (
    id bigint generated always as identity primary key,
    tenant_id uuid not null constraint balance_entries_tenant_fkey references tenants (id),
    kind text not null,
    amount numeric(20, 4) not null,
    currency char(3) not null,
    invoice_id uuid constraint balance_entries_invoice_fkey references invoices (id),
    reason text,
    created_by uuid,
    created_at timestamptz not null default now(),
    constraint balance_entries_kind_check check (kind in ('top_up', 'invoice', 'credit_note', 'adjustment')),
    constraint balance_entries_invoice_check check ((kind in ('invoice', 'credit_note')) = (invoice_id is not null)),
    constraint balance_entries_reason_check check (kind <> 'adjustment' or length(trim(coalesce(reason, ''))) > 0),
    constraint balance_entries_top_up_check check (kind <> 'top_up' or amount > 0)
);
create index balance_entries_tenant_idx on balance_entries (tenant_id, id);
create trigger balance_entries_immutable before update or delete on balance_entries
    for each row execute function refuse_issued_change();
create trigger balance_entries_no_truncate before truncate on balance_entries
    for each statement execute function refuse_issued_change();
