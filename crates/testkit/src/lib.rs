//! Test fixtures for tenantry, against real servers.
//!
//! - [`TestDb::new`]: a fresh database for one test, cloned from a template that has every
//!   migration applied, with an admin connection and an application-role connection; dropped
//!   when the fixture is dropped.
//! - [`TestRedis::new`]: a Redis client and a key prefix unique to one test; the test's keys
//!   are deleted when the fixture is dropped.
//! - [`OwnedRedis`] and [`RedisCluster`]: redis-server processes a test starts, stops and
//!   restarts itself (outage tests, Redis Cluster tests).
//! - [`ThrowawayPostgres`]: a PostgreSQL cluster in a temporary directory, for tests and for
//!   the example server's zero-configuration mode.
//!
//! Servers: `TENANTRY_DATABASE_URL` (an administrative role; default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `TENANTRY_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). When the variable is unset and nothing answers at the default
//! address, a throwaway server is started from the locally installed binaries (`initdb` and
//! `postgres`, `redis-server`) on a free port, and removed when the test process exits. When
//! none is installed, the fixture fails with a message that says what to install: a test is
//! never skipped silently. `TENANTRY_TESTKIT_THROWAWAY=1` always starts throwaway servers
//! (when the URL variables are unset), leaving the local ones untouched.
//!
//! Fixtures panic on setup failures: they are for tests only.
#![allow(clippy::missing_panics_doc)]

mod postgres;
mod redis;
mod server;
mod throwaway;

pub use postgres::{pool, TestDb, APP_ROLE, OWNER_ROLE};
pub use redis::{OwnedRedis, RedisCluster, TestRedis};
pub use throwaway::{ThrowawayError, ThrowawayPostgres};

/// Whether `TENANTRY_TESTKIT_THROWAWAY=1` asks for throwaway servers even when local ones run.
fn force_throwaway() -> bool {
    std::env::var("TENANTRY_TESTKIT_THROWAWAY").is_ok_and(|v| v == "1")
}
