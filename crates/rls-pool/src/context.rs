//! The statements that open a tenant transaction, for each [`ContextMode`].
//!
//! Kept apart from the I/O so that what each mode sends is unit-tested exactly.

use std::time::Duration;

use tenantry_core::{Placement, TenantId};

use crate::error::{DbError, DbErrorKind};

/// How the tenant context is set inside a transaction.
///
/// ```
/// use tenantry_rls_pool::ContextMode;
///
/// // Bound parameters unless told (or detected) otherwise.
/// assert_eq!(ContextMode::default(), ContextMode::Postgres);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ContextMode {
    /// `SELECT set_config('app.tenant_id', $1, true), set_config('statement_timeout', $2, true)`
    /// with bound parameters: one statement after `BEGIN` (the default).
    #[default]
    Postgres,
    /// `SET LOCAL app.tenant_id = '<uuid>'` as its own statement after `BEGIN`: on Citus,
    /// `set_config` never reaches the workers, while `SET LOCAL` does when
    /// `citus.propagate_set_commands = 'local'`. The literal is formatted only from a parsed
    /// [`TenantId`], never from request text.
    Citus,
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// `BEGIN` (the default).
    #[default]
    ReadWrite,
    /// `BEGIN READ ONLY`: writes fail with SQLSTATE 25006.
    ReadOnly,
}

/// The context statement of [`ContextMode::Postgres`], without and with a search path.
pub(crate) const SET_CONTEXT: &str =
    "SELECT set_config('app.tenant_id', $1, true), set_config('statement_timeout', $2, true)";
pub(crate) const SET_CONTEXT_WITH_PATH: &str = "SELECT set_config('app.tenant_id', $1, true), \
     set_config('statement_timeout', $2, true), set_config('search_path', $3, true)";

/// What opens one tenant transaction: simple-protocol statements sent in order, then at most
/// one extended-protocol statement with text parameters. All are pipelined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContextPlan {
    pub(crate) simple: Vec<String>,
    pub(crate) typed: Option<(&'static str, Vec<String>)>,
}

impl ContextPlan {
    pub(crate) fn new(
        mode: ContextMode,
        access: Access,
        tenant: TenantId,
        statement_timeout: Duration,
        schema: Option<&str>,
    ) -> Result<Self, DbError> {
        let begin = match access {
            Access::ReadWrite => "BEGIN",
            Access::ReadOnly => "BEGIN READ ONLY",
        };
        // At least 1 ms: 0 would mean "no timeout".
        let timeout_ms = statement_timeout.as_millis().clamp(1, i32::MAX as u128);
        let search_path = schema.map(search_path_for).transpose()?;
        Ok(match mode {
            ContextMode::Postgres => {
                let mut params = vec![tenant.to_string(), timeout_ms.to_string()];
                let sql = match search_path {
                    Some(path) => {
                        params.push(path);
                        SET_CONTEXT_WITH_PATH
                    }
                    None => SET_CONTEXT,
                };
                Self {
                    simple: vec![begin.to_owned()],
                    typed: Some((sql, params)),
                }
            }
            ContextMode::Citus => {
                // `TenantId`'s Display is the canonical hyphenated UUID: hex digits and
                // hyphens only, so the literal cannot break out of its quotes.
                let mut simple = vec![
                    begin.to_owned(),
                    format!("SET LOCAL app.tenant_id = '{tenant}'"),
                    format!("SET LOCAL statement_timeout = {timeout_ms}"),
                ];
                if let Some(path) = search_path {
                    simple.push(format!("SET LOCAL search_path TO {path}"));
                }
                Self {
                    simple,
                    typed: None,
                }
            }
        })
    }

    /// The plan of a connection that never opens a transaction (a fused call carries its
    /// context itself): nothing to send, nothing allocated. A statement ever run under it
    /// would run with no tenant context, which row-level security answers with no rows.
    pub(crate) fn unsent() -> Self {
        Self {
            simple: Vec::new(),
            typed: None,
        }
    }
}

/// Whether a tenant's context is one bound `set_config` on the default search path
/// (PostgreSQL mode, shared or database placement): what a fused read can carry. Decided from
/// the mode and placement alone, so a fused call builds no [`ContextPlan`].
pub(crate) fn fusable(mode: ContextMode, placement: &Placement) -> bool {
    mode == ContextMode::Postgres && !matches!(placement, Placement::Schema(_))
}

/// `"<schema>", public` with the schema quoted as an identifier. `public` stays on the path
/// for shared functions such as `current_tenant_id()`; RLS still guards every table.
pub(crate) fn search_path_for(schema: &str) -> Result<String, DbError> {
    Ok(format!("{}, public", quote_ident(schema)?))
}

/// Quotes an identifier: doubled inner quotes; empty, over-long or NUL-bearing names refused.
pub(crate) fn quote_ident(name: &str) -> Result<String, DbError> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(DbError::new(DbErrorKind::Internal)
            .with_source("invalid schema name in the tenant's placement"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        "9f1c2d4e-8a7b-4c3d-9e2f-112233445566".parse().unwrap()
    }

    #[test]
    fn postgres_mode_sends_begin_then_one_bound_context_statement() {
        let plan = ContextPlan::new(
            ContextMode::Postgres,
            Access::ReadWrite,
            tenant(),
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        assert_eq!(plan.simple, ["BEGIN"]);
        let (sql, params) = plan.typed.unwrap();
        assert_eq!(
            sql,
            "SELECT set_config('app.tenant_id', $1, true), set_config('statement_timeout', $2, true)"
        );
        assert!(
            !sql.contains(&tenant().to_string()),
            "the id is bound, not formatted"
        );
        assert_eq!(params, [tenant().to_string(), "5000".to_owned()]);
    }

    #[test]
    fn postgres_mode_read_only_and_schema_placement() {
        let plan = ContextPlan::new(
            ContextMode::Postgres,
            Access::ReadOnly,
            tenant(),
            Duration::from_millis(250),
            Some("tenant_x"),
        )
        .unwrap();
        assert_eq!(plan.simple, ["BEGIN READ ONLY"]);
        let (sql, params) = plan.typed.unwrap();
        assert!(sql.ends_with("set_config('search_path', $3, true)"));
        assert_eq!(params[2], "\"tenant_x\", public");
    }

    #[test]
    fn citus_mode_sends_set_local_statements_of_their_own() {
        let plan = ContextPlan::new(
            ContextMode::Citus,
            Access::ReadWrite,
            tenant(),
            Duration::from_secs(2),
            Some("we\"ird"),
        )
        .unwrap();
        assert_eq!(
            plan.simple,
            [
                "BEGIN",
                "SET LOCAL app.tenant_id = '9f1c2d4e-8a7b-4c3d-9e2f-112233445566'",
                "SET LOCAL statement_timeout = 2000",
                "SET LOCAL search_path TO \"we\"\"ird\", public",
            ]
        );
        assert!(plan.typed.is_none());
    }

    #[test]
    fn zero_timeout_is_clamped_to_one_millisecond_not_unlimited() {
        let plan = ContextPlan::new(
            ContextMode::Postgres,
            Access::ReadWrite,
            tenant(),
            Duration::ZERO,
            None,
        )
        .unwrap();
        assert_eq!(plan.typed.unwrap().1[1], "1");
    }

    #[test]
    fn fusable_means_the_plan_is_exactly_one_bound_set_config() {
        let placements = [
            Placement::Shared,
            Placement::Schema("tenant_acme".into()),
            Placement::Database("postgres://db/acme".into()),
        ];
        for mode in [ContextMode::Postgres, ContextMode::Citus] {
            for placement in &placements {
                let schema = match placement {
                    Placement::Schema(name) => Some(&**name),
                    _ => None,
                };
                let plan = ContextPlan::new(
                    mode,
                    Access::ReadOnly,
                    tenant(),
                    Duration::from_secs(1),
                    schema,
                )
                .unwrap();
                let one_set_config = matches!(&plan.typed, Some((sql, _)) if *sql == SET_CONTEXT);
                assert_eq!(
                    fusable(mode, placement),
                    one_set_config,
                    "{mode:?} {placement:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_schema_names_are_refused() {
        for bad in ["", "a\0b", &"x".repeat(64)] {
            assert!(quote_ident(bad).is_err(), "{bad:?}");
        }
    }
}
