//! Extractors whose rejections are problem+json, and the API's error type.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tenantry_core::problem::{codes, Problem};
use tenantry_rls_pool::DbError;

/// Every handler error: a problem+json response.
#[derive(Debug)]
pub(crate) struct ApiError(Box<Problem>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (*self.0).into_response()
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self(Box::new(p))
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.to_problem().status().is_server_error() {
            tracing::warn!(error = %e, "database error");
        }
        Self(Box::new(e.to_problem()))
    }
}

/// 400/422 `invalid_request` with a detail.
pub(crate) fn invalid(status: StatusCode, detail: impl Into<String>) -> ApiError {
    Problem::new(status, codes::INVALID_REQUEST, "Invalid request")
        .with_detail(detail.into())
        .into()
}

/// 404 `not_found`: the same answer for a missing id and for another tenant's id.
pub(crate) fn not_found(what: &'static str) -> ApiError {
    Problem::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "Not found")
        .with_detail(format!("No such {what}."))
        .into()
}

fn rejection(status: StatusCode, text: String) -> ApiError {
    let (code, title) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "Request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "Unsupported media type"),
        _ => (codes::INVALID_REQUEST, "Invalid request"),
    };
    Problem::new(status, code, title).with_detail(text).into()
}

/// `axum::Json` with problem+json rejections (400 syntax, 422 data, 413 size, 415 type).
#[derive(Debug)]
pub(crate) struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e @ JsonRejection::BytesRejection(_)) => Err(rejection(
                e.status(),
                "The request body could not be read or is too large.".into(),
            )),
            Err(e) => Err(rejection(e.status(), e.body_text())),
        }
    }
}

/// `axum::extract::Path` with problem+json rejections.
#[derive(Debug)]
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| rejection(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// `axum::extract::Query` with problem+json rejections.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| rejection(StatusCode::BAD_REQUEST, e.body_text()))
    }
}
