//! Plan-based features for multi-tenant tower services: per-tenant grants and revocations,
//! gradual rollouts, and gates that answer 403 `application/problem+json`.
//!
//! - A tenant's **effective features** are its plan's features + grants − revocations,
//!   computed once when its [`Tenant`](tenantry_core::Tenant) record is built
//!   ([`Tenant::features`](tenantry_core::Tenant::features)), never per request.
//! - [`FeatureRules`] adds **rollouts** on top: a feature for a stable percentage of tenants
//!   ([`rollout_bucket`]: SHA-256 of tenant id and feature name, so an answer never flips
//!   between requests or instances) or for an allow-list ([`Rollout`]). A tenant-level
//!   revocation still wins over a rollout. [`FeatureRules::is_enabled`] is the one decision
//!   everything below uses.
//! - [`RequireFeature`], [`RequireAnyFeature`] and [`RequireAllFeatures`] are layers for a route
//!   or a router: 403 `feature_not_available` naming the feature and the tenant's actual plan,
//!   with an optional upgrade link; the response is replaceable
//!   ([`ResponseForFeatureRejection`]).
//! - [`Features`] (a plain function, [`Features::from_extensions`], and an axum extractor with
//!   the `axum` feature) for handlers that branch instead of rejecting.
//! - **Fail closed**: a request without a tenant in its extensions never gets a feature; it is a
//!   500 `misconfigured` that says which layer is missing ([`TenantMissing`]). Inactive tenants
//!   get no feature either.
//!
//! The gates read the tenant as `Arc<Tenant>` from the request extensions, where the
//! tenant-resolve layer puts it, and the [`FeatureRules`] from the extensions too, where the
//! `FeatureRules` layer puts them; so install both in front (outside) of the gates.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower::util::MapRequestLayer;
//! use tenantry_core::{Plan, Slug, Tenant, TenantId};
//! use tenantry_feature_gate::{FeatureRules, RequireFeature, Rollout};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let acme = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::free()).build());
//! let rules = FeatureRules::builder()
//!     .rollout("new_editor", Rollout::percent(0)?.allow(acme.id()))
//!     .build()?;
//!
//! // The stack of one route: tenant, rules, gate, handler.
//! let route = |gate: RequireFeature| {
//!     let tenant = acme.clone();
//!     ServiceBuilder::new()
//!         // Stands in for TenantResolveLayer.
//!         .layer(MapRequestLayer::new(move |mut req: Request<Full<Bytes>>| {
//!             req.extensions_mut().insert(tenant.clone());
//!             req
//!         }))
//!         .layer(rules.clone())
//!         .layer(gate)
//!         .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!             Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
//!         }))
//! };
//!
//! // On the allow-list: let through.
//! let editor = route(RequireFeature::new("new_editor")?);
//! assert_eq!(editor.oneshot(Request::new(Full::default())).await?.status(), StatusCode::OK);
//!
//! // Not on the free plan: 403 with the plan named.
//! let analytics = route(RequireFeature::new("analytics")?.upgrade_url("https://example.com/upgrade")?);
//! let res = analytics.oneshot(Request::new(Full::default())).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! let body: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
//! assert_eq!(body["code"], "feature_not_available");
//! assert_eq!(body["feature"], "analytics");
//! assert_eq!(body["plan"], "free");
//! assert_eq!(body["upgrade_url"], "https://example.com/upgrade");
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! - `axum`: `Features` implements axum 0.8's `FromRequestParts`.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod error;
mod features;
mod rejection;
mod require;
mod requirement;
mod rollout;
mod rules;

pub use error::{ConfigError, ConfigErrorKind};
pub use features::Features;
pub use rejection::{
    FeatureNotAvailable, FeatureRejection, ProblemRejection, ResponseForFeatureRejection,
    TenantMissing,
};
pub use require::{
    FeatureGate, RequireAllFeatures, RequireAnyFeature, RequireFeature, ResponseFuture,
};
pub use requirement::Requirement;
pub use rollout::{rollout_bucket, Rollout, ROLLOUT_BUCKETS};
pub use rules::{AddFeatureRules, FeatureRules, FeatureRulesBuilder};
