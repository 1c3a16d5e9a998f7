//! Plans, tenants, users and API keys.

use chrono::{Duration, Utc};
use nimbus_db::DbError;
use nimbus_db::api_keys;
use nimbus_db::plans::{self, NewPlan};
use nimbus_db::seed;
use nimbus_db::tenants;
use nimbus_db::users::{self, NewUser};
use nimbus_domain::{PlanId, PlanLimits, Role};
use nimbus_testkit::TestDb;
use sha2::Digest;

use crate::{ROOMY, tenant_with};

#[tokio::test]
async fn plans_are_unique_by_name_and_found_through_their_tenant() {
    let db = TestDb::new().await;
    let (plan, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    assert_eq!(plans::for_tenant(db.pool(), tenant.id).await.unwrap(), plan);
    let dup = NewPlan { name: plan.name.clone(), limits: ROOMY, prices: plan.prices.clone() };
    let err = plans::create(db.pool(), &dup).await.unwrap_err();
    assert!(matches!(&err, DbError::Conflict { constraint } if constraint == "plans_name_key"), "{err:?}");

    let lowered = PlanLimits { max_instances: 1, ..ROOMY };
    assert_eq!(plans::update_limits(db.pool(), plan.id, lowered).await.unwrap().limits, lowered);
    assert!(matches!(plans::get(db.pool(), PlanId::new()).await, Err(DbError::NotFound)));
}

#[tokio::test]
async fn tenants_need_an_existing_plan() {
    let db = TestDb::new().await;
    let err = tenants::create(db.pool(), "Ghost", PlanId::new()).await.unwrap_err();
    assert!(matches!(&err, DbError::ForeignKey { constraint } if constraint == "tenants_plan_fkey"), "{err:?}");
    assert_eq!(err.code(), nimbus_domain::ErrorCode::NotFound);
}

#[tokio::test]
async fn emails_are_unique_per_tenant_ignoring_case() {
    let db = TestDb::new().await;
    let (_, acme, admin) = tenant_with(db.pool(), ROOMY).await;
    let (_, other, _) = tenant_with(db.pool(), ROOMY).await;
    let again = NewUser { email: "OPS@acme.test".into(), display_name: None, role: Role::User };
    let err = users::create(db.pool(), acme.id, &again).await.unwrap_err();
    assert!(matches!(&err, DbError::Conflict { constraint } if constraint == "users_tenant_email_key"), "{err:?}");
    // The same address in another tenant is another user (both fixtures made ops@acme.test).
    let theirs = users::find_by_email(db.pool(), other.id, "ops@acme.test").await.unwrap().unwrap();
    assert_ne!(theirs.id, admin.id);

    let found = users::find_by_email(db.pool(), acme.id, "Ops@Acme.Test").await.unwrap().unwrap();
    assert_eq!(found.id, admin.id);
    assert!(users::find_by_email(db.pool(), acme.id, "nobody@acme.test").await.unwrap().is_none());

    let bad = NewUser { email: "not-an-email".into(), display_name: None, role: Role::BillingAdmin };
    let err = users::create(db.pool(), acme.id, &bad).await.unwrap_err();
    assert!(matches!(&err, DbError::Check { constraint } if constraint == "users_email_check"), "{err:?}");
    // A user of another tenant is missing, not forbidden.
    assert!(matches!(users::get(db.pool(), other.id, admin.id).await, Err(DbError::NotFound)));
}

#[tokio::test]
async fn api_keys_authenticate_until_revoked_expired_or_deactivated() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (_, tenant, admin) = tenant_with(pool, ROOMY).await;
    let (key, token) = api_keys::create(pool, tenant.id, admin.id, "ci", &["vms:write".into()], None).await.unwrap();
    assert!(token.starts_with(&format!("nmb_{}_", key.prefix)));
    let stored: Vec<u8> = sqlx::query_scalar("select secret_sha256 from api_keys where id = $1")
        .bind(key.id.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap();
    // Only the digest of the whole token is kept.
    assert_eq!(stored, sha2::Sha256::digest(token.as_bytes()).to_vec());

    let auth = api_keys::authenticate(pool, &token).await.unwrap().expect("valid token");
    assert_eq!(auth.user.id, admin.id);
    assert_eq!(auth.user.role, Role::Admin);
    assert_eq!(auth.key.scopes, vec!["vms:write".to_string()]);
    let used: Option<chrono::DateTime<Utc>> = sqlx::query_scalar("select last_used_at from api_keys where id = $1")
        .bind(key.id.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(used.is_some());

    // Right prefix, wrong secret.
    let forged = format!("{}{}", &token[..token.len() - 1], if token.ends_with('a') { 'b' } else { 'a' });
    assert!(api_keys::authenticate(pool, &forged).await.unwrap().is_none());
    assert!(api_keys::authenticate(pool, "garbage").await.unwrap().is_none());

    users::set_active(pool, tenant.id, admin.id, false).await.unwrap();
    assert!(api_keys::authenticate(pool, &token).await.unwrap().is_none());
    users::set_active(pool, tenant.id, admin.id, true).await.unwrap();
    assert!(api_keys::authenticate(pool, &token).await.unwrap().is_some());

    api_keys::revoke(pool, tenant.id, key.id).await.unwrap();
    assert!(api_keys::authenticate(pool, &token).await.unwrap().is_none());

    let (_, expired) =
        api_keys::create(pool, tenant.id, admin.id, "old", &[], Some(Utc::now() - Duration::minutes(1))).await.unwrap();
    assert!(api_keys::authenticate(pool, &expired).await.unwrap().is_none());
    assert_eq!(api_keys::list(pool, tenant.id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn api_keys_cannot_point_at_another_tenants_user() {
    let db = TestDb::new().await;
    let (_, acme, _) = tenant_with(db.pool(), ROOMY).await;
    let (_, _, stranger) = tenant_with(db.pool(), ROOMY).await;
    let err = api_keys::create(db.pool(), acme.id, stranger.id, "x", &[], None).await.unwrap_err();
    assert!(matches!(&err, DbError::ForeignKey { constraint } if constraint == "api_keys_user_fkey"), "{err:?}");
}

#[tokio::test]
async fn seed_demo_is_idempotent_and_shows_the_key_once() {
    let db = TestDb::new().await;
    let first = seed::seed_demo(db.pool()).await.unwrap();
    let token = first.new_token.clone().expect("first run creates a key");
    let auth = api_keys::authenticate(db.pool(), &token).await.unwrap().unwrap();
    assert_eq!(auth.user.id, seed::DEMO_ADMIN_ID);
    assert_eq!(auth.user.role, Role::Admin);

    let second = seed::seed_demo(db.pool()).await.unwrap();
    assert!(second.new_token.is_none());
    assert_eq!(second.api_key.id, first.api_key.id);
    assert_eq!(second.tenant, first.tenant);
    assert_eq!(crate::count(db.pool(), "tenants").await, 1);

    // A revoked demo key is replaced on the next run.
    api_keys::revoke(db.pool(), first.tenant.id, first.api_key.id).await.unwrap();
    assert!(seed::seed_demo(db.pool()).await.unwrap().new_token.is_some());
}
