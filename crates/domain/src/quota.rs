//! Plan limits and prices, and the pure quota rule: a request fits when what the tenant uses
//! plus what it asks for stays within every limit. The database applies the same rule under a
//! row lock (nimbus-db `instances::create_with_job`), so concurrent requests cannot overshoot.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Money;

/// What a plan allows a tenant to hold at once. Every limit is ≥ 0 (the database checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlanLimits {
    /// Instances that are not failed or deleted.
    pub max_instances: i32,
    /// Sum of cores.
    pub max_vcpus: i32,
    /// Sum of memory, MiB.
    pub max_memory_mib: i64,
    /// Sum of disk, GiB.
    pub max_disk_gib: i64,
}

/// Hourly prices of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlanPrices {
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    /// Per vCPU per hour.
    pub vcpu_hour: Money,
    /// Per GiB of RAM per hour.
    pub memory_gib_hour: Money,
    /// Per GiB of disk per hour.
    pub disk_gib_hour: Money,
}

impl PlanPrices {
    /// A plan that charges nothing, in `currency` (the bootstrap plan, tests, benchmarks).
    pub fn free(currency: &str) -> Self {
        PlanPrices {
            currency: currency.to_owned(),
            vcpu_hour: Money::ZERO,
            memory_gib_hour: Money::ZERO,
            disk_gib_hour: Money::ZERO,
        }
    }

    /// The hourly price of an instance of this size (memory in MiB is charged pro rata per GiB).
    pub fn hourly(&self, cores: i32, memory_mib: i64, disk_gib: i64) -> Money {
        let memory_gib = Decimal::from(memory_mib) / Decimal::from(1024);
        self.vcpu_hour * Decimal::from(cores)
            + self.memory_gib_hour * memory_gib
            + self.disk_gib_hour * Decimal::from(disk_gib)
    }
}

/// What a tenant holds now (instances that hold quota, see `InstanceStatus::holds_quota`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourceUsage {
    /// Instance count.
    pub instances: i64,
    /// Sum of cores.
    pub vcpus: i64,
    /// Sum of memory, MiB.
    pub memory_mib: i64,
    /// Sum of disk, GiB.
    pub disk_gib: i64,
}

/// The size of one new instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequest {
    /// Cores.
    pub vcpus: i64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Disk, GiB.
    pub disk_gib: i64,
}

/// The limited resources, named as in error details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum QuotaResource {
    /// Instance count.
    Instances,
    /// Cores.
    Vcpus,
    /// Memory, MiB.
    MemoryMib,
    /// Disk, GiB.
    DiskGib,
}

/// The first limit a request would break; the `details` of a `QUOTA_EXCEEDED` error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[error("quota exceeded for {resource:?}: limit {limit}, used {used}, requested {requested}")]
pub struct QuotaExceeded {
    /// Which limit.
    pub resource: QuotaResource,
    /// The plan's limit.
    pub limit: i64,
    /// What the tenant holds.
    pub used: i64,
    /// What the request adds.
    pub requested: i64,
}

impl PlanLimits {
    /// Checks that `usage + request` fits every limit; reports the first one that does not.
    pub fn check(&self, usage: &ResourceUsage, request: &ResourceRequest) -> Result<(), QuotaExceeded> {
        let checks = [
            (QuotaResource::Instances, i64::from(self.max_instances), usage.instances, 1),
            (QuotaResource::Vcpus, i64::from(self.max_vcpus), usage.vcpus, request.vcpus),
            (QuotaResource::MemoryMib, self.max_memory_mib, usage.memory_mib, request.memory_mib),
            (QuotaResource::DiskGib, self.max_disk_gib, usage.disk_gib, request.disk_gib),
        ];
        for (resource, limit, used, requested) in checks {
            if used.saturating_add(requested) > limit {
                return Err(QuotaExceeded { resource, limit, used, requested });
            }
        }
        Ok(())
    }

    /// What is left of each limit (never negative, even if a plan was lowered below usage).
    pub fn remaining(&self, usage: &ResourceUsage) -> ResourceUsage {
        ResourceUsage {
            instances: (i64::from(self.max_instances) - usage.instances).max(0),
            vcpus: (i64::from(self.max_vcpus) - usage.vcpus).max(0),
            memory_mib: (self.max_memory_mib - usage.memory_mib).max(0),
            disk_gib: (self.max_disk_gib - usage.disk_gib).max(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const LIMITS: PlanLimits = PlanLimits { max_instances: 2, max_vcpus: 4, max_memory_mib: 4096, max_disk_gib: 100 };

    #[test]
    fn a_request_that_fits_passes_and_the_first_broken_limit_is_reported() {
        let usage = ResourceUsage { instances: 1, vcpus: 2, memory_mib: 2048, disk_gib: 50 };
        let fits = ResourceRequest { vcpus: 2, memory_mib: 2048, disk_gib: 50 };
        assert_eq!(LIMITS.check(&usage, &fits), Ok(()));

        let too_big = ResourceRequest { vcpus: 3, memory_mib: 1024, disk_gib: 10 };
        let err = LIMITS.check(&usage, &too_big).unwrap_err();
        assert_eq!(err, QuotaExceeded { resource: QuotaResource::Vcpus, limit: 4, used: 2, requested: 3 });

        let full = ResourceUsage { instances: 2, ..usage };
        let err = LIMITS.check(&full, &ResourceRequest { vcpus: 1, memory_mib: 1, disk_gib: 1 }).unwrap_err();
        assert_eq!(err.resource, QuotaResource::Instances);
        assert_eq!(
            serde_json::to_value(err).unwrap(),
            serde_json::json!({"resource": "instances", "limit": 2, "used": 2, "requested": 1})
        );
    }

    #[test]
    fn remaining_never_goes_negative() {
        let over = ResourceUsage { instances: 3, vcpus: 1, memory_mib: 5000, disk_gib: 0 };
        assert_eq!(LIMITS.remaining(&over), ResourceUsage { instances: 0, vcpus: 3, memory_mib: 0, disk_gib: 100 });
    }

    #[test]
    fn hourly_price_is_exact() {
        let prices = PlanPrices {
            currency: "EUR".into(),
            vcpu_hour: Money(Decimal::from_str("0.004").unwrap()),
            memory_gib_hour: Money(Decimal::from_str("0.002").unwrap()),
            disk_gib_hour: Money(Decimal::from_str("0.0001").unwrap()),
        };
        // 2 × 0.004 + 1.5 × 0.002 + 20 × 0.0001 = 0.008 + 0.003 + 0.002
        assert_eq!(prices.hourly(2, 1536, 20), Money(Decimal::from_str("0.013").unwrap()));
    }
}
