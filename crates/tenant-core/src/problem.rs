//! RFC 9457 `application/problem+json` rejections, shared by every tenantry layer.
//!
//! A [`Problem`] has the standard members (`type`, `title`, `status`, `detail`), a stable,
//! machine-readable `code` (see [`codes`]) and optional extension members. It turns into an
//! `http::Response<B>` for any body `B: From<Bytes>`, so it works for axum, hyper and tonic
//! alike, and the response carries the `Problem` in its extensions so outer layers (metrics,
//! logging) can see why a request was rejected.
//!
//! ```
//! use http::StatusCode;
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tenantry_core::problem::{codes, Problem};
//!
//! let res: http::Response<Full<Bytes>> =
//!     Problem::new(StatusCode::FORBIDDEN, codes::TENANT_MISMATCH, "Tenant mismatch")
//!         .with_detail("The credential and the X-Tenant-ID header name different tenants.")
//!         .into_response();
//! assert_eq!(res.status(), 403);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(res.extensions().get::<Problem>().unwrap().code(), "tenant_mismatch");
//! ```

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Stable machine-readable problem codes used by tenantry's layers.
pub mod codes {
    /// No tenant could be identified, or no credential was presented (401).
    pub const TENANT_REQUIRED: &str = "tenant_required";
    /// A credential was presented but is invalid (401).
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    /// The sources present (credential, subdomain, header) name different tenants (403).
    pub const TENANT_MISMATCH: &str = "tenant_mismatch";
    /// The tenant is unknown, suspended, pending or deleted; one code for all, so callers
    /// cannot enumerate tenants.
    pub const TENANT_UNAVAILABLE: &str = "tenant_unavailable";
    /// A selector (host, header) is malformed (400).
    pub const INVALID_TENANT_SELECTOR: &str = "invalid_tenant_selector";
    /// The tenant's rate limit is exhausted (429).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The tenant's plan does not include the feature (403).
    pub const FEATURE_NOT_AVAILABLE: &str = "feature_not_available";
    /// A backend (database, cache, limiter) is unavailable (503).
    pub const SERVICE_UNAVAILABLE: &str = "service_unavailable";
    /// The tenant has too many concurrent requests or transactions (503).
    pub const TENANT_BUSY: &str = "tenant_busy";
    /// A unique constraint was violated (409).
    pub const CONFLICT: &str = "conflict";
    /// The request is malformed (400 or 422).
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// The resource does not exist for this tenant (404).
    pub const NOT_FOUND: &str = "not_found";
    /// The server is misconfigured, for example a layer is missing or misordered (500).
    pub const MISCONFIGURED: &str = "misconfigured";
}

/// The `type` URI prefix of tenantry's problems; the code follows it.
pub const TYPE_PREFIX: &str = "urn:tenantry:problem:";

/// An RFC 9457 problem detail. See the [module documentation](self).
#[derive(Clone, PartialEq)]
pub struct Problem {
    status: StatusCode,
    code: Cow<'static, str>,
    type_uri: Option<Cow<'static, str>>,
    title: Cow<'static, str>,
    detail: Option<Cow<'static, str>>,
    extensions: serde_json::Map<String, serde_json::Value>,
    headers: HeaderMap,
}

impl Problem {
    /// A problem with a status, a stable code and a short human-readable title.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        title: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            type_uri: None,
            title: title.into(),
            detail: None,
            extensions: serde_json::Map::new(),
            headers: HeaderMap::new(),
        }
    }

    /// Sets the `detail` member: an explanation specific to this occurrence.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Overrides the `type` URI (default: `urn:tenantry:problem:<code>`).
    pub fn with_type(mut self, type_uri: impl Into<Cow<'static, str>>) -> Self {
        self.type_uri = Some(type_uri.into());
        self
    }

    /// Adds an extension member. The standard members and `code` cannot be overridden this
    /// way; such keys are ignored.
    pub fn with_extension(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        if !matches!(
            key,
            "type" | "title" | "status" | "detail" | "code" | "instance"
        ) {
            self.extensions.insert(key.to_owned(), value.into());
        }
        self
    }

    /// Adds a response header (for example `Retry-After` or `WWW-Authenticate`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// An extension member, if set.
    pub fn extension(&self, key: &str) -> Option<&serde_json::Value> {
        self.extensions.get(key)
    }

    /// Extra response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> Cow<'_, str> {
        match &self.type_uri {
            Some(t) => Cow::Borrowed(t),
            None => Cow::Owned(format!("{TYPE_PREFIX}{}", self.code)),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        // Serialising a map of strings and `serde_json::Value`s cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Builds the response: status, `Content-Type: application/problem+json`, the extra
    /// headers, the JSON body, and a clone of this problem in the response extensions.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut res = Response::new(B::from(self.to_json()));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        res.extensions_mut().insert(self.clone());
        res
    }

    /// Like [`to_response`](Self::to_response), consuming the problem.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        self.to_response()
    }

    /// 503 `service_unavailable`, for backend outages.
    pub fn service_unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SERVICE_UNAVAILABLE,
            "Service unavailable",
        )
        .with_detail(detail)
    }

    /// 500 `misconfigured`, for server configuration errors such as a missing layer.
    pub fn misconfigured(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::MISCONFIGURED,
            "Server misconfigured",
        )
        .with_detail(detail)
    }
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", &self.type_uri())?;
        map.serialize_entry("title", &self.title)?;
        map.serialize_entry("status", &self.status.as_u16())?;
        if let Some(detail) = &self.detail {
            map.serialize_entry("detail", detail)?;
        }
        map.serialize_entry("code", &self.code)?;
        for (k, v) in &self.extensions {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl fmt::Debug for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problem")
            .field("status", &self.status.as_u16())
            .field("code", &self.code)
            .field("title", &self.title)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.title)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        self.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::RETRY_AFTER;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn body_has_the_rfc_9457_members_and_the_code() {
        let res: Response<Full<Bytes>> = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            "Rate limited",
        )
        .with_detail("100 requests per minute")
        .with_extension("plan", "free")
        .with_header(RETRY_AFTER, HeaderValue::from_static("3"))
        .into_response();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()[RETRY_AFTER], "3");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "urn:tenantry:problem:rate_limited");
        assert_eq!(v["title"], "Rate limited");
        assert_eq!(v["status"], 429);
        assert_eq!(v["detail"], "100 requests per minute");
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["plan"], "free");
    }

    #[test]
    fn extensions_cannot_override_standard_members() {
        let p = Problem::new(StatusCode::FORBIDDEN, "x", "X")
            .with_extension("status", 200)
            .with_extension("code", "ok");
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["status"], 403);
        assert_eq!(v["code"], "x");
    }

    #[test]
    fn custom_type_uri_is_used() {
        let p = Problem::new(StatusCode::FORBIDDEN, "x", "X").with_type("https://example.com/x");
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["type"], "https://example.com/x");
    }
}
