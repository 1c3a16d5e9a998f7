-- A delivery's latest attempt is kept in columns of its own, and `attempt_log` keeps the ones
-- before it. A delivery that succeeds at once is then written with no JSON built for it; a later
-- attempt moves the latest into the log as it takes its place.
--
-- `id` stays derived from (endpoint, event) (`webhook_delivery_id`), but every writer now supplies
-- it (the workers compute it themselves) instead of Postgres hashing each row it writes.
--
-- The body is no longer stored with each delivery: it is built from its event, which is immutable
-- and kept, whenever a delivery is sent or shown; ten endpoints no longer store ten copies.

alter table webhook_deliveries
    add column last_attempt_at timestamptz,
    add column last_status_code integer,
    add column last_error text,
    add column last_latency_ms integer,
    add column last_response_body text,
    add column last_succeeded boolean,
    add constraint webhook_deliveries_last_attempt_check check (
        (last_attempt_at is null) = (last_latency_ms is null)
        and (last_attempt_at is null) = (last_response_body is null)
        and (last_attempt_at is null) = (last_succeeded is null));

update webhook_deliveries set
    last_attempt_at = (attempt_log -> -1 ->> 'at')::timestamptz,
    last_status_code = (attempt_log -> -1 ->> 'statusCode')::integer,
    last_error = attempt_log -> -1 ->> 'error',
    last_latency_ms = (attempt_log -> -1 ->> 'latencyMs')::integer,
    last_response_body = coalesce(attempt_log -> -1 ->> 'body', ''),
    last_succeeded = (attempt_log -> -1 ->> 'succeeded')::boolean,
    attempt_log = attempt_log - -1
where jsonb_array_length(attempt_log) > 0;

alter table webhook_deliveries alter column id drop expression;

alter table webhook_deliveries drop column payload;
