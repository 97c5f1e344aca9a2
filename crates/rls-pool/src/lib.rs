//! Database-enforced tenant isolation on `deadpool-postgres`, at one round trip.
//!
//! - [`RlsPool`] wraps a pool of application-role connections; [`RlsLayer`] puts a lazy
//!   [`TenantDb`] for the resolved tenant in the request extensions. No connection is taken
//!   until the handler begins a transaction.
//! - [`TenantDb::begin`] gives a [`TenantTx`]: `BEGIN`, the tenant context and
//!   `SET LOCAL statement_timeout` from the tenant's plan are sent pipelined with the first
//!   statement, so a scoped read costs one network round trip. [`TenantDb::query_typed`]
//!   also pipelines the `COMMIT`: a one-statement transaction in one round trip.
//! - [`TenantDb::query_fused`] goes further for hot reads: one statement, one protocol cycle
//!   (the statement wrapped so that it sets the context itself before it reads a row), where
//!   the transaction forms cost the server four.
//! - Dropping a `TenantTx` without commit (an error, a panic, a dropped request future)
//!   never returns its connection with a transaction open or a tenant set: it is rolled back
//!   before it goes back to the pool, or closed.
//! - [`ContextMode::Postgres`] binds the tenant id as a parameter of `set_config`;
//!   [`ContextMode::Citus`] sends `SET LOCAL app.tenant_id = '<uuid>'` formatted only from a
//!   parsed [`TenantId`](tenantry_core::TenantId).
//! - Per-tenant fairness: at most `max_concurrent_transactions` transactions of one tenant at
//!   once, with a bounded wait, then 503 `tenant_busy` with `Retry-After`; pool exhaustion is a
//!   bounded wait too, then 503.
//! - Placement: a tenant's rows live in the shared tables, in its own schema, or in its own
//!   database; handlers do not change.
//! - [`RlsPool::doctor`] checks DESIGN.md invariant 2 at start-up.
//! - [`PgTenantStore`] is the [`TenantStore`](tenantry_core::TenantStore) over PostgreSQL.
//! - [`DbError::to_problem`] maps database errors to problem+json without leaking
//!   constraint names or values.
//!
//! # Round trips and pgbouncer
//!
//! | call | statements sent together | round trips |
//! |---|---|---|
//! | [`TenantDb::query_typed`] / [`TenantDb::execute_typed`] | `BEGIN`, context, statement, `COMMIT` | 1 |
//! | [`TenantDb::begin`], then [`TxHandle::query_typed`], then [`TenantTx::commit`] | `BEGIN`, context, statement; then `COMMIT` | 2 |
//! | [`TxHandle::query`] with a string as the first statement | `BEGIN`, context, `Parse`; then the execution | +1 |
//! | [`TenantDb::query_fused`] (reads) | one statement that sets the context itself | 1, and 1 server cycle instead of 4 |
//!
//! The `*_typed` methods and string statements work through pgbouncer in transaction mode:
//! nothing prepared outlives its transaction. [`TxHandle::prepare_cached`],
//! [`TenantDb::query_cached`] and [`TenantDb::query_fused`] do not.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod context;
mod doctor;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod fused;
mod layer;
mod pool;
mod store;
mod timer;
mod tx;

pub use context::{Access, ContextMode};
pub use doctor::{Check, DoctorReport};
pub use error::{DbError, DbErrorKind, FORBIDDEN};
pub use fused::fused_statement;
pub use layer::{Rls, RlsLayer};
pub use pool::{BuildError, ConfigError, DatabasePoolFactory, RlsPool, RlsPoolBuilder};
pub use store::PgTenantStore;
pub use tx::{TenantDb, TenantTx, TxHandle};
