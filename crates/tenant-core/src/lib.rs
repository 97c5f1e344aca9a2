//! Core types shared by every tenantry crate.
//!
//! - [`TenantId`] and [`Slug`]: the two ways a tenant is named, both validated on parse.
//! - [`Plan`], [`Limits`] and [`FeatureSet`]: plans are data. The seed's `free`, `pro` and
//!   `enterprise` plans are provided as defaults ([`Plan::free`], [`Plan::pro`],
//!   [`Plan::enterprise`]), not as a closed enum.
//! - [`Tenant`]: one tenant record with its *effective* features and limits, computed once
//!   when the record is built, never per request.
//! - [`TenantStore`]: how layers look tenants up (by id, by slug, by API-key hash).
//! - [`Problem`]: the one RFC 9457 `application/problem+json` rejection every layer returns.
//!
//! ```
//! use tenantry_core::{Plan, Slug, Tenant, TenantId, TenantStatus};
//!
//! let id: TenantId = "9f1c2d4e-8a7b-4c3d-9e2f-112233445566".parse()?;
//! let tenant = Tenant::builder(id, Slug::new("acme")?, Plan::pro())
//!     .grant("custom_webhooks")
//!     .build();
//! assert_eq!(tenant.status(), TenantStatus::Active);
//! assert!(tenant.features().contains("analytics"));
//! assert!(tenant.features().contains("custom_webhooks"));
//! assert_eq!(tenant.limits().requests_per_minute, 1_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod id;
mod plan;
pub mod problem;
mod store;
mod tenant;

pub use id::{ParseSlugError, ParseTenantIdError, Slug, TenantId};
pub use plan::{FeatureSet, InvalidFeatureName, Limits, Plan};
pub use problem::Problem;
pub use store::{ApiKeyHash, InMemoryStore, StoreError, StoreErrorKind, TenantStore};
pub use tenant::{LimitOverrides, Placement, Tenant, TenantBuilder, TenantStatus};
