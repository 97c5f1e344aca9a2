use std::fmt;

/// Why a [`CachedStore`](crate::CachedStore) could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
}

/// What kind of configuration mistake a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A time to live of zero: nothing would ever be cached.
    ZeroTtl,
    /// A capacity of zero: nothing would ever be cached.
    ZeroCapacity,
    /// A Redis key prefix that is empty or contains `{` or `}` (it would break the hash tags
    /// that keep each tenant's keys in one Redis Cluster slot).
    InvalidPrefix,
    /// A Redis per-command timeout of zero (fred would wait forever).
    ZeroTimeout,
    /// The Redis level needs a Tokio runtime to listen for invalidations, and none is running.
    NoRuntime,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind) -> Self {
        Self { kind }
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ConfigErrorKind::ZeroTtl => "cache time to live must be greater than zero",
            ConfigErrorKind::ZeroCapacity => "cache capacity must be greater than zero",
            ConfigErrorKind::InvalidPrefix => {
                "Redis key prefix must be non-empty and must not contain `{` or `}`"
            }
            ConfigErrorKind::ZeroTimeout => "Redis command timeout must be greater than zero",
            ConfigErrorKind::NoRuntime => {
                "the Redis level must be built inside a Tokio runtime (it spawns its invalidation listener)"
            }
        })
    }
}

impl std::error::Error for ConfigError {}
