//! Provider identities: the (issuer, subject) pairs of OpenID Connect accounts and the users
//! they sign in as. A first sign-in creates the user and a tenant of their own on the sign-up
//! plan; every later one refreshes the user's role and name from the provider's claims.
//!
//! An account is only ever created from a token that says `email_verified: true`: any valid token
//! of the provider could otherwise mint users and tenants (self-registration at the provider,
//! an email it never checked). What the provider sends is checked against the schema's rules
//! first (`sub` ≤ 255 characters, one well-formed email), so bad claims are a refusal, not a 500.
//!
//! These lookups start from a provider account, not from a tenant: the pair (issuer, subject) is
//! globally unique and is what decides the tenant, so they are the one place that reads users
//! without a tenant filter.

use nimbus_domain::{Role, TenantId, UserId};
use sqlx::Row;

use crate::users::User;
use crate::{DbError, PgPool, Result, tenants, users};

/// What the provider says about the account, read from its ID token or access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// `email`, required to create a user.
    pub email: Option<String>,
    /// `email_verified`: whether the provider checked that the account owns `email`; required
    /// to create a user.
    pub email_verified: bool,
    /// `name`.
    pub name: Option<String>,
    /// The role from the configured claim; `None` when the token does not carry the claim, which
    /// leaves the stored role as it is (a token without roles is not a demotion).
    pub role: Option<Role>,
}

/// The result of [`sign_in`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// A known account; role and name are up to date.
    Existing(User),
    /// A new account: its user and tenant were just created.
    Created(User),
    /// An unknown account without an email: no user can be created for it.
    NeedsEmail,
    /// An unknown account whose email the provider has not verified.
    EmailNotVerified,
    /// An unknown account whose email the schema cannot hold (not `local@domain`, too long).
    InvalidEmail,
    /// A `sub` the schema cannot hold (empty, over 255 characters, control characters).
    InvalidSubject,
    /// The sign-up plan does not exist, so no tenant can be created.
    NoSignupPlan,
}

impl SignIn {
    /// The user, when there is one.
    pub fn user(self) -> Option<User> {
        match self {
            SignIn::Existing(u) | SignIn::Created(u) => Some(u),
            SignIn::NeedsEmail
            | SignIn::EmailNotVerified
            | SignIn::InvalidEmail
            | SignIn::InvalidSubject
            | SignIn::NoSignupPlan => None,
        }
    }
}

const USER_COLUMNS: &str = "u.id, u.tenant_id, u.email, u.display_name, u.role, u.active, u.created_at";

/// The user behind (issuer, subject), if any (active or not: the caller decides).
pub async fn find_user(pool: &PgPool, issuer: &str, subject: &str) -> Result<Option<User>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {USER_COLUMNS} from user_identities i \
         join users u on u.tenant_id = i.tenant_id and u.id = i.user_id \
         where i.issuer = $1 and i.subject = $2"
    )))
    .bind(issuer)
    .bind(subject)
    .fetch_optional(pool)
    .await?)
}

/// Finds the user of (issuer, subject) and brings its role and name up to date, or creates the
/// user, their identity and a tenant of their own on the plan named `signup_plan`.
pub async fn sign_in(
    pool: &PgPool,
    issuer: &str,
    subject: &str,
    profile: &Profile,
    signup_plan: &str,
) -> Result<SignIn> {
    if !valid_subject(subject) {
        return Ok(SignIn::InvalidSubject);
    }
    // Two first sign-ins of one account at once: the second insert of the identity violates
    // the unique pair, its transaction rolls back, and the retry finds the first one's user.
    for _ in 0..2 {
        if let Some(user) = find_user(pool, issuer, subject).await? {
            return Ok(SignIn::Existing(refresh(pool, issuer, subject, user, profile).await?));
        }
        match create(pool, issuer, subject, profile, signup_plan).await {
            Err(DbError::Conflict { constraint }) if constraint == "user_identities_issuer_subject_key" => continue,
            other => return other,
        }
    }
    Err(DbError::Conflict { constraint: "user_identities_issuer_subject_key".into() })
}

/// Applies the provider's current role and name when they changed (a claim that is absent or
/// blank changes nothing).
async fn refresh(pool: &PgPool, issuer: &str, subject: &str, user: User, profile: &Profile) -> Result<User> {
    let name = profile.name.as_deref().map(clip).filter(|n| !n.is_empty()).or(user.display_name.clone());
    let role = profile.role.unwrap_or(user.role);
    if user.role == role && user.display_name == name {
        // Nothing to write on the hot path of bearer tokens but, at most once a minute, the time.
        sqlx::query(
            "update user_identities set last_seen_at = now() where issuer = $1 and subject = $2 \
             and last_seen_at < now() - interval '1 minute'",
        )
        .bind(issuer)
        .bind(subject)
        .execute(pool)
        .await?;
        return Ok(user);
    }
    let mut tx = pool.begin().await?;
    let updated: User = sqlx::query_as(
        "update users set role = $3, display_name = $4 where tenant_id = $1 and id = $2 \
         returning id, tenant_id, email, display_name, role, active, created_at",
    )
    .bind(user.tenant_id.as_uuid())
    .bind(user.id.as_uuid())
    .bind(role.as_str())
    .bind(&name)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("update user_identities set last_seen_at = now() where issuer = $1 and subject = $2")
        .bind(issuer)
        .bind(subject)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(updated)
}

async fn create(pool: &PgPool, issuer: &str, subject: &str, profile: &Profile, signup_plan: &str) -> Result<SignIn> {
    let Some(email) = profile.email.as_deref().map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(SignIn::NeedsEmail);
    };
    if !valid_email(email) {
        return Ok(SignIn::InvalidEmail);
    }
    if !profile.email_verified {
        return Ok(SignIn::EmailNotVerified);
    }
    let mut tx = pool.begin().await?;
    let plan = sqlx::query("select id from plans where name = $1")
        .bind(signup_plan)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get::<uuid::Uuid, _>("id"))
        .transpose()?;
    let Some(plan) = plan else { return Ok(SignIn::NoSignupPlan) };
    // A blank name (`"  "`) is no name: the tenant is named after the email instead.
    let name = profile.name.as_deref().map(clip).filter(|n| !n.is_empty());
    let tenant_name = name.clone().unwrap_or_else(|| clip(email));
    let tenant = tenants::create(&mut *tx, &tenant_name, plan.into()).await?;
    let role = profile.role.unwrap_or(Role::User);
    let user =
        users::create(&mut *tx, tenant.id, &users::NewUser { email: email.to_owned(), display_name: name, role })
            .await?;
    link(&mut tx, tenant.id, user.id, issuer, subject).await?;
    tx.commit().await?;
    Ok(SignIn::Created(user))
}

async fn link(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: TenantId,
    user: UserId,
    issuer: &str,
    subject: &str,
) -> Result<()> {
    sqlx::query("insert into user_identities (id, tenant_id, user_id, issuer, subject) values ($1, $2, $3, $4, $5)")
        .bind(uuid::Uuid::now_v7())
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .bind(issuer)
        .bind(subject)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Links an existing user of `tenant` to (issuer, subject), e.g. to let a bootstrapped admin
/// sign in through the provider. A pair already linked is `Conflict`.
pub async fn link_user(pool: &PgPool, tenant: TenantId, user: UserId, issuer: &str, subject: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    link(&mut tx, tenant, user, issuer, subject).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets the role of the user of (issuer, subject), e.g. from a refreshed ID token; `None` when
/// no user has that identity.
pub async fn set_role(pool: &PgPool, issuer: &str, subject: &str, role: Role) -> Result<Option<User>> {
    Ok(sqlx::query_as(
        "update users u set role = $3 from user_identities i \
         where i.issuer = $1 and i.subject = $2 and u.tenant_id = i.tenant_id and u.id = i.user_id \
         returning u.id, u.tenant_id, u.email, u.display_name, u.role, u.active, u.created_at",
    )
    .bind(issuer)
    .bind(subject)
    .bind(role.as_str())
    .fetch_optional(pool)
    .await?)
}

/// Names are clipped to what the tenant name's CHECK allows (200 characters), without control
/// characters (a NUL would make Postgres refuse the text).
fn clip(s: &str) -> String {
    s.trim().chars().filter(|c| !c.is_control()).take(200).collect::<String>().trim().to_owned()
}

/// What `user_identities_subject_check` accepts (OIDC Core §2: at most 255 ASCII characters),
/// without control characters.
pub fn valid_subject(subject: &str) -> bool {
    (1..=255).contains(&subject.chars().count()) && !subject.chars().any(char::is_control)
}

/// What `users_email_check` accepts: `local@domain`, one `@`, no whitespace, at most 254
/// characters; no control characters either.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.chars().count() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_checked_against_the_schema() {
        assert!(valid_subject("b6f1c1e0-0000-4000-8000-0000000a11ce"));
        assert!(!valid_subject(""));
        assert!(!valid_subject(&"s".repeat(256)));
        assert!(valid_subject(&"s".repeat(255)));
        assert!(!valid_subject("a\0b"));
        assert!(valid_email("alice@acme.test"));
        for bad in ["alice", "@acme.test", "alice@", "a@b@c", "al ice@acme.test", "a\0@b"] {
            assert!(!valid_email(bad), "{bad}");
        }
        assert!(!valid_email(&format!("{}@acme.test", "a".repeat(250))));
        assert_eq!(clip("   "), "");
        assert_eq!(clip(" Ada\u{0}  "), "Ada");
        assert_eq!(clip(&"x".repeat(300)).len(), 200);
    }
}
