-- Live state: the workers' reconciler records what Proxmox reports for each instance's guest.
-- `missing`: the guest is gone from Proxmox although no operation of ours removed it (deleted
-- behind Nimbus's back, or its node is out of the cluster); it still holds its quota until the
-- instance is deleted. `observed_at` is when Proxmox last reported the guest; `guest_started_at`
-- when the running guest last started, from the uptime Proxmox reports (null when not running).

alter table instances drop constraint instances_status_check;
alter table instances add constraint instances_status_check check (
    status in ('provisioning', 'running', 'stopped', 'missing', 'failed', 'deleting', 'deleted')
);

alter table instances add column observed_at timestamptz;
alter table instances add column guest_started_at timestamptz;
