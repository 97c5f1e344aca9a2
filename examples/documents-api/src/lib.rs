//! documents-api: the tenantry example. An axum server that composes every tenantry layer
//! into a multi-tenant documents API (this library, so tests can start it in process), and
//! its admin CLI (`src/main.rs`).
//!
//! Request flow: `TenantResolveLayer` (JWT or API key, bound to any subdomain/header
//! selector) → `RateLimitLayer` (per tenant and plan) → `FeatureRules` and per-route
//! `RequireFeature` → `RlsLayer` (a lazy `TenantDb`) → the handler, whose queries run in the
//! tenant's transaction and also filter `WHERE tenant_id = $1`.

pub mod admin;
mod api;
pub mod config;
pub mod database;
mod http;
mod metrics;
pub mod seed;
pub mod server;

pub use config::Settings;
pub use database::Database;
pub use server::{start, Running};
