//! Identify the tenant of a request, bind it to a verified credential, reject everything else.
//!
//! [`TenantResolveLayer`] turns each request into exactly one `Arc<tenantry_core::Tenant>` in
//! the request extensions, or a problem+json [`Rejection`].
//!
//! # Sources
//!
//! - **Credentials**, which prove who is calling: a bearer **JWT** ([`JwtVerifier`]: keys
//!   pinned to one algorithm each, `exp`/`iss`/`aud` required, `nbf` checked, tenant claim
//!   `tenant_id` by default) or an **API key** (`Authorization: Bearer` or `X-API-Key`,
//!   looked up by SHA-256 hash).
//! - **Selectors**, which only say which tenant the caller means: the **subdomain**
//!   ([`HostRules`]: exactly `<label>.<base domain>`) and the **`X-Tenant-ID`** header
//!   (tenant id or slug).
//!
//! # Binding rules
//!
//! 1. A selector alone never grants access: 401 `tenant_required` with
//!    `WWW-Authenticate: Bearer`, decided before any lookup. Deployments behind an
//!    authenticating gateway may opt in with
//!    [`dangerously_trust_bare_selector`](TenantResolveBuilder::dangerously_trust_bare_selector).
//! 2. Every source present must name the same tenant, else 403 `tenant_mismatch` and a
//!    `WARN` event on target `tenantry::resolve`.
//! 3. Invalid credentials (bad signature, expired, wrong audience, malformed API key…) are
//!    refused with 401 `invalid_credentials` before the store is asked anything. An API key
//!    the store does not know is also 401 `invalid_credentials`, and so is a request that
//!    presents more than one credential (a JWT and an API key), even for the same tenant:
//!    one request, one principal.
//! 4. A tenant that is unknown, suspended, pending or deleted gets one uniform 403
//!    `tenant_unavailable`, only ever sent to an authenticated caller. A store failure is
//!    503 `service_unavailable`, never 500.
//! 5. Malformed selectors (two `Host` values, a `Host` that disagrees with the request
//!    target, an `X-Tenant-ID` that is neither an id nor a slug) are 400
//!    `invalid_tenant_selector`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use jsonwebtoken::{encode, EncodingKey, Header};
//! use tenantry_core::{InMemoryStore, Plan, Slug, Tenant, TenantId};
//! use tenantry_resolve::{HostRules, JwtVerifier, Principal, TenantResolveLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const SECRET: &[u8] = b"a test secret that is 32 bytes or more";
//! let store = InMemoryStore::new();
//! let acme = Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::pro()).build();
//! let acme_id = acme.id();
//! store.insert(acme);
//!
//! let layer = TenantResolveLayer::builder(store)
//!     .subdomains(HostRules::new(["example.com"])?)
//!     .jwt(
//!         JwtVerifier::builder()
//!             .hs256(SECRET)
//!             .issuer("https://auth.example.com")
//!             .audience("documents-api")
//!             .build()?,
//!     )
//!     .build()?;
//!
//! let svc = ServiceBuilder::new().layer(layer).service_fn(|req: Request<Full<Bytes>>| async move {
//!     let tenant = req.extensions().get::<Arc<Tenant>>().expect("layer installed");
//!     let who = req.extensions().get::<Principal>().and_then(|p| p.subject()).unwrap_or("");
//!     let body = format!("{} {}", tenant.slug(), who);
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
//! });
//!
//! let now = jsonwebtoken::get_current_timestamp();
//! let claims = serde_json::json!({
//!     "sub": "user-1", "tenant_id": acme_id.to_string(),
//!     "iss": "https://auth.example.com", "aud": "documents-api", "exp": now + 60,
//! });
//! let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET))?;
//!
//! // The token and the subdomain agree: served.
//! let req = Request::builder()
//!     .header("host", "acme.example.com")
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(Full::default())?;
//! assert_eq!(svc.clone().oneshot(req).await?.status(), 200);
//!
//! // The same token on another tenant's subdomain: 403 tenant_mismatch.
//! let req = Request::builder()
//!     .header("host", "globex.example.com")
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(Full::default())?;
//! assert_eq!(svc.oneshot(req).await?.status(), 403);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `axum`: extractors [`extract::Tenant`] and [`Principal`] (as `FromRequestParts`).
//! - `tracing`: records `tenant.id`, `tenant.slug` and `tenant.plan` on the current span
//!   (declare them as `tracing::field::Empty` on your request span).
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod config;
#[cfg(feature = "axum")]
pub mod extract;
mod host;
mod jwt;
mod layer;
mod rejection;
mod resolve;
mod selector;
mod service;

pub use config::{ConfigError, ConfigErrorKind};
pub use host::HostRules;
pub use jwt::{JwtVerifier, JwtVerifierBuilder, Principal};
pub use layer::{TenantResolveBuilder, TenantResolveLayer};
pub use rejection::{DefaultRejection, Rejection, RejectionKind, ResponseForRejection};
pub use resolve::CredentialKind;
pub use selector::TenantRef;
pub use service::{ResponseFuture, TenantResolve};
