//! Database errors and their problem+json mapping.
//!
//! The mapping never echoes a constraint name, a column, a value or a server message into the
//! response body: unique, primary-key and foreign-key checks bypass RLS, so their details would
//! be an existence oracle across tenants.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;
use tenantry_core::problem::{codes, Problem};

/// The problem code for a write refused by row-level security (403). Not (yet) in
/// [`tenantry_core::problem::codes`].
pub const FORBIDDEN: &str = "forbidden";

/// What kind of failure a [`DbError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbErrorKind {
    /// A unique or primary-key constraint was violated (409).
    Conflict,
    /// Row-level security or a privilege check refused the statement (403).
    Forbidden,
    /// A check, not-null or foreign-key constraint, or malformed input such as an invalid
    /// UUID text, refused the statement (422).
    InvalidData,
    /// Serialization failure or deadlock: the transaction may be retried (503).
    Serialization,
    /// `statement_timeout` fired or the statement was cancelled (503).
    Timeout,
    /// The tenant already runs its maximum number of concurrent transactions and none ended
    /// within the bounded wait (503 `tenant_busy`).
    TenantBusy,
    /// No pooled connection became free within the bounded wait (503).
    PoolExhausted,
    /// The database could not be reached or the connection broke (503).
    Unavailable,
    /// A statement of this transaction failed earlier, so it can only be rolled back.
    Aborted,
    /// The transaction was already committed or rolled back.
    Closed,
    /// The tenant's placement cannot be served (an invalid schema name or DSN), or a
    /// programming error such as SQL syntax (500).
    Internal,
}

/// A database failure of a tenant transaction. The driver's error, if any, is the
/// [`source`](StdError::source); [`DbError::to_problem`] turns it into a safe response.
#[derive(Debug)]
pub struct DbError {
    kind: DbErrorKind,
    retry_after: Option<Duration>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl DbError {
    pub(crate) fn new(kind: DbErrorKind) -> Self {
        Self {
            kind,
            retry_after: None,
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// The SQLSTATE of the database error behind this one, if there is one.
    pub fn sqlstate(&self) -> Option<&str> {
        self.source
            .as_deref()
            .and_then(|e| e.downcast_ref::<tokio_postgres::Error>())
            .and_then(|e| e.code())
            .map(|c| c.code())
    }

    /// Whether retrying the whole transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            DbErrorKind::Serialization
                | DbErrorKind::Timeout
                | DbErrorKind::TenantBusy
                | DbErrorKind::PoolExhausted
                | DbErrorKind::Unavailable
        )
    }

    /// The problem+json response for this error. Bodies never carry constraint names,
    /// values or server messages.
    ///
    /// ```
    /// use tenantry_rls_pool::{DbError, DbErrorKind};
    ///
    /// let e = DbError::from_kind(DbErrorKind::Conflict);
    /// let p = e.to_problem();
    /// assert_eq!(p.status(), 409);
    /// assert_eq!(p.code(), "conflict");
    /// ```
    pub fn to_problem(&self) -> Problem {
        let retry = |p: Problem, secs: u64| {
            p.with_header(RETRY_AFTER, HeaderValue::from(secs.max(1)))
                .with_extension("retryable", true)
        };
        let retry_secs = self
            .retry_after
            .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        match self.kind {
            DbErrorKind::Conflict => {
                Problem::new(StatusCode::CONFLICT, codes::CONFLICT, "Conflict")
                    .with_detail("The request conflicts with an existing resource.")
            }
            DbErrorKind::Forbidden => Problem::new(StatusCode::FORBIDDEN, FORBIDDEN, "Forbidden")
                .with_detail("The database refused this change for the current tenant."),
            DbErrorKind::InvalidData => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::INVALID_REQUEST,
                "Invalid data",
            )
            .with_detail("The data violates a constraint."),
            DbErrorKind::Serialization => retry(
                Problem::service_unavailable("The transaction conflicted with another; retry it."),
                retry_secs,
            ),
            DbErrorKind::Timeout => retry(
                Problem::service_unavailable("The database did not answer in time."),
                retry_secs,
            ),
            DbErrorKind::TenantBusy => retry(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::TENANT_BUSY,
                    "Too many concurrent transactions",
                )
                .with_detail("This tenant already runs its maximum number of transactions."),
                retry_secs,
            ),
            DbErrorKind::PoolExhausted | DbErrorKind::Unavailable => retry(
                Problem::service_unavailable("The database is unavailable."),
                retry_secs,
            ),
            DbErrorKind::Aborted | DbErrorKind::Closed | DbErrorKind::Internal => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal error",
            ),
        }
    }

    /// A `DbError` of `kind` with no underlying cause.
    pub fn from_kind(kind: DbErrorKind) -> Self {
        Self::new(kind)
    }

    pub(crate) fn from_pg(e: tokio_postgres::Error) -> Self {
        Self::new(classify(&e)).with_source(e)
    }
}

/// Maps a driver error to a kind, by SQLSTATE class and code.
fn classify(e: &tokio_postgres::Error) -> DbErrorKind {
    let Some(code) = e.code() else {
        return DbErrorKind::Unavailable;
    };
    let code = code.code();
    match code {
        "23505" => DbErrorKind::Conflict,
        "42501" => DbErrorKind::Forbidden,
        "23514" | "23502" | "23503" | "23P01" => DbErrorKind::InvalidData,
        "40001" | "40P01" => DbErrorKind::Serialization,
        "57014" | "55P03" | "25P03" => DbErrorKind::Timeout,
        "25P02" => DbErrorKind::Aborted,
        _ if code.starts_with("22") => DbErrorKind::InvalidData,
        // Connection exceptions, operator intervention (shutdown, crash), insufficient resources.
        _ if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") => {
            DbErrorKind::Unavailable
        }
        _ => DbErrorKind::Internal,
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::from_pg(e)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            DbErrorKind::Conflict => "unique constraint violated",
            DbErrorKind::Forbidden => "refused by row-level security or privileges",
            DbErrorKind::InvalidData => "data violates a constraint",
            DbErrorKind::Serialization => "serialization failure",
            DbErrorKind::Timeout => "statement timed out",
            DbErrorKind::TenantBusy => "tenant has too many concurrent transactions",
            DbErrorKind::PoolExhausted => "no pooled connection available in time",
            DbErrorKind::Unavailable => "database unavailable",
            DbErrorKind::Aborted => "transaction aborted by an earlier error",
            DbErrorKind::Closed => "transaction already ended",
            DbErrorKind::Internal => "internal database error",
        })?;
        if let Some(state) = self.sqlstate() {
            write!(f, " (SQLSTATE {state})")?;
        }
        Ok(())
    }
}

impl StdError for DbError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_kinds_are_503_with_retry_after() {
        for kind in [
            DbErrorKind::Serialization,
            DbErrorKind::Timeout,
            DbErrorKind::TenantBusy,
            DbErrorKind::PoolExhausted,
            DbErrorKind::Unavailable,
        ] {
            let p = DbError::new(kind)
                .with_retry_after(Duration::from_millis(1500))
                .to_problem();
            assert_eq!(p.status(), 503, "{kind:?}");
            assert_eq!(p.headers()[RETRY_AFTER], "2", "{kind:?}");
        }
        assert_eq!(
            DbError::new(DbErrorKind::TenantBusy).to_problem().code(),
            codes::TENANT_BUSY
        );
    }

    #[test]
    fn client_errors_are_4xx() {
        assert_eq!(
            DbError::new(DbErrorKind::Conflict).to_problem().status(),
            409
        );
        assert_eq!(
            DbError::new(DbErrorKind::Forbidden).to_problem().status(),
            403
        );
        assert_eq!(
            DbError::new(DbErrorKind::InvalidData).to_problem().status(),
            422
        );
    }
}
