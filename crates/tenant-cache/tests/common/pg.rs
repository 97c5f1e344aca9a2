//! A test-only PostgreSQL `TenantStore`: one SELECT joining tenants and plans (the real one is
//! `PgTenantStore` in rls-pool). Enough to prove the cache works over a real database.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenantry_core::{
    ApiKeyHash, FeatureSet, Limits, Plan, Slug, StoreError, StoreErrorKind, Tenant, TenantId,
    TenantStatus, TenantStore,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

const SELECT: &str = "SELECT t.id, t.slug, t.status, p.name, p.requests_per_minute, p.burst, \
     p.statement_timeout_ms, p.max_concurrent_transactions, p.features \
     FROM tenants t JOIN plans p ON p.name = t.plan WHERE ";

#[derive(Clone)]
pub struct PgStore {
    client: Arc<Client>,
    queries: Arc<AtomicU64>,
}

impl PgStore {
    pub fn new(client: Client) -> Self {
        Self {
            client: Arc::new(client),
            queries: Arc::default(),
        }
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    async fn one(
        &self,
        filter: &str,
        param: &(dyn ToSql + Sync),
    ) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let row = self
            .client
            .query_opt(&format!("{SELECT}{filter}"), &[param])
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, e))?;
        let Some(row) = row else { return Ok(None) };
        let invalid = || StoreError::from_kind(StoreErrorKind::InvalidRecord);
        let id = TenantId::from_uuid(row.get(0)).map_err(|_| invalid())?;
        let slug = Slug::new(row.get(1)).map_err(|_| invalid())?;
        let status = TenantStatus::parse(row.get(2)).ok_or_else(invalid)?;
        let features: Vec<String> = row.get(8);
        let limits = Limits {
            requests_per_minute: u32::try_from(row.get::<_, i32>(4)).map_err(|_| invalid())?,
            burst: u32::try_from(row.get::<_, i32>(5)).map_err(|_| invalid())?,
            statement_timeout: Duration::from_millis(
                u64::try_from(row.get::<_, i32>(6)).map_err(|_| invalid())?,
            ),
            max_concurrent_transactions: row
                .get::<_, Option<i32>>(7)
                .and_then(|n| u32::try_from(n).ok())
                .and_then(NonZeroU32::new),
        };
        let plan = Plan::new(
            row.get::<_, String>(3),
            limits,
            FeatureSet::try_from_names(features).map_err(|_| invalid())?,
        );
        Ok(Some(Arc::new(
            Tenant::builder(id, slug, plan).status(status).build(),
        )))
    }
}

impl TenantStore for PgStore {
    async fn by_id(&self, id: TenantId) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.one("t.id = $1", id.as_uuid()).await
    }

    async fn by_slug(&self, slug: &Slug) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.one("t.slug = $1", &slug.as_str()).await
    }

    async fn by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.one("t.id = tenant_for_api_key($1)", &hash.as_bytes().as_slice())
            .await
    }
}
