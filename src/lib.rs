//! tenantry: tower middleware that makes any Rust HTTP service a safe multi-tenant SaaS API.
//!
//! This umbrella crate re-exports the tenantry crates; depend on the individual crates if you
//! only need one. With the `migrate` feature it also carries the SQL migrations (tenants,
//! plans, API keys, the example's documents table, the application role and row-level
//! security) and the runner that applies them.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub use tenantry_core as core;

#[cfg(feature = "migrate")]
pub mod migrate;
