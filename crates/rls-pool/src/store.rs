//! [`PgTenantStore`]: the [`TenantStore`] over the application-role pool.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, PoolError};
use tenantry_core::{
    ApiKeyHash, FeatureSet, LimitOverrides, Limits, Placement, Plan, Slug, StoreError,
    StoreErrorKind, Tenant, TenantId, TenantStatus, TenantStore,
};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

/// One statement per lookup: the tenant row joined with its plan. `tenants` and `plans` are
/// readable by the application role without a tenant context.
macro_rules! select_tenant {
    ($where:literal) => {
        concat!(
            "SELECT t.id, t.slug, t.status, t.placement, t.placement_target, ",
            "t.feature_grants, t.feature_revocations, t.limit_overrides, ",
            "p.name, p.requests_per_minute, p.burst, p.statement_timeout_ms, ",
            "p.max_concurrent_transactions, p.features ",
            "FROM tenants t JOIN plans p ON p.name = t.plan ",
            $where
        )
    };
}

const BY_ID: &str = select_tenant!("WHERE t.id = $1");
const BY_SLUG: &str = select_tenant!("WHERE t.slug = $1");
/// The SECURITY DEFINER function maps the key's hash to its tenant inside the same statement.
const BY_API_KEY: &str = select_tenant!("WHERE t.id = tenant_for_api_key($1)");

/// Looks tenants up in PostgreSQL (the `tenants` and `plans` tables of the migrations).
///
/// Each lookup is one unnamed, typed statement (no prepared statement survives it, so it works
/// through pgbouncer in transaction mode). An API key is resolved by the `SECURITY DEFINER`
/// function `tenant_for_api_key(bytea)` inside the same statement. A database outage or a
/// slow database is a [`StoreError`] (`Unavailable` or `Timeout`), never a panic.
///
/// ```no_run
/// use tenantry_core::{ApiKeyHash, TenantStore};
/// use tenantry_rls_pool::PgTenantStore;
///
/// # async fn demo(app_role_pool: deadpool_postgres::Pool) -> Result<(), tenantry_core::StoreError> {
/// let store = PgTenantStore::new(app_role_pool);
/// if let Some(tenant) = store.by_api_key(&ApiKeyHash::of("sk_live_...")).await? {
///     println!("{} on plan {}", tenant.slug(), tenant.plan().name());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgTenantStore {
    pool: Pool,
    timeout: Duration,
}

impl fmt::Debug for PgTenantStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTenantStore")
            .field("status", &self.pool.status())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PgTenantStore {
    /// A store over `pool` (application-role connections), with a 2 s timeout per lookup
    /// (checkout included).
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            timeout: Duration::from_secs(2),
        }
    }

    /// Sets the timeout of one lookup, checkout included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn lookup(
        &self,
        sql: &'static str,
        param: &(dyn ToSql + Sync),
        ty: Type,
    ) -> Result<Option<Arc<Tenant>>, StoreError> {
        let work = async {
            let client = self.pool.get().await.map_err(|e| match e {
                PoolError::Backend(e) => StoreError::new(StoreErrorKind::Unavailable, e),
                PoolError::Timeout(_) => StoreError::from_kind(StoreErrorKind::Timeout),
                other => StoreError::new(StoreErrorKind::Unavailable, other.to_string()),
            })?;
            client
                .query_typed(sql, &[(param, ty)])
                .await
                .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, e))
        };
        let rows = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::from_kind(StoreErrorKind::Timeout))??;
        match rows.first() {
            Some(row) => tenant_from_row(row).map(|t| Some(Arc::new(t))),
            None => Ok(None),
        }
    }
}

fn invalid(what: &'static str) -> StoreError {
    StoreError::new(StoreErrorKind::InvalidRecord, what)
}

fn tenant_from_row(row: &Row) -> Result<Tenant, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::new(StoreErrorKind::InvalidRecord, e);
    let id = TenantId::from_uuid(row.try_get(0).map_err(get)?).map_err(|_| invalid("nil id"))?;
    let slug = Slug::new(row.try_get(1).map_err(get)?).map_err(|_| invalid("invalid slug"))?;
    let status = TenantStatus::parse(row.try_get(2).map_err(get)?)
        .ok_or_else(|| invalid("unknown status"))?;
    let target: Option<String> = row.try_get(4).map_err(get)?;
    let placement = match (row.try_get::<_, &str>(3).map_err(get)?, target) {
        ("shared", None) => Placement::Shared,
        ("schema", Some(schema)) => Placement::Schema(schema.into()),
        ("database", Some(dsn)) => Placement::Database(dsn.into()),
        _ => return Err(invalid("invalid placement")),
    };
    let features = |i: usize| -> Result<FeatureSet, StoreError> {
        let names: Vec<String> = row.try_get(i).map_err(get)?;
        FeatureSet::try_from_names(names)
            .map_err(|e| StoreError::new(StoreErrorKind::InvalidRecord, e))
    };
    let grants = features(5)?;
    let revocations = features(6)?;
    let overrides: serde_json::Value = row.try_get(7).map_err(get)?;
    let overrides: LimitOverrides = serde_json::from_value(overrides)
        .map_err(|e| StoreError::new(StoreErrorKind::InvalidRecord, e))?;
    let plan_name: String = row.try_get(8).map_err(get)?;
    let positive = |i: usize| -> Result<u32, StoreError> {
        let v: i32 = row.try_get(i).map_err(get)?;
        u32::try_from(v).map_err(|_| invalid("negative plan limit"))
    };
    let max_tx: Option<i32> = row.try_get(12).map_err(get)?;
    let limits = Limits {
        requests_per_minute: positive(9)?,
        burst: positive(10)?,
        statement_timeout: Duration::from_millis(u64::from(positive(11)?)),
        max_concurrent_transactions: max_tx
            .and_then(|v| u32::try_from(v).ok())
            .and_then(std::num::NonZeroU32::new),
    };
    let plan = Plan::new(plan_name, limits, features(13)?);
    Ok(Tenant::builder(id, slug, plan)
        .status(status)
        .placement(placement)
        .grants(grants)
        .revocations(revocations)
        .limit_overrides(overrides)
        .build())
}

impl TenantStore for PgTenantStore {
    async fn by_id(&self, id: TenantId) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.lookup(BY_ID, id.as_uuid(), Type::UUID).await
    }

    async fn by_slug(&self, slug: &Slug) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.lookup(BY_SLUG, &slug.as_str(), Type::TEXT).await
    }

    async fn by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<Arc<Tenant>>, StoreError> {
        let bytes: &[u8] = hash.as_bytes();
        self.lookup(BY_API_KEY, &bytes, Type::BYTEA).await
    }
}
