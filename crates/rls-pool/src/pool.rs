//! [`RlsPool`]: the application-role pool, the context mode, fairness caps and placement.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tenantry_core::{Placement, Tenant, TenantId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::NoTls;

use crate::context::{Access, ContextMode};
use crate::doctor::{self, DoctorReport};
use crate::error::{DbError, DbErrorKind};
use crate::timer::Timer;
use crate::tx::TenantDb;

/// Builds a pool for a tenant placed in its own database, from its connection string.
pub type DatabasePoolFactory = Arc<dyn Fn(&str) -> Result<Pool, DbError> + Send + Sync>;

/// Tenant-scoped access to PostgreSQL over a `deadpool_postgres::Pool` of application-role
/// connections. Cheap to clone (an `Arc`); all clones share the fairness caps and the
/// per-database pools.
///
/// ```no_run
/// use std::sync::Arc;
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_rls_pool::RlsPool;
///
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let rls = RlsPool::builder(pool).build_detecting().await?;
/// let report = rls.doctor().await;
/// assert!(report.is_ok(), "{report}");
/// let tenant = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::pro()).build());
/// let db = rls.for_tenant(tenant);
/// let rows = db.query("SELECT id FROM documents", &[]).await?;
/// # let _ = rows; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RlsPool {
    pub(crate) inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    pub(crate) pool: Pool,
    pub(crate) mode: ContextMode,
    pub(crate) checkout_timeout: Duration,
    pub(crate) tenant_wait: Duration,
    pub(crate) per_tenant_caps: bool,
    pub(crate) rollback_timeout: Duration,
    pub(crate) prepared_context: bool,
    pub(crate) fused: crate::fused::Shapes,
    caps: Mutex<HashMap<TenantId, (u32, Arc<Semaphore>)>>,
    databases: DatabasePools,
}

impl fmt::Debug for RlsPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsPool")
            .field("mode", &self.inner.mode)
            .field("status", &self.inner.pool.status())
            .field("checkout_timeout", &self.inner.checkout_timeout)
            .field("tenant_wait", &self.inner.tenant_wait)
            .field("per_tenant_caps", &self.inner.per_tenant_caps)
            .finish_non_exhaustive()
    }
}

/// An invalid [`RlsPoolBuilder`] setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Builds an [`RlsPool`]; see [`RlsPool::builder`].
pub struct RlsPoolBuilder {
    pool: Pool,
    mode: Option<ContextMode>,
    checkout_timeout: Duration,
    tenant_wait: Duration,
    per_tenant_caps: bool,
    rollback_timeout: Duration,
    prepared_context: bool,
    database_pool_size: usize,
    max_database_pools: usize,
    database_pool_idle: Duration,
    factory: Option<DatabasePoolFactory>,
}

impl fmt::Debug for RlsPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsPoolBuilder")
            .field("mode", &self.mode)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("tenant_wait", &self.tenant_wait)
            .field("per_tenant_caps", &self.per_tenant_caps)
            .field("prepared_context", &self.prepared_context)
            .finish_non_exhaustive()
    }
}

impl RlsPoolBuilder {
    /// Sets the context mode. Without it, [`build`](Self::build) uses
    /// [`ContextMode::Postgres`] and [`build_detecting`](Self::build_detecting) asks the
    /// database.
    pub fn mode(mut self, mode: ContextMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// How long a transaction waits for a pooled connection before failing with 503
    /// (default 2 s). Never an unbounded queue.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.checkout_timeout = timeout;
        self
    }

    /// How long a transaction waits for a free slot of its tenant's
    /// `max_concurrent_transactions` before failing with 503 `tenant_busy` (default 1 s).
    pub fn tenant_wait(mut self, timeout: Duration) -> Self {
        self.tenant_wait = timeout;
        self
    }

    /// Whether to enforce each tenant's `max_concurrent_transactions` (default true).
    pub fn per_tenant_caps(mut self, enforce: bool) -> Self {
        self.per_tenant_caps = enforce;
        self
    }

    /// How long the background `ROLLBACK` of an abandoned transaction may take before its
    /// connection is discarded instead of returned (default 5 s).
    pub fn rollback_timeout(mut self, timeout: Duration) -> Self {
        self.rollback_timeout = timeout;
        self
    }

    /// Whether the context statement of [`ContextMode::Postgres`] is prepared once per
    /// connection (deadpool's statement cache) instead of parsed in every transaction
    /// (default false). Saves the server a parse and plan per transaction; the tenant id is
    /// still a bound parameter. Not for pgbouncer in transaction mode before 1.21, where a
    /// statement prepared on one server connection is missing on the next.
    pub fn prepared_context(mut self, enabled: bool) -> Self {
        self.prepared_context = enabled;
        self
    }

    /// Connections per database-placed tenant's pool (default 4).
    pub fn database_pool_size(mut self, size: usize) -> Self {
        self.database_pool_size = size;
        self
    }

    /// At most this many database-placement pools at once; the least recently used is
    /// evicted beyond it (default 32).
    pub fn max_database_pools(mut self, max: usize) -> Self {
        self.max_database_pools = max;
        self
    }

    /// A database-placement pool unused for this long is evicted (default 5 min).
    pub fn database_pool_idle(mut self, idle: Duration) -> Self {
        self.database_pool_idle = idle;
        self
    }

    /// Replaces how database-placement pools are built (default: the DSN, no TLS,
    /// [`RecyclingMethod::Fast`]). Use it for TLS or to force the application role.
    pub fn database_pool_factory(mut self, factory: DatabasePoolFactory) -> Self {
        self.factory = Some(factory);
        self
    }

    /// Builds the pool.
    pub fn build(self) -> Result<RlsPool, ConfigError> {
        let zero = |d: Duration| d.is_zero();
        if zero(self.checkout_timeout) || zero(self.tenant_wait) || zero(self.rollback_timeout) {
            return Err(ConfigError {
                message: "rls-pool: timeouts must be greater than zero",
            });
        }
        if self.database_pool_size == 0 || self.max_database_pools == 0 {
            return Err(ConfigError {
                message: "rls-pool: database pool sizes must be greater than zero",
            });
        }
        let size = self.database_pool_size;
        let factory = self
            .factory
            .unwrap_or_else(|| Arc::new(move |dsn: &str| default_database_pool(dsn, size)));
        Ok(RlsPool {
            inner: Arc::new(PoolInner {
                pool: self.pool,
                mode: self.mode.unwrap_or_default(),
                checkout_timeout: self.checkout_timeout,
                tenant_wait: self.tenant_wait,
                per_tenant_caps: self.per_tenant_caps,
                rollback_timeout: self.rollback_timeout,
                prepared_context: self.prepared_context,
                fused: crate::fused::Shapes::default(),
                caps: Mutex::new(HashMap::new()),
                databases: DatabasePools {
                    max: self.max_database_pools,
                    idle: self.database_pool_idle,
                    factory,
                    pools: Mutex::new(HashMap::new()),
                },
            }),
        })
    }

    /// Builds the pool, asking the database (`pg_extension`) whether it is Citus when no
    /// mode was set.
    pub async fn build_detecting(mut self) -> Result<RlsPool, BuildError> {
        if self.mode.is_none() {
            let client = checkout(&self.pool, self.checkout_timeout)
                .await
                .map_err(BuildError::Db)?;
            let citus: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
                    &[],
                )
                .await
                .map_err(|e| BuildError::Db(e.into()))?
                .get(0);
            self.mode = Some(if citus {
                ContextMode::Citus
            } else {
                ContextMode::Postgres
            });
        }
        self.build().map_err(BuildError::Config)
    }
}

/// Why [`RlsPoolBuilder::build_detecting`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is invalid.
    Config(ConfigError),
    /// The database could not be asked.
    Db(DbError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => fmt::Display::fmt(e, f),
            Self::Db(e) => write!(f, "rls-pool: cannot detect the context mode: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Db(e) => Some(e),
        }
    }
}

impl RlsPool {
    /// Starts building an `RlsPool` over `pool`, whose connections must log in as the
    /// application role (check it with [`doctor`](Self::doctor)).
    pub fn builder(pool: Pool) -> RlsPoolBuilder {
        RlsPoolBuilder {
            pool,
            mode: None,
            checkout_timeout: Duration::from_secs(2),
            tenant_wait: Duration::from_secs(1),
            per_tenant_caps: true,
            rollback_timeout: Duration::from_secs(5),
            prepared_context: false,
            database_pool_size: 4,
            max_database_pools: 32,
            database_pool_idle: Duration::from_secs(300),
            factory: None,
        }
    }

    /// An `RlsPool` in [`ContextMode::Postgres`] with default settings.
    pub fn new(pool: Pool) -> Self {
        Self::builder(pool)
            .build()
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }

    /// The context mode in use.
    pub fn mode(&self) -> ContextMode {
        self.inner.mode
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A lazy handle for `tenant`: no connection is taken until a transaction begins.
    pub fn for_tenant(&self, tenant: Arc<Tenant>) -> TenantDb {
        TenantDb::new(self.inner.clone(), tenant, Access::ReadWrite)
    }

    /// Runs the preflight checks of DESIGN.md invariant 2 over a connection of this pool.
    pub async fn doctor(&self) -> DoctorReport {
        match checkout(&self.inner.pool, self.inner.checkout_timeout).await {
            Ok(client) => doctor::run(&client, self.inner.mode).await,
            Err(e) => DoctorReport::unreachable(&e),
        }
    }

    /// How many database-placement pools are open.
    pub fn database_pool_count(&self) -> usize {
        self.inner.databases.len()
    }
}

impl PoolInner {
    /// A slot of the tenant's concurrency cap, waiting at most `tenant_wait`.
    pub(crate) async fn tenant_slot(
        &self,
        tenant: &Tenant,
        timer: &mut Timer<'_>,
    ) -> Result<Option<OwnedSemaphorePermit>, DbError> {
        if !self.per_tenant_caps {
            return Ok(None);
        }
        let Some(cap) = tenant.limits().max_concurrent_transactions else {
            return Ok(None);
        };
        let cap = cap.get();
        let semaphore = {
            let mut caps = self.caps.lock().unwrap_or_else(|p| p.into_inner());
            if caps.len() > 4096 {
                // Forget tenants with no transaction in flight.
                caps.retain(|_, (_, s)| Arc::strong_count(s) > 1);
            }
            let entry = caps
                .entry(tenant.id())
                .or_insert_with(|| (cap, Arc::new(Semaphore::new(cap as usize))));
            if entry.0 != cap {
                // The plan changed: new transactions use the new cap.
                *entry = (cap, Arc::new(Semaphore::new(cap as usize)));
            }
            entry.1.clone()
        };
        match timer
            .bound(self.tenant_wait, semaphore.acquire_owned())
            .await
        {
            Some(Ok(permit)) => Ok(Some(permit)),
            _ => {
                Err(DbError::new(DbErrorKind::TenantBusy).with_retry_after(Duration::from_secs(1)))
            }
        }
    }

    /// A connection for `tenant`'s placement.
    pub(crate) async fn checkout_for(
        &self,
        placement: &Placement,
        timer: &mut Timer<'_>,
    ) -> Result<Object, DbError> {
        match placement {
            Placement::Shared | Placement::Schema(_) => {
                checkout_with(&self.pool, self.checkout_timeout, timer).await
            }
            Placement::Database(dsn) => {
                let pool = self.databases.get(dsn)?;
                checkout_with(&pool, self.checkout_timeout, timer).await
            }
        }
    }
}

/// A pooled connection, waiting at most `timeout` (never an unbounded queue).
pub(crate) async fn checkout(pool: &Pool, timeout: Duration) -> Result<Object, DbError> {
    let slot = std::pin::pin!(None);
    checkout_with(pool, timeout, &mut Timer::new(slot)).await
}

/// [`checkout`] on a call's shared timer.
async fn checkout_with(
    pool: &Pool,
    timeout: Duration,
    timer: &mut Timer<'_>,
) -> Result<Object, DbError> {
    match timer.bound(timeout, pool.get()).await {
        Some(Ok(object)) => Ok(object),
        Some(Err(PoolError::Backend(e))) => Err(DbError::from_pg(e)),
        Some(Err(PoolError::Timeout(_))) | None => {
            Err(DbError::new(DbErrorKind::PoolExhausted).with_retry_after(Duration::from_secs(1)))
        }
        Some(Err(e)) => Err(DbError::new(DbErrorKind::Unavailable).with_source(e.to_string())),
    }
}

fn default_database_pool(dsn: &str, size: usize) -> Result<Pool, DbError> {
    // The DSN may hold a password: never put it in an error.
    let config: tokio_postgres::Config = dsn.parse().map_err(|_| {
        DbError::new(DbErrorKind::Internal)
            .with_source("invalid connection string in the tenant's database placement")
    })?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(size).build().map_err(|e| {
        DbError::new(DbErrorKind::Internal).with_source(format!("database placement pool: {e}"))
    })
}

/// One pool per database-placement DSN, created on first use, bounded and evicted when idle.
struct DatabasePools {
    max: usize,
    idle: Duration,
    factory: DatabasePoolFactory,
    pools: Mutex<HashMap<Box<str>, (Pool, Instant)>>,
}

impl DatabasePools {
    fn len(&self) -> usize {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn get(&self, dsn: &str) -> Result<Pool, DbError> {
        let now = Instant::now();
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((pool, used)) = pools.get_mut(dsn) {
            *used = now;
            return Ok(pool.clone());
        }
        let in_use = |p: &Pool| {
            let s = p.status();
            s.size > s.available
        };
        pools.retain(|_, (p, used)| in_use(p) || now.duration_since(*used) < self.idle);
        if pools.len() >= self.max {
            // Evict the least recently used; its checked-out connections finish their
            // transactions and are then closed, not returned.
            if let Some(oldest) = pools
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                if let Some((p, _)) = pools.remove(&oldest) {
                    p.close();
                }
            }
        }
        let pool = (self.factory)(dsn)?;
        pools.insert(dsn.into(), (pool.clone(), now));
        Ok(pool)
    }
}
