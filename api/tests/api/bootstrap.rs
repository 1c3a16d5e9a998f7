//! `nimbus-api bootstrap`: the first tenant's key works against the API; a second run refuses.

use nimbus_api::bootstrap::{self, Bootstrap, BootstrapError};
use nimbus_domain::PlanLimits;

use crate::support::TestApp;

#[tokio::test]
async fn bootstrap_creates_a_working_key_once() {
    let app = TestApp::new().await;
    // The harness already made a tenant; bootstrap needs an empty database.
    sqlx::query("delete from tenants").execute(app.pool()).await.unwrap();
    let input = Bootstrap {
        tenant: "Hoster".into(),
        email: "root@hoster.test".into(),
        plan: "starter".into(),
        limits: PlanLimits { max_instances: 3, max_vcpus: 8, max_memory_mib: 16_384, max_disk_gib: 200 },
    };
    let done = bootstrap::run(app.pool(), &input).await.unwrap();
    assert!(done.token.starts_with("nmb_"));
    let (status, _, quota) = app.get_as(&done.token, "/v1/quota").await;
    assert_eq!(status, 200, "{quota}");
    assert_eq!(quota["data"]["plan"]["name"], "starter");
    assert_eq!(quota["data"]["limits"]["maxInstances"], 3);

    let again = bootstrap::run(app.pool(), &Bootstrap { tenant: "Other".into(), ..input }).await;
    assert!(matches!(again, Err(BootstrapError::AlreadyBootstrapped)), "{again:?}");
    let tenants: i64 = sqlx::query_scalar("select count(*) from tenants").fetch_one(app.pool()).await.unwrap();
    assert_eq!(tenants, 1);
}
