//! Why a request was refused, and how the refusal is turned into a response.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use tenantry_core::problem::{codes, Problem};
use tenantry_core::StoreError;

/// Why [`TenantResolve`](crate::TenantResolve) refused a request.
///
/// The response carries a clone of it in its extensions, so outer layers (metrics, access
/// logs) can see why, whatever response body the [rejection handler](ResponseForRejection)
/// chose.
///
/// | kind | status | code |
/// |---|---|---|
/// | [`TenantRequired`](RejectionKind::TenantRequired) | 401 + `WWW-Authenticate: Bearer` | `tenant_required` |
/// | [`InvalidCredentials`](RejectionKind::InvalidCredentials) | 401 + `WWW-Authenticate: Bearer error="invalid_token"` | `invalid_credentials` |
/// | [`TenantMismatch`](RejectionKind::TenantMismatch) | 403 | `tenant_mismatch` |
/// | [`TenantUnavailable`](RejectionKind::TenantUnavailable) | 403 | `tenant_unavailable` |
/// | [`InvalidSelector`](RejectionKind::InvalidSelector) | 400 | `invalid_tenant_selector` |
/// | [`StoreUnavailable`](RejectionKind::StoreUnavailable) | 503 | `service_unavailable` |
///
/// `TenantUnavailable` is one response, byte for byte, for a tenant that is unknown,
/// suspended, pending or deleted; it is only ever sent to a caller holding a verified
/// credential (or behind a gateway trusted to have authenticated the caller), and a bare
/// selector is refused with `TenantRequired` before any lookup, so nobody can enumerate
/// tenants.
///
/// ```
/// use tenantry_resolve::{Rejection, RejectionKind};
///
/// fn log(rejection: &Rejection) {
///     if rejection.kind() == RejectionKind::TenantMismatch {
///         eprintln!("possible cross-tenant access attempt: {}", rejection.reason());
///     }
/// }
/// # let _ = log;
/// ```
#[derive(Clone)]
pub struct Rejection {
    kind: RejectionKind,
    reason: &'static str,
    source: Option<Arc<StoreError>>,
}

/// What kind of refusal a [`Rejection`] is. See [`Rejection`] for the statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No credential was presented (a selector alone is not enough).
    TenantRequired,
    /// A credential was presented but is malformed, invalid, expired or unknown.
    InvalidCredentials,
    /// The sources present name different tenants.
    TenantMismatch,
    /// The tenant is unknown, suspended, pending or deleted.
    TenantUnavailable,
    /// A selector is malformed: two `Host` values, a `Host` that disagrees with the request
    /// target, or an `X-Tenant-ID` that is neither an id nor a slug.
    InvalidSelector,
    /// The tenant store failed.
    StoreUnavailable,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, reason: &'static str) -> Self {
        Self {
            kind,
            reason,
            source: None,
        }
    }

    pub(crate) fn store(error: StoreError) -> Self {
        Self {
            kind: RejectionKind::StoreUnavailable,
            reason: "tenant store failed",
            source: Some(Arc::new(error)),
        }
    }

    /// What kind of refusal this is.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// A short reason for logs ("token expired", "unknown kid", "two Host headers"…). Never
    /// contains request data. Not sent to the client for credential failures.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The HTTP status of the default response.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RejectionKind::TenantRequired | RejectionKind::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            RejectionKind::TenantMismatch | RejectionKind::TenantUnavailable => {
                StatusCode::FORBIDDEN
            }
            RejectionKind::InvalidSelector => StatusCode::BAD_REQUEST,
            RejectionKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The default problem+json for this rejection.
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        match self.kind {
            RejectionKind::TenantRequired => {
                Problem::new(status, codes::TENANT_REQUIRED, "Authentication required")
                    .with_detail("Present a bearer token or an API key.")
                    .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            }
            RejectionKind::InvalidCredentials => {
                Problem::new(status, codes::INVALID_CREDENTIALS, "Invalid credentials")
                    .with_detail(
                        "The credential is malformed, invalid, expired or not accepted here.",
                    )
                    .with_header(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    )
            }
            RejectionKind::TenantMismatch => Problem::new(
                status,
                codes::TENANT_MISMATCH,
                "Tenant mismatch",
            )
            .with_detail(
                "The credential, the subdomain and the tenant header must name the same tenant.",
            ),
            RejectionKind::TenantUnavailable => {
                Problem::new(status, codes::TENANT_UNAVAILABLE, "Tenant unavailable")
                    .with_detail("This tenant cannot be served.")
            }
            RejectionKind::InvalidSelector => Problem::new(
                status,
                codes::INVALID_TENANT_SELECTOR,
                "Invalid tenant selector",
            )
            .with_detail(self.reason),
            RejectionKind::StoreUnavailable => {
                Problem::service_unavailable("Tenant lookup is temporarily unavailable.")
                    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
        }
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant resolution refused: {}", self.reason)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Turns a [`Rejection`] into a response. Implemented for [`DefaultRejection`] and for every
/// `FnMut(Rejection) -> Response<B> + Clone`.
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use http_body_util::Full;
/// use tenantry_core::InMemoryStore;
/// use tenantry_resolve::{JwtVerifier, Rejection, TenantResolveLayer};
///
/// let layer = TenantResolveLayer::builder(InMemoryStore::new())
///     .api_keys()
///     .build()?
///     .with_rejection(|r: Rejection| {
///         let mut res = Response::new(Full::new(Bytes::from(r.reason())));
///         *res.status_mut() = r.status();
///         res
///     });
/// # let _ = layer;
/// # Ok::<(), tenantry_resolve::ConfigError>(())
/// ```
pub trait ResponseForRejection<B> {
    /// The response sent for `rejection`.
    fn response_for(&mut self, rejection: Rejection) -> Response<B>;
}

impl<B, F> ResponseForRejection<B> for F
where
    F: FnMut(Rejection) -> Response<B>,
{
    fn response_for(&mut self, rejection: Rejection) -> Response<B> {
        self(rejection)
    }
}

/// The default rejection: the RFC 9457 problem+json of [`Rejection::to_problem`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejection;

impl<B: From<Bytes>> ResponseForRejection<B> for DefaultRejection {
    fn response_for(&mut self, rejection: Rejection) -> Response<B> {
        rejection.to_problem().into_response()
    }
}

/// Builds the response for `rejection` and puts the rejection in its extensions.
pub(crate) fn respond<B, R: ResponseForRejection<B>>(
    handler: &mut R,
    rejection: Rejection,
) -> Response<B> {
    let mut res = handler.response_for(rejection.clone());
    res.extensions_mut().insert(rejection);
    res
}
