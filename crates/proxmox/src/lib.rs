//! `nimbus-proxmox`: a typed client for the Proxmox VE API (the reseller subset Nimbus
//! uses), written against PVE 8.4's schema and its documented quirks.
//!
//! ```no_run
//! # async fn demo() -> nimbus_proxmox::Result<()> {
//! use std::time::Duration;
//! use nimbus_proxmox::{ApiToken, ClientConfig, ProxmoxClient, TlsMode};
//!
//! let token = ApiToken::parse("root@pam!nimbus=00000000-0000-0000-0000-000000000000")?;
//! let tls = TlsMode::Fingerprint("AB:CD:...".into());
//! let client = ProxmoxClient::new(ClientConfig::new("https://pve1:8006", token, tls))?;
//! let upid = client.node("pve1").qemu(100).start().await?;
//! client.wait_task(&upid, Duration::from_secs(120)).await?;
//! # Ok(()) }
//! ```
//!
//! * [`ProxmoxClient`] (cheap to clone) holds the connection pool, token and TLS mode;
//!   [`TlsMode`] pins a certificate fingerprint, trusts a CA, or (loudly) anything.
//!   The URL must be `https://` unless [`ClientConfig::allow_http`] says otherwise (labs).
//! * Calls are grouped in [`api`]: cluster, node, guest (qemu and lxc share
//!   [`api::guest::Guest`]), storage, pools and consoles. Anything not modelled goes
//!   through [`ProxmoxClient::get_json`] and friends.
//! * Errors are [`PveError`], classified [`ErrorClass::Transient`] or
//!   [`ErrorClass::Permanent`] for the workers' retry policy. A 404 that PVE did not
//!   write is [`PveError::NotProxmox`] (misconfiguration), never "not found".
//! * Tasks: [`Upid`], [`ProxmoxClient::wait_task`].
//! * Pacing: an optional [`RequestGate`] ([`ClientConfig::request_gate`]) that every
//!   request, each task poll included, awaits before it is sent ([`gate`]).
//! * Encodings: [`params`] (form bodies, `sshkeys`), [`propstring`] (disk, NIC and IP
//!   config strings), [`de`] (tolerant decoding of PVE's loose JSON).

#[macro_use]
pub mod api;
pub mod client;
pub mod config;
pub mod de;
pub mod env;
pub mod error;
pub mod gate;
pub mod observe;
pub mod params;
pub mod propstring;
pub mod task;
pub mod tls;
pub mod upid;

pub use api::cluster::{ClusterResource, NodeListEntry, ResourceType, VersionInfo};
pub use api::console::{ConsoleStream, TermProxyTicket, VncProxyOptions, VncTicket};
pub use api::guest::{
    ConfigUpdate, DeleteOptions, FirewallRule, FirewallRuleCreate, Guest, GuestKind, GuestStatus, Lxc, Qemu,
    ShutdownOptions, Snapshot, SnapshotCreate,
};
pub use api::lxc::{LxcClone, LxcConfig, LxcConfigUpdate, LxcCreate, LxcInterface, LxcOptions};
pub use api::node::{NodeApi, NodeStatus, VzdumpParams};
pub use api::pools::{Pool, PoolDetails, PoolMember, PoolQuery, PoolUpdate};
pub use api::qemu::{AgentInterface, AgentIpAddress, QemuClone, QemuConfig, QemuConfigUpdate, QemuCreate, QemuOptions};
pub use api::rrd::{Cf, RrdPoint, Timeframe};
pub use api::storage::{
    Checksum, ContentQuery, DownloadUrl, PruneMark, PruneQuery, StorageApi, StorageContent, StorageListQuery,
    StorageStatus, UploadContent, VolumeUpdate,
};
pub use client::{ProxmoxClient, path_segment};
pub use config::{ApiToken, ClientConfig, PollBackoff, TlsMode};
pub use env::{EnvError, PveEnv};
pub use error::{ErrorClass, PveError, Result};
pub use gate::RequestGate;
pub use observe::{CallObserver, ObservedCall, path_template};
pub use params::{Params, encode_sshkeys};
pub use propstring::{DiskSource, IpConfig, LxcNet, LxcVolume, QemuDisk, QemuNet};
pub use task::{Deadline, TaskListEntry, TaskListQuery, TaskLog, TaskLogLine, TaskOutcome, TaskStatus};
pub use upid::Upid;

/// `Guest<Qemu>`.
pub type QemuApi = Guest<Qemu>;
/// `Guest<Lxc>`.
pub type LxcApi = Guest<Lxc>;
