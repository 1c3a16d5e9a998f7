//! Typed calls for the reseller subset of the PVE API, grouped by resource.
//!
//! Entry points hang off [`crate::ProxmoxClient`]: cluster-wide calls directly
//! (`client.version()`, `client.cluster_resources(..)`, `client.pools(..)`), node calls
//! through `client.node("pve1")`, guest calls through `.qemu(100)` / `.lxc(200)` and
//! storage calls through `.storage("local")`.

/// Builder setters for `Option<T>` fields: `fn field(self, T) -> Self`, taking
/// `impl Into<String>` for strings (numbers stay concrete so that literals infer).
macro_rules! setters {
    () => {};
    ($(#[$doc:meta])* $field:ident : String; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $field(mut self, value: impl Into<String>) -> Self {
            self.$field = Some(value.into());
            self
        }
        setters!($($rest)*);
    };
    ($(#[$doc:meta])* $field:ident : $ty:ty; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $field(mut self, value: $ty) -> Self {
            self.$field = Some(value);
            self
        }
        setters!($($rest)*);
    };
}

pub mod cluster;
pub mod console;
pub mod guest;
pub mod lxc;
pub mod node;
pub mod pools;
pub mod qemu;
pub mod rrd;
pub mod storage;
