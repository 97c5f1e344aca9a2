//! Configuration errors.

use std::borrow::Cow;
use std::fmt;

/// Why a layer or verifier could not be built. Returned by every fallible builder of this
/// crate; nothing here panics on bad configuration.
///
/// ```
/// use tenantry_resolve::{ConfigErrorKind, HostRules};
///
/// let err = HostRules::new(["not a domain"]).unwrap_err();
/// assert_eq!(err.kind(), ConfigErrorKind::InvalidBaseDomain);
/// ```
#[derive(Debug)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What kind of configuration error a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A base domain is not a valid DNS name, or base domains overlap.
    InvalidBaseDomain,
    /// A header or claim name is invalid.
    InvalidName,
    /// No credential source (JWT or API key) is configured and bare selectors are not trusted,
    /// so no request could ever be served.
    NoCredentialSource,
    /// A key could not be parsed, or the key set is inconsistent (duplicate or missing `kid`,
    /// mixed symmetric and public keys, unsupported algorithm).
    InvalidKey,
    /// A JWKS document could not be read or parsed.
    InvalidJwks,
    /// The JWT issuer or audience was not set; both are required.
    MissingIssuerOrAudience,
    /// The JWT leeway is larger than [`JwtVerifier::MAX_LEEWAY`](crate::JwtVerifier::MAX_LEEWAY).
    LeewayTooLarge,
    /// The verified-token cache was given no room or no time to live.
    InvalidCache,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant-resolve configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
