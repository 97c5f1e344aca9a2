//! Tenant administration: what the `tenant`, `api-key` and `token` commands do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use rand::RngCore as _;
use serde::Serialize;
use serde_json::json;
use tenantry_core::{ApiKeyHash, FeatureSet, Slug, TenantId, TenantStatus};
use tokio_postgres::Client;

/// A tenant as the admin commands print it.
#[derive(Debug, Serialize)]
pub struct TenantRow {
    /// Id.
    pub id: TenantId,
    /// Slug.
    pub slug: String,
    /// Plan name.
    pub plan: String,
    /// Status.
    pub status: String,
    /// Features granted on top of the plan.
    pub feature_grants: Vec<String>,
}

const SELECT_TENANT: &str = "SELECT id, slug, plan, status, feature_grants FROM tenants";

fn row_to_tenant(row: &tokio_postgres::Row) -> anyhow::Result<TenantRow> {
    Ok(TenantRow {
        id: TenantId::from_uuid(row.get(0))?,
        slug: row.get(1),
        plan: row.get(2),
        status: row.get(3),
        feature_grants: row.get(4),
    })
}

fn parse_slug(slug: &str) -> anyhow::Result<Slug> {
    Slug::new(slug).with_context(|| format!("{slug:?} is not a valid slug"))
}

/// Creates a tenant.
pub async fn create_tenant(
    admin: &Client,
    slug: &str,
    plan: &str,
    features: &[String],
) -> anyhow::Result<TenantRow> {
    let slug = parse_slug(slug)?;
    FeatureSet::try_from_names(features)?;
    ensure_plan(admin, plan).await?;
    let row = admin
        .query_one(
            "INSERT INTO tenants (slug, plan, feature_grants) VALUES ($1, $2, $3) \
             RETURNING id, slug, plan, status, feature_grants",
            &[&slug.as_str(), &plan, &features],
        )
        .await
        .map_err(|e| match e.code().map(|c| c.code()) {
            Some("23505") => anyhow::anyhow!("a tenant with slug {slug} already exists"),
            _ => e.into(),
        })?;
    row_to_tenant(&row)
}

async fn ensure_plan(admin: &Client, plan: &str) -> anyhow::Result<()> {
    let exists = admin
        .query_opt("SELECT 1 FROM plans WHERE name = $1", &[&plan])
        .await?
        .is_some();
    if !exists {
        let plans: Vec<String> = admin
            .query("SELECT name FROM plans ORDER BY requests_per_minute", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        bail!("unknown plan {plan:?}; known plans: {}", plans.join(", "));
    }
    Ok(())
}

/// Every tenant, by slug.
pub async fn list_tenants(client: &Client) -> anyhow::Result<Vec<TenantRow>> {
    client
        .query(&format!("{SELECT_TENANT} ORDER BY slug"), &[])
        .await?
        .iter()
        .map(row_to_tenant)
        .collect()
}

/// One tenant by slug.
pub async fn tenant_by_slug(client: &Client, slug: &str) -> anyhow::Result<TenantRow> {
    let slug = parse_slug(slug)?;
    let row = client
        .query_opt(
            &format!("{SELECT_TENANT} WHERE slug = $1"),
            &[&slug.as_str()],
        )
        .await?
        .with_context(|| format!("no tenant with slug {slug}"))?;
    row_to_tenant(&row)
}

/// Moves a tenant to another plan.
pub async fn set_plan(admin: &Client, slug: &str, plan: &str) -> anyhow::Result<TenantRow> {
    ensure_plan(admin, plan).await?;
    update_tenant(admin, slug, "plan = $2", plan).await
}

/// Changes a tenant's status.
pub async fn set_status(
    admin: &Client,
    slug: &str,
    status: TenantStatus,
) -> anyhow::Result<TenantRow> {
    update_tenant(admin, slug, "status = $2", status.as_str()).await
}

async fn update_tenant(
    admin: &Client,
    slug: &str,
    assignment: &str,
    value: &str,
) -> anyhow::Result<TenantRow> {
    let slug = parse_slug(slug)?;
    let row = admin
        .query_opt(
            &format!(
                "UPDATE tenants SET {assignment}, updated_at = now() WHERE slug = $1 \
                 RETURNING id, slug, plan, status, feature_grants"
            ),
            &[&slug.as_str(), &value],
        )
        .await?
        .with_context(|| format!("no tenant with slug {slug}"))?;
    row_to_tenant(&row)
}

/// Creates an API key for a tenant; returns the key, which is never stored.
pub async fn create_api_key(admin: &mut Client, slug: &str) -> anyhow::Result<(TenantRow, String)> {
    let tenant = tenant_by_slug(admin, slug).await?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let key = format!(
        "tk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = ApiKeyHash::of(&key);
    // api_keys is tenant-scoped with forced RLS: write it inside the tenant's context, which
    // works for a superuser and for a non-superuser owner alike.
    let tx = admin.transaction().await?;
    tx.query(
        "SELECT set_config('app.tenant_id', $1, true)",
        &[&tenant.id.to_string()],
    )
    .await?;
    tx.execute(
        "INSERT INTO api_keys (tenant_id, key_hash, name) VALUES ($1, $2, 'cli')",
        &[tenant.id.as_uuid(), &hash.as_bytes().as_slice()],
    )
    .await?;
    tx.commit().await?;
    Ok((tenant, key))
}

/// Signs a development JWT (HS256) for a tenant.
pub fn sign_token(
    secret: &str,
    issuer: &str,
    audience: &str,
    tenant: TenantId,
    sub: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({
        "sub": sub,
        "tenant_id": tenant.to_string(),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs(),
        "roles": ["member"],
    });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// A random secret for zero-configuration mode.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
