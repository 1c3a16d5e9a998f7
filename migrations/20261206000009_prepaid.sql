-- The first step of the prepaid ladder (DESIGN §10): a prepaid tenant whose balance is exhausted
-- (the sum of its ledger at or below zero) cannot create instances. Checked at the end of every
-- statement that inserts instances, for the prepaid tenants among them, as the quota is: the
-- statement fails with SQLSTATE NQ002 and a DETAIL of `{"balance"}`. Tenants not on prepaid are
-- invoiced and pay afterwards; for them this is one primary-key read.
alter table tenants add column prepaid boolean not null default false;

create function refuse_unpaid_creates() returns trigger
language plpgsql as $$
declare
    t uuid;
    left_over numeric;
begin
    for t in
        select distinct n.tenant_id from new_instances n join tenants x on x.id = n.tenant_id where x.prepaid
    loop
        select coalesce(sum(amount), 0) into left_over from balance_entries where tenant_id = t;
        if left_over <= 0 then
            raise exception 'payment required: the prepaid balance is %', left_over
                using errcode = 'NQ002', detail = json_build_object('balance', left_over::text)::text;
        end if;
    end loop;
    return null;
end;
$$;
create trigger instances_prepaid_check after insert on instances
    referencing new table as new_instances
    for each statement execute function refuse_unpaid_creates();
