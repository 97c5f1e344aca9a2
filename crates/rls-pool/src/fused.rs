//! One-cycle scoped reads ([`TenantDb::query_fused`](crate::TenantDb::query_fused)).
//!
//! tokio-postgres ends every statement with a `Sync`, and each `Sync` costs the server (and the
//! client) a full protocol cycle: `BEGIN`, the context, the query and `COMMIT` pipelined are
//! still four. Here the read is wrapped, once per connection, in a temporary PL/pgSQL function
//!
//! ```sql
//! CREATE FUNCTION pg_temp.tenantry_fused_<sha-256 of the SQL>(<parameter types>, text)
//!   RETURNS TABLE(<the statement's columns>) LANGUAGE plpgsql STABLE
//!   SET plan_cache_mode = force_generic_plan AS $tenantry_fused$
//! #variable_conflict use_column
//! BEGIN
//! PERFORM pg_catalog.set_config('app.tenant_id', $<n + 1>, true);
//! RETURN QUERY <the statement>
//! ;
//! END
//! $tenantry_fused$
//! ```
//!
//! and each call is one extended-protocol statement, `SELECT * FROM pg_temp.tenantry_fused_…($1,
//! …, $n + 1)`, with the tenant id bound as its last parameter. That statement runs in its own
//! implicit transaction, which ends at its `Sync`: the context is transaction-local
//! (`set_config(.., true)`) and gone when the call returns, exactly as after a `COMMIT`.
//! `STABLE` makes the function read-only (a write inside it fails with SQLSTATE 0A000), and it
//! runs with the caller's rights, so row-level security applies as usual.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::context::quote_ident;
use crate::error::{DbError, DbErrorKind};

/// The dollar-quote tag of the function body; a statement containing it is refused.
const TAG: &str = "$tenantry_fused$";
/// PostgreSQL's limit on function arguments (`FUNC_MAX_ARGS`), the tenant id included.
const MAX_ARGS: usize = 100;
/// Statement shapes remembered per pool; applications have a fixed set of statements, so
/// reaching this means statements are built dynamically, and the map starts over.
const MAX_SHAPES: usize = 4096;

/// What one statement needs wrapped: the function's definition and the call.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) ddl: String,
    pub(crate) call: String,
}

/// Shapes by statement text, shared by every connection of a pool (the definition is built
/// from type names, so it holds in every database of the same schema).
#[derive(Debug)]
pub(crate) struct Shapes {
    map: Mutex<HashMap<String, Arc<Shape>>>,
    /// Whether the functions force generic plans (see `RlsPoolBuilder::fused_generic_plans`).
    pub(crate) generic_plans: bool,
}

impl Shapes {
    pub(crate) fn new(generic_plans: bool) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            generic_plans,
        }
    }

    pub(crate) fn get(&self, sql: &str) -> Option<Arc<Shape>> {
        self.map.lock().ok()?.get(sql).cloned()
    }

    pub(crate) fn insert(&self, sql: &str, shape: Arc<Shape>) {
        if let Ok(mut map) = self.map.lock() {
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

/// The function's name: `tenantry_fused_` and 40 hex digits of the SHA-256 of the statement
/// and the plan setting (160 bits: distinct definitions never share a name).
pub(crate) fn function_name(body: &str, generic_plans: bool) -> String {
    let mut hasher = Sha256::new();
    hasher.update(body.as_bytes());
    hasher.update(if generic_plans {
        b"\0generic"
    } else {
        b"\0auto\0\0\0"
    });
    let digest = hasher.finalize();
    let mut name = String::from("tenantry_fused_");
    for byte in &digest[..20] {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

/// Builds the definition and the call from the statement's parameter and column types (as
/// SQL type names) and column names.
pub(crate) fn build(
    sql: &str,
    param_types: &[String],
    columns: &[(String, String)],
    generic_plans: bool,
) -> Result<Shape, DbError> {
    let body = body_of(sql);
    if body.contains(TAG) {
        return Err(refused(
            "query_fused: the statement contains the function body's quote tag",
        ));
    }
    if columns.is_empty() {
        return Err(refused("query_fused needs a statement that returns rows"));
    }
    if param_types.len() + 1 > MAX_ARGS {
        return Err(refused("query_fused: too many parameters (at most 99)"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut returns = Vec::with_capacity(columns.len());
    for (name, ty) in columns {
        if !seen.insert(name.as_str()) {
            return Err(refused("query_fused needs distinct column names"));
        }
        returns.push(format!("{} {ty}", quote_ident(name)?));
    }
    let name = function_name(body, generic_plans);
    let tenant = param_types.len() + 1;
    let plans = if generic_plans {
        " SET plan_cache_mode = force_generic_plan"
    } else {
        ""
    };
    let mut args: Vec<&str> = param_types.iter().map(String::as_str).collect();
    args.push("text");
    // A trailing `-- comment` in the statement must not swallow the `;` and `END`.
    let ddl = format!(
        "CREATE OR REPLACE FUNCTION pg_temp.{name}({args}) RETURNS TABLE({returns}) \
         LANGUAGE plpgsql STABLE{plans} AS {TAG}\n#variable_conflict use_column\nBEGIN\n\
         PERFORM pg_catalog.set_config('app.tenant_id', ${tenant}, true);\n\
         RETURN QUERY {body}\n;\nEND\n{TAG}",
        args = args.join(", "),
        returns = returns.join(", "),
    );
    let placeholders: Vec<String> = (1..=tenant).map(|i| format!("${i}")).collect();
    let call = format!("SELECT * FROM pg_temp.{name}({})", placeholders.join(", "));
    Ok(Shape { ddl, call })
}

/// Prepares the statement once to learn its shape (one round trip to prepare, one to name
/// its types); the prepared statement itself is closed again.
pub(crate) async fn shape_of(
    client: &Client,
    sql: &str,
    generic_plans: bool,
) -> Result<Shape, DbError> {
    let statement = client
        .prepare(body_of(sql))
        .await
        .map_err(DbError::from_pg)?;
    let oids: Vec<u32> = statement
        .params()
        .iter()
        .chain(statement.columns().iter().map(|c| c.type_()))
        .map(tokio_postgres::types::Type::oid)
        .collect();
    let names: Vec<String> = client
        .query_one(
            "SELECT ARRAY(SELECT pg_catalog.format_type(o, NULL) \
             FROM unnest($1::oid[]) WITH ORDINALITY AS t(o, i) ORDER BY i)",
            &[&oids],
        )
        .await
        .map_err(DbError::from_pg)?
        .get(0);
    let (params, column_types) = names.split_at(statement.params().len());
    let columns: Vec<(String, String)> = statement
        .columns()
        .iter()
        .zip(column_types)
        .map(|(c, ty)| (c.name().to_owned(), ty.clone()))
        .collect();
    build(sql, params, &columns, generic_plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn the_definition_binds_the_tenant_as_the_last_argument() {
        let shape = build(
            "SELECT id, title FROM documents WHERE tenant_id = $1 LIMIT $2;  \n",
            &["uuid".into(), "bigint".into()],
            &cols(&[("id", "uuid"), ("title", "text")]),
            true,
        )
        .unwrap();
        let name = function_name(
            "SELECT id, title FROM documents WHERE tenant_id = $1 LIMIT $2",
            true,
        );
        assert_eq!(name.len(), "tenantry_fused_".len() + 40);
        assert!(name.len() <= 63, "a PostgreSQL identifier");
        assert_eq!(
            shape.call,
            format!("SELECT * FROM pg_temp.{name}($1, $2, $3)")
        );
        assert!(shape.ddl.starts_with(&format!(
            "CREATE OR REPLACE FUNCTION pg_temp.{name}(uuid, bigint, text) \
             RETURNS TABLE(\"id\" uuid, \"title\" text) LANGUAGE plpgsql STABLE \
             SET plan_cache_mode = force_generic_plan AS"
        )));
        assert!(shape
            .ddl
            .contains("PERFORM pg_catalog.set_config('app.tenant_id', $3, true);"));
        assert!(shape.ddl.contains(
            "RETURN QUERY SELECT id, title FROM documents WHERE tenant_id = $1 LIMIT $2\n;\nEND"
        ));
    }

    #[test]
    fn statements_that_cannot_be_wrapped_are_refused() {
        let one = cols(&[("a", "int")]);
        for (sql, params, columns) in [
            ("SELECT 1 AS \"$tenantry_fused$\"", vec![], one.clone()),
            ("UPDATE t SET a = 1", vec![], vec![]),
            (
                "SELECT 1 AS a, 2 AS a",
                vec![],
                cols(&[("a", "int"), ("a", "int")]),
            ),
            ("SELECT $1", vec!["int".to_owned(); 100], one.clone()),
        ] {
            let err = build(sql, &params, &columns, true).unwrap_err();
            assert_eq!(err.kind(), DbErrorKind::Internal, "{sql}");
        }
        assert!(build("SELECT $1", &vec!["int".to_owned(); 99], &one, true).is_ok());
    }

    #[test]
    fn distinct_statements_get_distinct_functions_and_trailing_noise_does_not_matter() {
        assert_ne!(
            function_name("SELECT 1", true),
            function_name("SELECT 2", true)
        );
        // The plan setting is part of the definition, so it is part of the name.
        assert_ne!(
            function_name("SELECT 1", true),
            function_name("SELECT 1", false)
        );
        let a = build("SELECT 1 AS a", &[], &cols(&[("a", "int")]), true).unwrap();
        let b = build("SELECT 1 AS a ;\n", &[], &cols(&[("a", "int")]), true).unwrap();
        assert_eq!(a.call, b.call);
        let auto = build("SELECT 1 AS a", &[], &cols(&[("a", "int")]), false).unwrap();
        assert!(!auto.ddl.contains("plan_cache_mode"));
        assert!(a
            .ddl
            .contains(" STABLE SET plan_cache_mode = force_generic_plan AS "));
    }
}
