//! rls-pool against real PostgreSQL (and pgbouncer), one test binary to keep builds cheap.

mod doctor;
mod fairness;
mod fused;
mod network;
mod placement;
mod props;
mod store;
mod support;
mod tx;
