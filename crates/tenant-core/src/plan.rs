use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The limits a plan (or a tenant override) sets.
///
/// ```
/// use tenantry_core::Plan;
///
/// let free = Plan::free();
/// assert_eq!(free.limits().requests_per_minute, 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Sustained request rate, per minute.
    pub requests_per_minute: u32,
    /// How many requests may arrive at once on an idle key (the GCRA burst).
    pub burst: u32,
    /// `statement_timeout` set for every transaction of this tenant.
    #[serde(with = "millis")]
    pub statement_timeout: Duration,
    /// At most this many database transactions of one tenant at once; `None` means no cap
    /// beyond the pool's own size.
    pub max_concurrent_transactions: Option<NonZeroU32>,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A set of feature names.
///
/// Names are validated: 1 to 64 characters from `a-z A-Z 0-9 _ - . :`. No whitespace, no
/// empty names, so a typo such as `"analytics "` is caught where the set is built.
///
/// ```
/// use tenantry_core::FeatureSet;
///
/// let set = FeatureSet::try_from_names(["analytics", "export"])?;
/// assert!(set.contains("analytics"));
/// assert!(!set.contains("custom_webhooks"));
/// assert!(FeatureSet::try_from_names(["bad name"]).is_err());
/// # Ok::<(), tenantry_core::InvalidFeatureName>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct FeatureSet(BTreeSet<Box<str>>);

impl FeatureSet {
    /// The longest feature name accepted.
    pub const MAX_NAME_LEN: usize = 64;

    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from names, validating each.
    pub fn try_from_names<I, S>(names: I) -> Result<Self, InvalidFeatureName>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Self::new();
        for name in names {
            set.insert(name.as_ref())?;
        }
        Ok(set)
    }

    /// Checks that `name` is a valid feature name.
    pub fn validate_name(name: &str) -> Result<(), InvalidFeatureName> {
        let ok = !name.is_empty()
            && name.len() <= Self::MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if ok {
            Ok(())
        } else {
            Err(InvalidFeatureName { name: name.into() })
        }
    }

    /// Adds a feature; returns an error (and leaves the set unchanged) for an invalid name.
    pub fn insert(&mut self, name: &str) -> Result<(), InvalidFeatureName> {
        Self::validate_name(name)?;
        self.0.insert(name.into());
        Ok(())
    }

    /// Removes a feature, returning whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        self.0.remove(name)
    }

    /// Whether the set holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// The names, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().map(|s| &**s)
    }

    /// How many features the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl TryFrom<Vec<String>> for FeatureSet {
    type Error = InvalidFeatureName;

    fn try_from(names: Vec<String>) -> Result<Self, Self::Error> {
        Self::try_from_names(names)
    }
}

impl From<FeatureSet> for Vec<String> {
    fn from(set: FeatureSet) -> Self {
        set.0.into_iter().map(String::from).collect()
    }
}

/// The error returned for an empty, too long or otherwise malformed feature name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFeatureName {
    name: Box<str>,
}

impl InvalidFeatureName {
    /// The rejected name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for InvalidFeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid feature name {:?}: expected 1 to 64 characters from a-z A-Z 0-9 _ - . :",
            self.name
        )
    }
}

impl std::error::Error for InvalidFeatureName {}

/// A plan: a name, its limits and the features it includes.
///
/// Plans are data: load them from the `plans` table or build your own. The seed's three plans
/// are available as defaults.
///
/// ```
/// use std::time::Duration;
/// use tenantry_core::{FeatureSet, Limits, Plan};
///
/// let team = Plan::new(
///     "team",
///     Limits {
///         requests_per_minute: 500,
///         burst: 50,
///         statement_timeout: Duration::from_secs(3),
///         max_concurrent_transactions: None,
///     },
///     FeatureSet::try_from_names(["analytics"])?,
/// );
/// assert_eq!(team.name(), "team");
/// # Ok::<(), tenantry_core::InvalidFeatureName>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    name: Box<str>,
    limits: Limits,
    features: FeatureSet,
}

impl Plan {
    /// A plan with the given name, limits and included features.
    pub fn new(name: impl Into<Box<str>>, limits: Limits, features: FeatureSet) -> Self {
        Self {
            name: name.into(),
            limits,
            features,
        }
    }

    /// The seed's free plan: 100 requests per minute, no paid features.
    pub fn free() -> Self {
        Self::seed_plan("free", 100, 2, 2, &[])
    }

    /// The seed's pro plan: 1,000 requests per minute and `analytics`.
    pub fn pro() -> Self {
        Self::seed_plan("pro", 1_000, 5, 8, &["analytics"])
    }

    /// The seed's enterprise plan: 10,000 requests per minute, `analytics` and
    /// `custom_webhooks`.
    pub fn enterprise() -> Self {
        Self::seed_plan(
            "enterprise",
            10_000,
            15,
            32,
            &["analytics", "custom_webhooks"],
        )
    }

    /// The three default plans, free, pro and enterprise.
    pub fn defaults() -> [Plan; 3] {
        [Self::free(), Self::pro(), Self::enterprise()]
    }

    fn seed_plan(name: &str, rpm: u32, timeout_secs: u64, max_tx: u32, features: &[&str]) -> Self {
        let mut set = FeatureSet::new();
        for f in features {
            // The names above are literals that satisfy `validate_name`; a failure is
            // impossible, and ignoring it keeps this constructor infallible.
            let _ = set.insert(f);
        }
        Self::new(
            name,
            Limits {
                requests_per_minute: rpm,
                burst: rpm,
                statement_timeout: Duration::from_secs(timeout_secs),
                max_concurrent_transactions: NonZeroU32::new(max_tx),
            },
            set,
        )
    }

    /// The plan's name (`"free"`, `"pro"`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plan's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The features the plan includes.
    pub fn features(&self) -> &FeatureSet {
        &self.features
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_plans_carry_the_seed_limits() {
        assert_eq!(Plan::free().limits().requests_per_minute, 100);
        assert_eq!(Plan::pro().limits().requests_per_minute, 1_000);
        assert_eq!(Plan::enterprise().limits().requests_per_minute, 10_000);
        assert!(!Plan::free().features().contains("analytics"));
        assert!(Plan::pro().features().contains("analytics"));
        assert!(Plan::enterprise().features().contains("custom_webhooks"));
    }

    #[test]
    fn feature_names_are_validated() {
        for bad in ["", " ", "a b", "analytics ", "\tx", "é", &"a".repeat(65)] {
            assert!(FeatureSet::validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for ok in [
            "analytics",
            "custom_webhooks",
            "beta.search",
            "v2:export",
            "a-b",
        ] {
            assert!(FeatureSet::validate_name(ok).is_ok(), "{ok:?} rejected");
        }
    }

    #[test]
    fn feature_set_serde_validates() {
        assert!(serde_json::from_str::<FeatureSet>(r#"["ok","not ok"]"#).is_err());
        let set: FeatureSet = serde_json::from_str(r#"["b","a","b"]"#).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn limits_serialize_timeout_as_millis() {
        let json = serde_json::to_value(Plan::free().limits()).unwrap();
        assert_eq!(json["statement_timeout"], 2000);
        let back: Limits = serde_json::from_value(json).unwrap();
        assert_eq!(&back, Plan::free().limits());
    }
}
