-- Webhook deliveries are written once their first attempt is over: until then the
-- events stream holds the event, unacknowledged. So a delivery that succeeds at once costs one row
-- written once, with its attempt in it, instead of a row written twice and a second table's row.
--
-- * `attempt_log`: every attempt, oldest first, kept in the delivery's row (`attempts` still counts
--   the attempts of the current schedule, which a replay restarts; the log keeps them all).
-- * `id` is derived from (endpoint, event) (`webhook_delivery_id`), so every writer makes the same
--   id for the same pair: the primary key keeps one delivery per pair, and the unique constraint
--   that did is dropped. Existing deliveries get their derived id.
-- * `payload` is the body as signed and sent, kept as that text: written and read back without
--   parsing (the API parses it to show it).
-- * The delivery no longer references its event (its payload is the body as sent, whole) nor, by a
--   foreign key, its endpoint: a key checked per row cost a settled batch more than its rows did.
--   Writers lock the endpoints of a batch instead (`for key share`, once per batch, as the key
--   would per row) and write only deliveries of endpoints that exist, of their tenant; deleting an
--   endpoint (or its tenant) deletes its deliveries by the trigger below.

alter table webhook_deliveries add column attempt_log jsonb not null default '[]'
    constraint webhook_deliveries_attempt_log_check check (jsonb_typeof(attempt_log) = 'array');

update webhook_deliveries d set attempt_log = a.log
from (
    select delivery_id, jsonb_agg(jsonb_build_object(
        'at', attempted_at, 'statusCode', status_code, 'error', error, 'latencyMs', latency_ms,
        'body', response_body, 'succeeded', succeeded) order by id) as log
    from webhook_attempts group by delivery_id
) a
where a.delivery_id = d.id;

drop table webhook_attempts;

create function webhook_delivery_id(endpoint uuid, event uuid) returns uuid
language sql immutable parallel safe return md5(endpoint::text || event::text)::uuid;

alter table webhook_deliveries
    drop constraint webhook_deliveries_event_fkey,
    drop constraint webhook_deliveries_endpoint_fkey,
    drop constraint webhook_deliveries_endpoint_event_key,
    drop constraint webhook_deliveries_pkey,
    drop column id,
    add column id uuid not null generated always as (webhook_delivery_id(endpoint_id, event_id)) stored,
    add constraint webhook_deliveries_pkey primary key (id),
    alter column payload type text using payload::text;

create function delete_endpoint_deliveries() returns trigger language plpgsql as $$
begin
    delete from webhook_deliveries d using gone where d.endpoint_id = gone.id;
    return null;
end $$;

create trigger webhook_endpoints_delete_deliveries after delete on webhook_endpoints
    referencing old table as gone for each statement execute function delete_endpoint_deliveries();
