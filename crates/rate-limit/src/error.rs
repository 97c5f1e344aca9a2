//! Error types: configuration errors from builders, and backend errors from limiters.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// A builder was given an invalid setting.
#[derive(Debug, Clone)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: Cow<'static, str>,
}

/// What kind of setting was invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A quota of zero requests per minute or a zero burst.
    InvalidQuota,
    /// A capacity, share, timeout or threshold out of range.
    InvalidSetting,
    /// A key prefix or policy name that cannot be used.
    InvalidName,
    /// The Redis client could not be built from the URL or options.
    Redis,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rate-limit configuration: {}", self.message)
    }
}

impl StdError for ConfigError {}

/// A limiter could not take a decision.
///
/// Cloning is cheap: when one backend call decides for several requests, each of them gets
/// the call's error.
#[derive(Debug, Clone)]
pub struct LimiterError {
    kind: LimiterErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

/// Why a limiter could not take a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimiterErrorKind {
    /// The backend failed or did not answer within its timeout.
    Backend,
    /// The circuit breaker is open after consecutive backend failures.
    CircuitOpen,
    /// The in-process limiter holds its maximum number of active keys.
    Capacity,
    /// The backend answered something that is not a decision.
    Protocol,
}

impl LimiterError {
    pub(crate) fn new(kind: LimiterErrorKind) -> Self {
        Self { kind, source: None }
    }

    pub(crate) fn with_source(
        kind: LimiterErrorKind,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            source: Some(Arc::from(source.into())),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> LimiterErrorKind {
        self.kind
    }
}

impl fmt::Display for LimiterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            LimiterErrorKind::Backend => "rate-limit backend failed",
            LimiterErrorKind::CircuitOpen => "rate-limit backend circuit is open",
            LimiterErrorKind::Capacity => "rate limiter is at its key capacity",
            LimiterErrorKind::Protocol => "rate-limit backend sent an unexpected reply",
        })
    }
}

impl StdError for LimiterError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
