//! The preflight check of DESIGN.md invariant 2, run as the application role.

use std::fmt;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::context::ContextMode;
use crate::error::DbError;

/// One check of a [`DoctorReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// A stable name, such as `role_not_superuser`.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was found (the offending objects when it failed).
    pub detail: String,
}

/// The result of [`RlsPool::doctor`](crate::RlsPool::doctor). A server must refuse to start
/// unless [`is_ok`](Self::is_ok).
///
/// ```no_run
/// # async fn start(rls: tenantry_rls_pool::RlsPool) -> Result<(), Box<dyn std::error::Error>> {
/// let report = rls.doctor().await.into_result()?; // refuses to serve on any failure
/// for check in report.checks() {
///     println!("{}: {}", check.name, check.detail);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// Every check, in order.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> + '_ {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Whether the check called `name` ran and failed.
    pub fn failed(&self, name: &str) -> bool {
        self.failures().any(|c| c.name == name)
    }

    /// `Ok(self)` if every check passed, else `Err(self)`, for `?` at start-up.
    pub fn into_result(self) -> Result<Self, Self> {
        if self.is_ok() {
            Ok(self)
        } else {
            Err(self)
        }
    }

    pub(crate) fn unreachable(e: &DbError) -> Self {
        Self {
            checks: vec![Check {
                name: "connect",
                passed: false,
                detail: format!("cannot connect as the application role: {e}"),
            }],
        }
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            writeln!(f, "{mark} {}: {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for DoctorReport {}

/// Objects of these schemas are the server's own.
const USER_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'";

pub(crate) async fn run(client: &Client, mode: ContextMode) -> DoctorReport {
    let mut checks = Vec::new();
    let mut push = |name, result: Result<Vec<String>, tokio_postgres::Error>, ok: &str| {
        checks.push(match result {
            Ok(problems) if problems.is_empty() => Check {
                name,
                passed: true,
                detail: ok.to_owned(),
            },
            Ok(problems) => Check {
                name,
                passed: false,
                detail: problems.join("; "),
            },
            Err(e) => Check {
                name,
                passed: false,
                detail: format!("could not check: {}", DbError::from_pg(e)),
            },
        });
    };

    push(
        "role_not_superuser",
        strings(
            client,
            "SELECT format('role %I is %s', rolname, \
                 concat_ws(' and ', CASE WHEN rolsuper THEN 'SUPERUSER' END, \
                                    CASE WHEN rolbypassrls THEN 'BYPASSRLS' END)) \
             FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)",
        )
        .await,
        "the application role is neither SUPERUSER nor BYPASSRLS",
    );

    push(
        "role_owns_nothing",
        strings(
            client,
            &format!(
                "SELECT format('owns %s %I.%I', CASE c.relkind WHEN 'v' THEN 'view' \
                     WHEN 'm' THEN 'materialized view' ELSE 'relation' END, n.nspname, c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                   AND pg_has_role(current_user, c.relowner, 'MEMBER') \
                 UNION ALL \
                 SELECT format('owns function %I.%I', n.nspname, p.proname) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE {USER_SCHEMAS} AND pg_has_role(current_user, p.proowner, 'MEMBER') \
                 UNION ALL \
                 SELECT format('owns schema %I', n.nspname) FROM pg_namespace n \
                 WHERE {USER_SCHEMAS} AND pg_has_role(current_user, n.nspowner, 'MEMBER')"
            ),
        )
        .await,
        "the application role owns (and can act as the owner of) no table, view, function or schema",
    );

    push(
        "tenant_tables_force_rls",
        strings(
            client,
            &format!(
                "SELECT format('%I.%I: %s', n.nspname, c.relname, \
                     concat_ws(', ', CASE WHEN NOT c.relrowsecurity THEN 'RLS not enabled' END, \
                                     CASE WHEN NOT c.relforcerowsecurity THEN 'RLS not forced' END)) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p') \
                   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                               AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
                   AND NOT (c.relrowsecurity AND c.relforcerowsecurity) \
                 ORDER BY 1"
            ),
        )
        .await,
        "every table with a tenant_id column has RLS enabled and forced",
    );

    push(
        "tenant_tables_checked_policies",
        strings(
            client,
            &format!(
                "SELECT format('%I.%I: no policy', n.nspname, c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p') \
                   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                               AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
                   AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) \
                 UNION ALL \
                 SELECT format('%I.%I: policy %I lacks %s', n.nspname, c.relname, p.polname, \
                     concat_ws(' and ', \
                         CASE WHEN p.polqual IS NULL AND p.polcmd <> 'a' THEN 'USING' END, \
                         CASE WHEN p.polwithcheck IS NULL AND p.polcmd IN ('*', 'a', 'w') \
                              THEN 'WITH CHECK' END)) \
                 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {USER_SCHEMAS} \
                   AND ((p.polqual IS NULL AND p.polcmd <> 'a') \
                        OR (p.polwithcheck IS NULL AND p.polcmd IN ('*', 'a', 'w'))) \
                 ORDER BY 1"
            ),
        )
        .await,
        "every table with a tenant_id column has policies with USING and WITH CHECK",
    );

    push(
        "no_default_tenant",
        strings(
            client,
            "SELECT format('a default for app.tenant_id is set (%s)', s) \
             FROM (SELECT unnest(setconfig) AS s FROM pg_db_role_setting \
                   WHERE setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = current_user)) \
                     AND setdatabase IN (0, (SELECT oid FROM pg_database \
                                             WHERE datname = current_database()))) d \
             WHERE s LIKE 'app.tenant_id=%' \
             UNION ALL \
             SELECT 'app.tenant_id is set outside a transaction' \
             WHERE COALESCE(current_setting('app.tenant_id', true), '') <> ''",
        )
        .await,
        "no role, database or server default for app.tenant_id",
    );

    push(
        "views_security_invoker",
        strings(
            client,
            &format!(
                "SELECT format('view %I.%I is not security_invoker', n.nspname, c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {USER_SCHEMAS} AND c.relkind = 'v' \
                   AND NOT EXISTS (SELECT 1 FROM unnest(c.reloptions) o \
                       WHERE lower(o) IN ('security_invoker=true', 'security_invoker=on', \
                                          'security_invoker=1', 'security_invoker=yes')) \
                 UNION ALL \
                 SELECT format('materialized view %I.%I has a tenant_id column and cannot \
                               have RLS', n.nspname, c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {USER_SCHEMAS} AND c.relkind = 'm' \
                   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                               AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
                 ORDER BY 1"
            ),
        )
        .await,
        "every view is security_invoker",
    );

    if mode == ContextMode::Citus {
        push(
            "citus_propagate_set_commands",
            strings(
                client,
                "SELECT format('citus.propagate_set_commands is %L, not ''local'': SET LOCAL \
                         app.tenant_id would not reach the workers', \
                         COALESCE(current_setting('citus.propagate_set_commands', true), 'unset')) \
                 WHERE COALESCE(current_setting('citus.propagate_set_commands', true), '') \
                       <> 'local'",
            )
            .await,
            "citus.propagate_set_commands is 'local'",
        );
    }

    DoctorReport { checks }
}

async fn strings(client: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    // The simple protocol: no prepared statement, so this also works through pgbouncer.
    Ok(client
        .simple_query(sql)
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_owned()),
            _ => None,
        })
        .collect())
}
