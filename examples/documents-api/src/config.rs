//! Settings: every one is a CLI flag and an environment variable; a `.env` file is read first.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Where the server and the admin commands find their backends.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL URL of the application role (tenantry_app). Unset: a throwaway PostgreSQL is
    /// started from the local binaries, migrated and seeded with demo tenants.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// PostgreSQL URL of an administrative role, for migrations and tenant administration.
    #[arg(long, env = "DATABASE_ADMIN_URL", global = true)]
    pub database_admin_url: Option<String>,

    /// Redis URL. Set: tenant cache second level, cross-instance invalidation and the Redis
    /// rate limiter. Unset: in-process cache and limiter.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel this server uses (tenant cache, invalidations,
    /// rate limits). Servers that share tenants must share it; separate deployments on one
    /// Redis must not.
    #[arg(
        long,
        env = "REDIS_PREFIX",
        default_value = "documents-api",
        global = true
    )]
    pub redis_prefix: String,

    /// HS256 secret for JWTs. Unset in zero-configuration mode: a random one per run.
    #[arg(long, env = "JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key (RS256/ES256/EdDSA) for verifying JWTs, instead of a secret.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Expected `iss` of JWTs (and the issuer of tokens from the `token` command).
    #[arg(
        long,
        env = "JWT_ISSUER",
        default_value = "tenantry-dev",
        global = true
    )]
    pub jwt_issuer: String,

    /// Expected `aud` of JWTs.
    #[arg(
        long,
        env = "JWT_AUDIENCE",
        default_value = "documents-api",
        global = true
    )]
    pub jwt_audience: String,

    /// Algorithm of JWT_PUBLIC_KEY_FILE: rs256, es256 or eddsa. Unset: read from the PEM
    /// (an RSA key is RS256, an Ed25519 key EdDSA, any other EC key ES256).
    #[arg(long, env = "JWT_ALGORITHM", value_enum, global = true)]
    pub jwt_algorithm: Option<JwtAlgorithm>,

    /// Seconds a verified JWT is remembered, so a client repeating its token skips the
    /// signature check (expiry is still checked on every request). 0 turns the cache off.
    #[arg(long, env = "JWT_CACHE_SECONDS", default_value_t = 60, global = true)]
    pub jwt_cache_seconds: u64,

    /// Base domain for the subdomain selector (`<tenant>.<base domain>`). Unset: subdomains
    /// select nothing.
    #[arg(long, env = "BASE_DOMAIN", global = true)]
    pub base_domain: Option<String>,

    /// Connections in the application role's pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, global = true)]
    pub db_pool_size: usize,

    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:3000", global = true)]
    pub bind: SocketAddr,
}

/// The algorithm of a JWT public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    Eddsa,
}
