use std::error::Error as StdError;
use std::fmt;

use tenantry_core::InvalidFeatureName;

/// The error returned when a layer, a rollout or a rule set is built with an invalid
/// configuration. Builders return it instead of panicking.
///
/// ```
/// use tenantry_feature_gate::{ConfigErrorKind, RequireFeature};
///
/// let err = RequireFeature::new("analytics ").unwrap_err();
/// assert_eq!(err.kind(), ConfigErrorKind::InvalidFeatureName);
/// assert!(err.to_string().contains("analytics "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    detail: Box<str>,
    source: Option<InvalidFeatureName>,
}

/// What was wrong with a configuration. See [`ConfigError::kind`].
///
/// ```
/// use tenantry_feature_gate::{ConfigErrorKind, Rollout};
///
/// assert_eq!(Rollout::percent(101).unwrap_err().kind(), ConfigErrorKind::InvalidPercentage);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A feature name is empty, too long, or has whitespace or other characters outside
    /// `a-z A-Z 0-9 _ - . :`.
    InvalidFeatureName,
    /// `RequireAnyFeature` or `RequireAllFeatures` was given no feature at all.
    NoFeatures,
    /// A rollout percentage above 100 % (10,000 basis points).
    InvalidPercentage,
    /// The upgrade link is not a valid URI reference.
    InvalidUpgradeUrl,
    /// Two rollouts were registered for the same feature.
    DuplicateRollout,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, detail: impl Into<Box<str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn invalid_feature_name(err: InvalidFeatureName) -> Self {
        Self {
            kind: ConfigErrorKind::InvalidFeatureName,
            detail: err.to_string().into(),
            source: Some(err),
        }
    }

    /// What was wrong.
    ///
    /// ```
    /// use tenantry_feature_gate::{ConfigErrorKind, RequireAnyFeature};
    ///
    /// let err = RequireAnyFeature::new(Vec::<&str>::new()).unwrap_err();
    /// assert_eq!(err.kind(), ConfigErrorKind::NoFeatures);
    /// ```
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl StdError for ConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// Validates a feature name with the same rule as [`tenantry_core::FeatureSet`], so a name
/// that passes here can be found in a tenant's features.
pub(crate) fn validate_feature_name(name: &str) -> Result<Box<str>, ConfigError> {
    tenantry_core::FeatureSet::validate_name(name).map_err(ConfigError::invalid_feature_name)?;
    Ok(name.into())
}
