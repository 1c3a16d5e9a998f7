//! The error type of every repository: constraint violations by name, the domain refusals the
//! database decides (quota, leases, job states), and infrastructure failures.

use nimbus_domain::{ErrorCode, JobId, JobStatus, QuotaExceeded};

/// A repository error.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No such row (in the caller's tenant).
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the row, e.g. `instances_tenant_name_key`.
    #[error("conflict on {constraint}")]
    Conflict {
        /// The violated constraint or unique index.
        constraint: String,
    },
    /// A CHECK constraint refused the row, e.g. `instances_sizes_check`.
    #[error("check {constraint} failed")]
    Check {
        /// The violated constraint.
        constraint: String,
    },
    /// A foreign key refused the row (the referenced row does not exist).
    #[error("foreign key {constraint} violated")]
    ForeignKey {
        /// The violated constraint.
        constraint: String,
    },
    /// The plan's limits would be exceeded.
    #[error(transparent)]
    QuotaExceeded(#[from] QuotaExceeded),
    /// A prepaid tenant's balance is exhausted: no new instances.
    #[error("payment required: the prepaid balance is {balance} ({state})")]
    PaymentRequired {
        /// The ledger's balance, as the database wrote it.
        balance: String,
        /// The tenant's step on the ladder (`exhausted`, `suspended`, or `ok` when the ledger
        /// alone is used up).
        state: String,
    },
    /// The worker no longer holds the job's lease (it expired and the job moved on).
    #[error("job {0} is not running under this worker's lease")]
    LeaseLost(JobId),
    /// The job is not in a state that allows the operation.
    #[error("job {job} is {status}")]
    InvalidJobState {
        /// The job.
        job: JobId,
        /// Its status.
        status: JobStatus,
    },
    /// Another operation is queued or running on the instance (the job holding it).
    #[error("instance busy with job {}", .0.id)]
    InstanceBusy(Box<crate::jobs::Job>),
    /// The instance's status does not allow the operation.
    #[error("instance {instance} is {status}")]
    InvalidInstanceState {
        /// The instance.
        instance: nimbus_domain::InstanceId,
        /// Its status.
        status: nimbus_domain::InstanceStatus,
    },
    /// Anything else from the driver (connection, pool, protocol, decoding).
    #[error(transparent)]
    Sqlx(sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::RowNotFound = e {
            return DbError::NotFound;
        }
        if let Some(db) = e.as_database_error() {
            let constraint = db.constraint().unwrap_or_default().to_owned();
            // SQLSTATE class 23: integrity constraint violations.
            match db.code().as_deref() {
                Some("23505") => return DbError::Conflict { constraint },
                Some("23514") => return DbError::Check { constraint },
                Some("23503") => return DbError::ForeignKey { constraint },
                Some(PAYMENT_REQUIRED_SQLSTATE) => {
                    let detail = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|e| e.detail());
                    let detail = detail.and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok());
                    let field = |name: &str| {
                        detail.as_ref().and_then(|v| v[name].as_str()).map(str::to_owned).unwrap_or_default()
                    };
                    return DbError::PaymentRequired { balance: field("balance"), state: field("state") };
                }
                Some(QUOTA_EXCEEDED_SQLSTATE) => {
                    if let Some(exceeded) = quota_exceeded(db) {
                        return DbError::QuotaExceeded(exceeded);
                    }
                }
                _ => {}
            }
        }
        DbError::Sqlx(e)
    }
}

impl DbError {
    /// The API error code this error answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DbError::NotFound => ErrorCode::NotFound,
            DbError::Conflict { constraint } if constraint == "instances_tenant_name_key" => ErrorCode::NameTaken,
            DbError::Conflict { .. } => ErrorCode::Conflict,
            DbError::Check { .. } => ErrorCode::ValidationFailed,
            DbError::ForeignKey { .. } => ErrorCode::NotFound,
            DbError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            DbError::PaymentRequired { .. } => ErrorCode::PaymentRequired,
            DbError::LeaseLost(_) => ErrorCode::Conflict,
            DbError::InvalidJobState { .. } => ErrorCode::InvalidJobState,
            DbError::InstanceBusy(_) => ErrorCode::InstanceBusy,
            DbError::InvalidInstanceState { .. } => ErrorCode::InvalidInstanceState,
            DbError::Sqlx(e) if is_unavailable(e) => ErrorCode::ServiceUnavailable,
            DbError::Sqlx(_) => ErrorCode::Internal,
        }
    }

    /// Whether the database could not be reached (the API answers 503, a worker retries).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Sqlx(e) if is_unavailable(e))
    }

    /// The violated constraint's name, for the constraint variants.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            DbError::Conflict { constraint } | DbError::Check { constraint } | DbError::ForeignKey { constraint } => {
                Some(constraint)
            }
            _ => None,
        }
    }
}

/// Raised by `tenant_usage_add` (through `tenant_quota_exceeded`) when new instances would take
/// their tenant over a plan limit.
const QUOTA_EXCEEDED_SQLSTATE: &str = "NQ001";

/// Raised by `refuse_unpaid_creates` when a prepaid tenant with no balance left creates.
const PAYMENT_REQUIRED_SQLSTATE: &str = "NQ002";

/// The `QuotaExceeded` carried as JSON in the error's DETAIL.
fn quota_exceeded(db: &dyn sqlx::error::DatabaseError) -> Option<QuotaExceeded> {
    let detail = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?.detail()?;
    serde_json::from_str(detail).ok()
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_))
        // 57P01 admin shutdown, 57P03 cannot connect now, class 08: connection exceptions.
        || e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P03")
}
