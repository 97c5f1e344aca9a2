//! axum integration: `TenantDb` as an extractor and `DbError` as a response.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use tenantry_core::Problem;

use crate::error::DbError;
use crate::tx::TenantDb;

impl<S: Send + Sync> FromRequestParts<S> for TenantDb {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        parts.extensions.get::<TenantDb>().cloned().ok_or_else(|| {
            Problem::misconfigured(
                "No TenantDb in the request extensions: is RlsLayer installed, inside \
                 TenantResolveLayer?",
            )
        })
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}
