//! One-cycle scoped reads ([`TenantDb::query_fused`](crate::TenantDb::query_fused)).
//!
//! tokio-postgres ends every statement with a `Sync`, and each `Sync` costs the server (and the
//! client) a full protocol cycle: `BEGIN`, the context, the query and `COMMIT` pipelined are
//! still four. Here the read is sent as one statement that carries its own context:
//!
//! ```sql
//! SELECT * FROM (
//! <the statement>
//! ) AS tenantry_statement
//! LIMIT CASE WHEN pg_catalog.set_config('app.tenant_id', $<n + 1>, true) IS NULL THEN 0 END
//! ```
//!
//! with the tenant id bound as the last parameter. A `LIMIT` over a subquery is the top node
//! of the plan, and the executor's `Limit` node evaluates its count when it is first called,
//! before it asks the node below it for a row: the context is set before anything of the
//! statement runs, its own `InitPlan`s (an uncorrelated `EXISTS`) included, since those are
//! evaluated when a node below first needs them. The count is `NULL`, that is no limit, once
//! the context is set, and 0 if it could not be. Nothing is constant-folded at planning time
//! (`set_config` is volatile), and the `Limit` stays (its count is no constant). The statement
//! runs in its own implicit transaction, which ends at its `Sync`, so the context
//! (`set_config(.., true)`) is gone when the call returns, exactly as after a `COMMIT`.
//!
//! An earlier form, a one-time filter `WHERE (SELECT set_config(..)) IS NOT NULL` over the
//! statement wrapped in `OFFSET 0`, made the server do about 12,000 more instructions per call
//! (callgrind, a 50-row read): the `InitPlan`, a `Result` node and a second subquery level.
//!
//! Why ordering cannot leak: inside that transaction the context is either not yet set (row
//! level security then matches no row) or set to this tenant. A part of a statement that ran
//! before the context was set could only miss rows, never see another tenant's; the tests
//! check that the usual shapes (joins, aggregates, CTEs, scalar subqueries, `LIMIT (SELECT
//! ..)`, set-returning functions, windows, row locks) miss nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio_postgres::Client;

use crate::error::{DbError, DbErrorKind};

/// PostgreSQL's limit on a statement's parameters, the tenant id included.
const MAX_PARAMS: usize = 65_535;
/// Statements remembered per pool; applications have a fixed set of statements, so reaching
/// this means statements are built dynamically, and the map starts over.
const MAX_SHAPES: usize = 4096;

/// What one statement is sent as.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The wrapped statement, the tenant id its last parameter.
    pub(crate) call: String,
}

/// Shapes by statement text, shared by every connection of a pool (a statement's parameter
/// count is the same in every database of the same schema). Read on every call from every
/// worker thread, written once per statement: a read lock, so calls never wait on each other.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    // Keyed by the application's own statements, hashed on every call: foldhash, not SipHash
    // (about 500 instructions for a statement of a hundred-odd bytes).
    map: RwLock<HashMap<String, Arc<Shape>, foldhash::fast::RandomState>>,
}

impl Shapes {
    pub(crate) fn get(&self, sql: &str) -> Option<Arc<Shape>> {
        self.map.read().ok()?.get(sql).cloned()
    }

    pub(crate) fn insert(&self, sql: &str, shape: Arc<Shape>) {
        if let Ok(mut map) = self.map.write() {
            if map.len() >= MAX_SHAPES {
                map.clear();
            }
            map.insert(sql.to_owned(), shape);
        }
    }
}

fn refused(why: &'static str) -> DbError {
    DbError::new(DbErrorKind::Internal).with_source(why)
}

/// The statement without trailing semicolons and whitespace.
fn body_of(sql: &str) -> &str {
    sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// Wraps a statement of `params` parameters that returns rows.
pub(crate) fn build(sql: &str, params: usize, returns_rows: bool) -> Result<Shape, DbError> {
    if !returns_rows {
        return Err(refused("query_fused needs a statement that returns rows"));
    }
    if params + 1 > MAX_PARAMS {
        return Err(refused("query_fused: too many parameters (at most 65,534)"));
    }
    Ok(Shape {
        call: fused_statement(sql, params),
    })
}

/// The statement [`TenantDb::query_fused`](crate::TenantDb::query_fused) sends for `sql`, a
/// query of `params` parameters: `sql` wrapped so that it sets the tenant context itself, the
/// tenant id (as text) bound as parameter `params + 1`. For `EXPLAIN`, for finding the
/// statement in `pg_stat_statements` or the server's log, and for benchmarks that send it
/// without the pool.
///
/// ```
/// let sql = "SELECT id, title FROM documents WHERE tenant_id = $1 LIMIT 50;";
/// assert_eq!(
///     tenantry_rls_pool::fused_statement(sql, 1),
///     "SELECT * FROM (\nSELECT id, title FROM documents WHERE tenant_id = $1 LIMIT 50\n) \
///      AS tenantry_statement LIMIT CASE WHEN \
///      pg_catalog.set_config('app.tenant_id', $2, true) IS NULL THEN 0 END",
/// );
/// ```
pub fn fused_statement(sql: &str, params: usize) -> String {
    // The newlines keep a trailing `-- comment` from swallowing the rest.
    format!(
        "SELECT * FROM (\n{}\n) AS tenantry_statement \
         LIMIT CASE WHEN pg_catalog.set_config('app.tenant_id', ${}, true) IS NULL THEN 0 END",
        body_of(sql),
        params + 1
    )
}

/// Prepares the statement once to learn how many parameters it takes and whether it returns
/// rows (one round trip, once per pool); the prepared statement itself is closed again.
pub(crate) async fn shape_of(client: &Client, sql: &str) -> Result<Shape, DbError> {
    let statement = client
        .prepare(body_of(sql))
        .await
        .map_err(DbError::from_pg)?;
    build(
        sql,
        statement.params().len(),
        !statement.columns().is_empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_the_last_parameter_of_the_outer_limit() {
        let shape = build(
            "SELECT id, title FROM documents WHERE tenant_id = $1 LIMIT $2 -- newest;  \n",
            2,
            true,
        )
        .unwrap();
        assert_eq!(
            shape.call,
            "SELECT * FROM (\nSELECT id, title FROM documents WHERE tenant_id = $1 \
             LIMIT $2 -- newest\n) AS tenantry_statement \
             LIMIT CASE WHEN pg_catalog.set_config('app.tenant_id', $3, true) IS NULL THEN 0 END"
        );
        let none = build("SELECT 1 AS a", 0, true).unwrap();
        assert!(none.call.contains("'app.tenant_id', $1, true"));
    }

    #[test]
    fn statements_that_cannot_be_wrapped_are_refused() {
        for (params, returns_rows) in [(0, false), (65_535, true)] {
            let err = build("UPDATE t SET a = 1", params, returns_rows).unwrap_err();
            assert_eq!(err.kind(), DbErrorKind::Internal);
        }
        assert!(build("SELECT $1", 65_534, true).is_ok());
    }
}
