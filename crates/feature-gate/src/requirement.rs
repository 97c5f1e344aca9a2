use crate::error::{validate_feature_name, ConfigError, ConfigErrorKind};

/// How a gate combines its features: the kind of [`RequireFeature`](crate::RequireFeature),
/// [`RequireAnyFeature`](crate::RequireAnyFeature) or
/// [`RequireAllFeatures`](crate::RequireAllFeatures). Reported by
/// [`FeatureNotAvailable::requirement`](crate::FeatureNotAvailable::requirement).
///
/// ```
/// use tenantry_feature_gate::Requirement;
///
/// assert_eq!(Requirement::AnyOf.as_str(), "any_of");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Requirement {
    /// One feature.
    One,
    /// At least one of several features.
    AnyOf,
    /// Every one of several features.
    AllOf,
}

impl Requirement {
    /// `"one"`, `"any_of"` or `"all_of"`, as in the problem body's `requirement` member.
    ///
    /// ```
    /// use tenantry_feature_gate::Requirement;
    ///
    /// assert_eq!(Requirement::AllOf.as_str(), "all_of");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::AnyOf => "any_of",
            Self::AllOf => "all_of",
        }
    }
}

/// A validated requirement: the kind and the feature names, never empty.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FeatureRequirement {
    kind: Requirement,
    features: Box<[Box<str>]>,
}

impl FeatureRequirement {
    pub(crate) fn one(feature: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            kind: Requirement::One,
            features: Box::new([validate_feature_name(feature)?]),
        })
    }

    pub(crate) fn many<I, N>(kind: Requirement, features: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut names: Vec<Box<str>> = Vec::new();
        for feature in features {
            let name = validate_feature_name(feature.as_ref())?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::NoFeatures,
                format!(
                    "a {} feature requirement needs at least one feature",
                    kind.as_str()
                ),
            ));
        }
        Ok(Self {
            kind,
            features: names.into(),
        })
    }

    pub(crate) fn kind(&self) -> Requirement {
        self.kind
    }

    pub(crate) fn features(&self) -> &[Box<str>] {
        &self.features
    }

    /// `Ok` when satisfied, else the features that are missing, in the order configured
    /// (never empty).
    pub(crate) fn check(&self, enabled: impl Fn(&str) -> bool) -> Result<(), Box<[Box<str>]>> {
        let satisfied = match self.kind {
            Requirement::One | Requirement::AllOf => self.features.iter().all(|f| enabled(f)),
            Requirement::AnyOf => self.features.iter().any(|f| enabled(f)),
        };
        if satisfied {
            return Ok(());
        }
        Err(self
            .features
            .iter()
            .filter(|f| !enabled(f))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_when_built() {
        for bad in [
            "",
            " ",
            "analytics ",
            " analytics",
            "new editor",
            "a\tb",
            "é",
        ] {
            let err = FeatureRequirement::one(bad).unwrap_err();
            assert_eq!(err.kind(), ConfigErrorKind::InvalidFeatureName, "{bad:?}");
            let err = FeatureRequirement::many(Requirement::AnyOf, ["ok", bad]).unwrap_err();
            assert_eq!(err.kind(), ConfigErrorKind::InvalidFeatureName, "{bad:?}");
        }
    }

    #[test]
    fn empty_combinations_are_rejected() {
        let none: [&str; 0] = [];
        for kind in [Requirement::AnyOf, Requirement::AllOf] {
            let err = FeatureRequirement::many(kind, none).unwrap_err();
            assert_eq!(err.kind(), ConfigErrorKind::NoFeatures);
        }
    }

    #[test]
    fn all_of_reports_only_the_missing_features_in_order() {
        let req = FeatureRequirement::many(Requirement::AllOf, ["c", "a", "b", "a"]).unwrap();
        let missing = req.check(|f| f == "a").unwrap_err();
        assert_eq!(&*missing, [Box::from("c"), Box::from("b")]);
        assert!(req.check(|_| true).is_ok());
    }

    #[test]
    fn any_of_needs_one_and_reports_all_when_none() {
        let req = FeatureRequirement::many(Requirement::AnyOf, ["a", "b"]).unwrap();
        assert!(req.check(|f| f == "b").is_ok());
        let missing = req.check(|_| false).unwrap_err();
        assert_eq!(&*missing, [Box::from("a"), Box::from("b")]);
    }
}
