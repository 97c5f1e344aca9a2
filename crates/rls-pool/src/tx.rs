//! [`TenantDb`] (the lazy per-request handle) and [`TenantTx`] (one tenant transaction).
//!
//! Opening a transaction sends nothing: `BEGIN`, the tenant context and the plan's
//! `statement_timeout` go out with the first statement, pipelined on the connection, so a
//! scoped read costs one network round trip. A transaction that is dropped before
//! [`TenantTx::commit`] or [`TenantTx::rollback`] finished (an error, a panic, a dropped
//! request future) never returns its connection to the pool with a transaction open: a
//! background task holds the connection, sends `ROLLBACK`, and only then releases it; if that
//! fails or cannot run, the connection is closed instead.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use deadpool_postgres::Object;
use futures_util::future::{join, join3, join_all};
use tenantry_core::{Placement, Tenant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement, ToStatement};

use crate::context::{self, Access, ContextPlan};
use crate::error::{DbError, DbErrorKind};
use crate::fused;
use crate::pool::PoolInner;
use crate::timer::Timer;

/// Nothing sent yet: the connection is clean.
const NOT_BEGUN: u8 = 0;
/// `BEGIN` may have been sent and not yet ended.
const OPEN: u8 = 1;
/// A statement failed inside the transaction: only a rollback is possible.
const FAILED: u8 = 2;
/// Committed or rolled back: the connection is idle and carries no tenant.
const DONE: u8 = 3;
/// The connection broke: it must not be reused.
const BROKEN: u8 = 4;

/// A lazy, cheap-to-clone database handle for one tenant, put in the request extensions by
/// [`RlsLayer`](crate::RlsLayer). No connection is taken until a transaction begins.
#[derive(Clone)]
pub struct TenantDb {
    pool: Arc<PoolInner>,
    tenant: Arc<Tenant>,
    access: Access,
}

impl fmt::Debug for TenantDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantDb")
            .field("tenant", &self.tenant.id())
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl TenantDb {
    pub(crate) fn new(pool: Arc<PoolInner>, tenant: Arc<Tenant>, access: Access) -> Self {
        Self {
            pool,
            tenant,
            access,
        }
    }

    /// The tenant this handle is scoped to.
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }

    /// The access [`begin`](Self::begin) uses.
    pub fn access(&self) -> Access {
        self.access
    }

    /// This handle with another default access (for example read-only for safe methods).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Opens a transaction with this handle's default access. Takes a slot of the tenant's
    /// concurrency cap and a pooled connection (each with a bounded wait); sends nothing.
    pub async fn begin(&self) -> Result<TenantTx, DbError> {
        self.begin_with(self.access).await
    }

    /// Opens a `BEGIN READ ONLY` transaction.
    pub async fn begin_read_only(&self) -> Result<TenantTx, DbError> {
        self.begin_with(Access::ReadOnly).await
    }

    /// Opens a transaction with the given access.
    pub async fn begin_with(&self, access: Access) -> Result<TenantTx, DbError> {
        let plan = self.plan_for(access)?;
        let slot = pin!(None);
        self.open(plan, &mut Timer::new(slot)).await
    }

    /// What opens this tenant's transaction (no I/O).
    fn plan_for(&self, access: Access) -> Result<ContextPlan, DbError> {
        let schema = match self.tenant.placement() {
            Placement::Schema(name) => Some(&**name),
            Placement::Shared | Placement::Database(_) => None,
        };
        ContextPlan::new(
            self.pool.mode,
            access,
            self.tenant.id(),
            self.tenant.limits().statement_timeout,
            schema,
        )
    }

    /// Takes a slot of the tenant's cap and a pooled connection for `plan`, each wait bounded
    /// on `timer`; sends nothing.
    async fn open(&self, plan: ContextPlan, timer: &mut Timer<'_>) -> Result<TenantTx, DbError> {
        let permit = self.pool.tenant_slot(&self.tenant, timer).await?;
        let client = self
            .pool
            .checkout_for(self.tenant.placement(), timer)
            .await?;
        Ok(TenantTx {
            handle: TxHandle {
                inner: Arc::new(TxInner {
                    client: Some(client),
                    permit,
                    plan,
                    state: AtomicU8::new(NOT_BEGUN),
                    op_lock: tokio::sync::Mutex::new(()),
                    tenant: self.tenant.clone(),
                    pool: self.pool.clone(),
                }),
            },
        })
    }

    /// Runs `f` in a transaction: commits if it returns `Ok`, rolls back if it returns
    /// `Err`; a panic or a dropped future rolls back too.
    ///
    /// ```no_run
    /// # async fn demo(db: tenantry_rls_pool::TenantDb) -> Result<(), tenantry_rls_pool::DbError> {
    /// let id = db.tenant().id();
    /// let titles: Vec<String> = db
    ///     .run(|tx| async move {
    ///         let rows = tx
    ///             .query("SELECT title FROM documents WHERE tenant_id = $1", &[id.as_uuid()])
    ///             .await?;
    ///         Ok::<_, tenantry_rls_pool::DbError>(rows.iter().map(|r| r.get(0)).collect())
    ///     })
    ///     .await?;
    /// # let _ = titles; Ok(()) }
    /// ```
    pub async fn run<F, Fut, T, E>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(TxHandle) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<DbError>,
    {
        let tx = self.begin().await?;
        match f(tx.handle.clone()).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                // The handler's error is the one worth reporting; a failed rollback discards
                // the connection on drop anyway.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// One statement in its own transaction: `BEGIN`, the context, the statement and
    /// `COMMIT` sent together, so it costs one round trip. Parameters are typed explicitly,
    /// so no statement is prepared (works through pgbouncer in transaction mode). Should the
    /// statement fail, the server turns the `COMMIT` into a rollback.
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, DbError> {
        let tx = self.begin().await?;
        tx.handle
            .inner
            .one_shot(|c| c.query_typed(sql, params))
            .await
    }

    /// One statement in its own transaction, with inferred parameter types: `BEGIN`, the
    /// context and the statement in one round trip (plus one to prepare a string statement,
    /// inside the transaction), then `COMMIT`. `COMMIT` is not pipelined here: a string
    /// statement is bound only after it is prepared, and must not run after the `COMMIT`.
    /// [`query_typed`](Self::query_typed) saves both extra round trips.
    pub async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError>
    where
        T: ?Sized + ToStatement,
    {
        let tx = self.begin().await?;
        let rows = tx.query(statement, params).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// One statement in its own transaction, prepared once per pooled connection (deadpool's
    /// statement cache) and then sent with `BEGIN`, the context and `COMMIT` in one round
    /// trip: the server binds and executes it without parsing or planning it again. The
    /// fastest form for a hot read. The first use on a connection costs one extra round trip
    /// to prepare it (outside the transaction: a prepare reads no data). Not for pgbouncer in
    /// transaction mode before 1.21 (see [`TxHandle::prepare_cached`]).
    pub async fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let tx = self.begin().await?;
        let inner = &tx.handle.inner;
        let statement = inner
            .object()?
            .prepare_cached(sql)
            .await
            .map_err(DbError::from_pg)?;
        let statement = &statement;
        inner.one_shot(move |c| c.query(statement, params)).await
    }

    /// A read in one protocol cycle: the statement is sent as one prepared statement that
    /// sets the tenant context itself, before it reads any row (`set_config(.., true)` with
    /// the tenant id bound as a parameter, in the count of an outer `LIMIT`), and runs in its
    /// own implicit transaction, so the context ends with it. The fastest form for a hot
    /// read: where [`query_cached`](Self::query_cached) sends `BEGIN`, the context, the
    /// statement and `COMMIT` (four cycles of the server's protocol, one round trip), this
    /// sends one, and the server runs one statement. Rows, column names and order are the
    /// statement's own.
    ///
    /// - Queries only (`SELECT`, `VALUES`, `TABLE`, `WITH .. SELECT`): the statement becomes a
    ///   subquery, where PostgreSQL refuses `INSERT`, `UPDATE`, `DELETE` and data-modifying
    ///   `WITH`. Functions it calls run as in any other statement, under row-level security.
    /// - The first use of a statement costs one round trip per pool (a prepare, to learn how
    ///   many parameters it takes) and one per connection (to prepare the wrapped
    ///   statement). Nothing else is left on the connection: no function, no temporary object.
    ///   A prepared statement, so not for pgbouncer in transaction mode before 1.21 (see
    ///   [`TxHandle::prepare_cached`]).
    /// - The plan's `statement_timeout` cannot be set from inside the statement (PostgreSQL
    ///   arms it when the statement starts), so it is enforced here: past it, the call is
    ///   cancelled (best effort, over a plain connection) and its connection closed, and the
    ///   error is [`DbErrorKind::Timeout`]. The role's own `statement_timeout`, if any, still
    ///   applies on the server.
    /// - The wrapped statement never runs in parallel workers (`set_config` is parallel
    ///   unsafe).
    /// - It is planned as any prepared statement. With PostgreSQL's default
    ///   `plan_cache_mode`, a statement whose generic plan it cannot cost well (a `LIMIT $n`)
    ///   is planned again on every call, its policies included; `plan_cache_mode =
    ///   force_generic_plan` on the role or the pool's connections avoids that, unless a
    ///   statement's best plan depends on its parameter values.
    /// - In [`ContextMode::Citus`](crate::ContextMode::Citus) and for tenants placed in their
    ///   own schema, this is [`query_cached`](Self::query_cached).
    ///
    /// ```no_run
    /// # async fn demo(db: tenantry_rls_pool::TenantDb) -> Result<(), tenantry_rls_pool::DbError> {
    /// let id = db.tenant().id();
    /// let rows = db
    ///     .query_fused(
    ///         "SELECT id, title FROM documents WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 50",
    ///         &[id.as_uuid()],
    ///     )
    ///     .await?;
    /// let titles: Vec<String> = rows.iter().map(|r| r.get("title")).collect();
    /// # let _ = titles; Ok(()) }
    /// ```
    pub async fn query_fused(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        // Decided before any checkout: the fallback takes its own slot and connection.
        if !context::fusable(self.pool.mode, self.tenant.placement()) {
            return self.query_cached(sql, params).await;
        }
        // One timer for the waits for a slot and a connection and for the statement.
        let slot = pin!(None);
        let mut timer = Timer::new(slot);
        let tx = self.open(ContextPlan::unsent(), &mut timer).await?;
        tx.handle.inner.fused(sql, params, &mut timer).await
    }

    /// One write (or any statement) in its own transaction, returning the rows affected;
    /// one round trip, like [`query_typed`](Self::query_typed).
    pub async fn execute_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, DbError> {
        let tx = self.begin().await?;
        tx.handle
            .inner
            .one_shot(|c| c.execute_typed(sql, params))
            .await
    }
}

/// One tenant transaction. Statements go through [`TxHandle`] (this derefs to it).
///
/// Commit is explicit. Dropping it without [`commit`](Self::commit) or
/// [`rollback`](Self::rollback) rolls back in the background before its connection goes back
/// to the pool (or closes the connection if that is impossible).
pub struct TenantTx {
    handle: TxHandle,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.handle.inner.tenant.id())
            .finish_non_exhaustive()
    }
}

impl Deref for TenantTx {
    type Target = TxHandle;

    fn deref(&self) -> &TxHandle {
        &self.handle
    }
}

impl TenantTx {
    /// A cloneable handle to this transaction's statements (for closures and spawned work).
    pub fn handle(&self) -> TxHandle {
        self.handle.clone()
    }

    /// Commits. Fails with [`DbErrorKind::Aborted`] (after rolling back) if a statement of
    /// this transaction failed.
    pub async fn commit(self) -> Result<(), DbError> {
        self.handle.inner.finish(true).await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), DbError> {
        self.handle.inner.finish(false).await
    }
}

/// The statements of a [`TenantTx`]. Cloneable; the transaction ends when the `TenantTx`
/// commits or rolls back, and a clone used afterwards gets [`DbErrorKind::Closed`].
#[derive(Clone)]
pub struct TxHandle {
    inner: Arc<TxInner>,
}

impl fmt::Debug for TxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxHandle")
            .field("tenant", &self.inner.tenant.id())
            .finish_non_exhaustive()
    }
}

impl TxHandle {
    /// The tenant of this transaction.
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.inner.tenant
    }

    /// Runs a query and returns its rows. The first statement of the transaction carries
    /// `BEGIN` and the context in the same round trip.
    pub async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError>
    where
        T: ?Sized + ToStatement,
    {
        self.inner.op(|c| c.query(statement, params)).await
    }

    /// Runs a query that returns exactly one row.
    pub async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError>
    where
        T: ?Sized + ToStatement,
    {
        self.inner.op(|c| c.query_one(statement, params)).await
    }

    /// Runs a query that returns at most one row.
    pub async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError>
    where
        T: ?Sized + ToStatement,
    {
        self.inner.op(|c| c.query_opt(statement, params)).await
    }

    /// Runs a query with explicitly typed parameters: no prepared statement, one round trip.
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, DbError> {
        self.inner.op(|c| c.query_typed(sql, params)).await
    }

    /// Executes a statement and returns the number of rows affected.
    pub async fn execute<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError>
    where
        T: ?Sized + ToStatement,
    {
        self.inner.op(|c| c.execute(statement, params)).await
    }

    /// Executes a statement with explicitly typed parameters.
    pub async fn execute_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, DbError> {
        self.inner.op(|c| c.execute_typed(sql, params)).await
    }

    /// Prepares a statement, cached on the pooled connection (deadpool's statement cache), so
    /// later transactions on that connection skip the parse. Not for pgbouncer in transaction
    /// mode before 1.21: there a cached statement may meet another server connection; use the
    /// `*_typed` methods, or a string statement (prepared and closed inside its transaction).
    pub async fn prepare_cached(&self, sql: &str) -> Result<Statement, DbError> {
        let inner = &self.inner;
        let client = inner.object()?;
        // Preparing is not data access, but under pgbouncer it must happen inside the
        // transaction that uses it: open the transaction with it.
        inner
            .op(|_| async move { client.prepare_cached(sql).await })
            .await
    }
}

struct TxInner {
    client: Option<Object>,
    permit: Option<OwnedSemaphorePermit>,
    plan: ContextPlan,
    state: AtomicU8,
    op_lock: tokio::sync::Mutex<()>,
    tenant: Arc<Tenant>,
    pool: Arc<PoolInner>,
}

impl TxInner {
    fn object(&self) -> Result<&Object, DbError> {
        self.client
            .as_ref()
            .ok_or_else(|| DbError::new(DbErrorKind::Closed))
    }

    /// A statement failed inside the open transaction: only a rollback is possible, unless
    /// the connection itself broke.
    fn record_failure(&self, e: &tokio_postgres::Error) {
        let state = if server_answered(e) { FAILED } else { BROKEN };
        self.state.store(state, Ordering::SeqCst);
    }

    /// An error that ended the transaction on the server (rolled back there): the connection
    /// is idle, unless the error was the connection itself.
    fn record_ended(&self, e: &tokio_postgres::Error) {
        let state = if server_answered(e) { DONE } else { BROKEN };
        self.state.store(state, Ordering::SeqCst);
    }

    /// The context statement prepared on this connection, when the pool is configured so.
    /// On a cache hit this sends nothing; on a miss it costs one round trip, once per
    /// connection, before the transaction (a prepare reads no data).
    async fn prepared_context(&self) -> Result<Option<Statement>, DbError> {
        match (&self.plan.typed, self.pool.prepared_context) {
            (Some((sql, params)), true) => {
                let types = [Type::TEXT, Type::TEXT, Type::TEXT];
                let statement = self
                    .object()?
                    .prepare_typed_cached(sql, &types[..params.len()])
                    .await
                    .map_err(DbError::from_pg)?;
                Ok(Some(statement))
            }
            _ => Ok(None),
        }
    }

    /// The statements that open the transaction, as futures that send on first poll.
    fn opening<'a>(
        &'a self,
        client: &'a Client,
        prepared: Option<&'a Statement>,
    ) -> (
        impl Future<Output = Result<(), tokio_postgres::Error>> + 'a,
        impl Future<Output = Result<(), tokio_postgres::Error>> + 'a,
    ) {
        let simple = join_all(self.plan.simple.iter().map(|s| client.batch_execute(s)));
        let simple = async move { simple.await.into_iter().collect::<Result<(), _>>() };
        let typed = async move {
            match (&self.plan.typed, prepared) {
                (Some((_, params)), Some(statement)) => {
                    let params: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                    client.query(statement, &params).await.map(drop)
                }
                (Some((sql, params)), None) => {
                    let params: Vec<(&(dyn ToSql + Sync), Type)> = params
                        .iter()
                        .map(|p| (p as &(dyn ToSql + Sync), Type::TEXT))
                        .collect();
                    client.query_typed(sql, &params).await.map(drop)
                }
                (None, _) => Ok(()),
            }
        };
        (simple, typed)
    }

    /// Runs one operation, opening the transaction with it (pipelined) if needed.
    async fn op<'a, F, Fut, R>(&'a self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&'a Client) -> Fut,
        Fut: Future<Output = Result<R, tokio_postgres::Error>> + 'a,
    {
        let _serial = self.op_lock.lock().await;
        let client: &Client = self.object()?;
        match self.state.load(Ordering::SeqCst) {
            OPEN => {}
            NOT_BEGUN => {
                let prepared = self.prepared_context().await?;
                // Marked before anything is sent: a drop from here on rolls back.
                self.state.store(OPEN, Ordering::SeqCst);
                let (simple, typed) = self.opening(client, prepared.as_ref());
                // join (not try_join): every response is awaited, so nothing is left in
                // flight, and an error of BEGIN or the context wins over the statement's
                // result, which is then discarded.
                let (b, c, r) = join3(simple, typed, f(client)).await;
                return match b.and(c) {
                    Err(e) => {
                        self.record_failure(&e);
                        Err(DbError::from_pg(e))
                    }
                    Ok(()) => r.map_err(|e| {
                        self.record_failure(&e);
                        DbError::from_pg(e)
                    }),
                };
            }
            FAILED => return Err(DbError::new(DbErrorKind::Aborted)),
            _ => return Err(DbError::new(DbErrorKind::Closed)),
        }
        f(client).await.map_err(|e| {
            self.record_failure(&e);
            DbError::from_pg(e)
        })
    }

    /// `BEGIN`, context, one statement and `COMMIT`, all in one round trip.
    async fn one_shot<'a, F, Fut, R>(&'a self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&'a Client) -> Fut,
        Fut: Future<Output = Result<R, tokio_postgres::Error>> + 'a,
    {
        let _serial = self.op_lock.lock().await;
        let client: &Client = self.object()?;
        if self.state.load(Ordering::SeqCst) != NOT_BEGUN {
            return Err(DbError::new(DbErrorKind::Closed));
        }
        let prepared = self.prepared_context().await?;
        self.state.store(OPEN, Ordering::SeqCst);
        let (simple, typed) = self.opening(client, prepared.as_ref());
        // If anything before it failed, the server turns this COMMIT into a ROLLBACK.
        let commit = client.batch_execute("COMMIT");
        let ((b, c), (r, end)) = join(join(simple, typed), join(f(client), commit)).await;
        let first_error = b.and(c).err();
        let result = match first_error {
            Some(e) => Err(e),
            None => r,
        };
        match (&result, end) {
            (Ok(_), Ok(())) => {
                self.state.store(DONE, Ordering::SeqCst);
                result.map_err(DbError::from_pg)
            }
            (Err(e), Ok(())) => {
                self.record_ended(e);
                result.map_err(DbError::from_pg)
            }
            (_, Err(end)) => {
                self.record_failure(&end);
                match result {
                    Err(e) => Err(DbError::from_pg(e)),
                    Ok(_) => Err(DbError::from_pg(end)),
                }
            }
        }
    }

    /// The fused call (see [`TenantDb::query_fused`]): nothing else is sent, and no
    /// transaction is opened, so a drop at any point leaves nothing to undo: the call's
    /// implicit transaction ends at its own `Sync`, on the server, with the context.
    async fn fused(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        timer: &mut Timer<'_>,
    ) -> Result<Vec<Row>, DbError> {
        let _serial = self.op_lock.lock().await;
        let object = self.object()?;
        if self.state.load(Ordering::SeqCst) != NOT_BEGUN {
            return Err(DbError::new(DbErrorKind::Closed));
        }
        let shape = match self.pool.fused.get(sql) {
            Some(shape) => shape,
            None => {
                let shape = Arc::new(fused::shape_of(object, sql).await?);
                self.pool.fused.insert(sql, shape.clone());
                shape
            }
        };
        // The id as text for `set_config`, formatted on the stack.
        let mut text = [0u8; 36];
        let tenant: &str = self
            .tenant
            .id()
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut text);
        let mut all: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(params.len() + 1);
        all.extend_from_slice(params);
        all.push(&tenant);
        let limit = self.tenant.limits().statement_timeout;
        let statement = object
            .prepare_cached(&shape.call)
            .await
            .map_err(DbError::from_pg)?;
        match timer.bound(limit, object.query(&statement, &all)).await {
            Some(Ok(rows)) => {
                self.state.store(DONE, Ordering::SeqCst);
                Ok(rows)
            }
            Some(Err(e)) => {
                // A statement error ends its implicit transaction.
                self.record_ended(&e);
                Err(DbError::from_pg(e))
            }
            None => {
                // Still running on the server: ask it to stop, and never reuse this
                // connection (it is closed on drop).
                self.state.store(BROKEN, Ordering::SeqCst);
                let cancel = object.cancel_token();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
                    });
                }
                Err(DbError::new(DbErrorKind::Timeout)
                    .with_source("statement_timeout of the tenant's plan (query_fused)"))
            }
        }
    }

    async fn finish(&self, commit: bool) -> Result<(), DbError> {
        let _serial = self.op_lock.lock().await;
        let client: &Client = self.object()?;
        match self.state.load(Ordering::SeqCst) {
            NOT_BEGUN => {
                // Nothing was sent: nothing to end.
                self.state.store(DONE, Ordering::SeqCst);
                Ok(())
            }
            OPEN => {
                let sql = if commit { "COMMIT" } else { "ROLLBACK" };
                match client.batch_execute(sql).await {
                    Ok(()) => {
                        self.state.store(DONE, Ordering::SeqCst);
                        Ok(())
                    }
                    Err(e) => {
                        // A failed COMMIT (serialization, deferred constraint) ends the
                        // transaction on the server; anything else leaves it to the drop.
                        self.record_ended(&e);
                        Err(DbError::from_pg(e))
                    }
                }
            }
            FAILED => {
                client.batch_execute("ROLLBACK").await.map_err(|e| {
                    self.state.store(BROKEN, Ordering::SeqCst);
                    DbError::from_pg(e)
                })?;
                self.state.store(DONE, Ordering::SeqCst);
                if commit {
                    Err(DbError::new(DbErrorKind::Aborted))
                } else {
                    Ok(())
                }
            }
            _ => Err(DbError::new(DbErrorKind::Closed)),
        }
    }
}

impl Drop for TxInner {
    fn drop(&mut self) {
        let state = *self.state.get_mut();
        let Some(object) = self.client.take() else {
            return;
        };
        match state {
            // Clean: the object goes back to the pool by its own drop.
            NOT_BEGUN | DONE => drop(object),
            OPEN | FAILED => {
                let permit = self.permit.take();
                let timeout = self.pool.rollback_timeout;
                let guard = DiscardUnlessReleased(Some(object));
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        // The task owns the connection until ROLLBACK has completed, so the
                        // pool cannot hand it out earlier; if the task is dropped (runtime
                        // shutting down) the guard closes the connection instead.
                        runtime.spawn(async move {
                            let mut guard = guard;
                            let rolled_back = match guard.0.as_ref() {
                                Some(object) => matches!(
                                    tokio::time::timeout(timeout, object.batch_execute("ROLLBACK"))
                                        .await,
                                    Ok(Ok(()))
                                ),
                                None => false,
                            };
                            if rolled_back {
                                guard.release();
                            } else {
                                tracing::warn!(
                                    "rls-pool: rollback of an abandoned transaction failed; \
                                     closing its connection"
                                );
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => drop(guard),
                }
            }
            _ => drop(DiscardUnlessReleased(Some(object))),
        }
    }
}

/// Whether the server answered with an error (the connection still works).
fn server_answered(e: &tokio_postgres::Error) -> bool {
    e.code().is_some() && !e.is_closed()
}

/// Closes the connection (takes it out of the pool) unless released.
struct DiscardUnlessReleased(Option<Object>);

impl DiscardUnlessReleased {
    fn release(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for DiscardUnlessReleased {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            // Detached from the pool: the client and its connection close here.
            drop(Object::take(object));
        }
    }
}
