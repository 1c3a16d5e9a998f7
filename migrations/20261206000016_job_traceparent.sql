-- The W3C trace context (`traceparent`) of the request that made a job: the worker continues that
-- trace, so one trace runs from the API's request to the job's Proxmox calls. Null when the API
-- exports no traces.
alter table jobs add column traceparent text
    constraint jobs_traceparent_check check (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
