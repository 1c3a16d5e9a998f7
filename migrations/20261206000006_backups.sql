-- Backups (issue 12): each plan names the Proxmox storage its customers' backups go to (a storage
-- with `backup` content on every node, like PVE's `local`).
alter table plans add column backup_storage text not null default 'local';
alter table plans add constraint plans_backup_storage_check check (backup_storage ~ '^[a-zA-Z][a-zA-Z0-9_.-]*$');
