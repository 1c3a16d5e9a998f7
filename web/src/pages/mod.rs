//! One module per page.

pub mod admin_billing;
pub mod admin_nodes;
pub mod admin_queues;
pub mod admin_schedules;
pub mod admin_vms;
pub mod admin_webhooks;
pub mod billing;
pub mod create;
pub mod dashboard;
pub mod instance;
pub mod instance_backup_policy;
pub mod instance_backups;
pub mod instance_console;
pub mod instance_manage;
pub mod instance_snapshots;
pub mod instances;
pub mod job;
pub mod keys;
pub mod notifications;
pub mod signin;
pub mod webhook;
pub mod webhook_deliveries;
pub mod webhooks;
