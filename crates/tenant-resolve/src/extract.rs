//! axum extractors (feature `axum`).

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use http::StatusCode;
use tenantry_core::problem::{codes, Problem};

use crate::{CredentialKind, Principal};

const MISSING_LAYER: &str =
    "no tenant in the request extensions: is TenantResolveLayer installed on this route?";

/// The resolved tenant, as an axum extractor.
///
/// Fails with 500 `misconfigured` ("is TenantResolveLayer installed?") when the layer did not
/// run: a request that reaches a handler without a tenant is a wiring bug, not a client error.
///
/// ```
/// use tenantry_resolve::extract::Tenant;
///
/// async fn handler(Tenant(tenant): Tenant) -> String {
///     tenant.slug().to_string()
/// }
/// let _app: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
/// ```
#[derive(Debug, Clone)]
pub struct Tenant(pub Arc<tenantry_core::Tenant>);

impl Deref for Tenant {
    type Target = tenantry_core::Tenant;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<tenantry_core::Tenant>>()
            .cloned()
            .map(Tenant)
            .ok_or_else(|| Problem::misconfigured(MISSING_LAYER))
    }
}

/// The JWT principal. Fails with 401 when the request was authenticated another way (an API
/// key) and with 500 `misconfigured` when TenantResolveLayer did not run. Use
/// `Option<Principal>` on routes that also accept API keys.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <Self as OptionalFromRequestParts<S>>::from_request_parts(parts, state).await? {
            Some(p) => Ok(p),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_CREDENTIALS,
                "User token required",
            )
            .with_detail("This endpoint needs a JWT; an API key is not enough.")),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if parts.extensions.get::<CredentialKind>().is_none() {
            return Err(Problem::misconfigured(MISSING_LAYER));
        }
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}
