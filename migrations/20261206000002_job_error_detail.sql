-- What operators need to diagnose a failed job, kept apart from what its tenant sees.
--
-- `error_code`, `error_message` and `error_retryable` are shown to the job's tenant, so the message
-- is written by Nimbus in plain words. Proxmox's own text (which can name storage hosts, addresses,
-- device paths, API paths and nodes), per-parameter errors and the failing request go to
-- `error_detail`, which only the operators' views (`/v1/admin/jobs`) read. It exists only beside
-- an error, so clearing the error clears it too.

alter table jobs add column error_detail text;

alter table jobs add constraint jobs_error_detail_check check (error_code is not null or error_detail is null);
