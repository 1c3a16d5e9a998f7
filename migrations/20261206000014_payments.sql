-- Top-ups paid through a payment provider (DESIGN §10): a payment is created when the customer
-- starts paying, carries the provider's reference (unique per provider) once the provider has it,
-- and is settled once: its ledger entry names it, and a second entry for the same payment is
-- refused, so a notification delivered twice credits once.
create table payments (
    id uuid primary key,
    tenant_id uuid not null constraint payments_tenant_fkey references tenants (id),
    provider text not null,
    reference text,
    amount numeric(20, 4) not null,
    currency char(3) not null,
    status text not null default 'pending',
    created_by uuid,
    created_at timestamptz not null default now(),
    settled_at timestamptz,
    constraint payments_provider_reference_key unique (provider, reference),
    constraint payments_amount_check check (amount > 0),
    constraint payments_status_check check (status in ('pending', 'succeeded', 'failed'))
);
create index payments_tenant_idx on payments (tenant_id, created_at desc);

alter table balance_entries add column payment_id uuid constraint balance_entries_payment_fkey references payments (id);
create unique index balance_entries_payment_key on balance_entries (payment_id) where payment_id is not null;
