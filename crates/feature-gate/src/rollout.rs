use std::collections::HashSet;

use sha2::{Digest, Sha256};
use tenantry_core::TenantId;

use crate::error::{ConfigError, ConfigErrorKind};

/// How many rollout buckets there are: one per basis point (0.01 %).
pub const ROLLOUT_BUCKETS: u16 = 10_000;

/// The rollout bucket of a tenant for a feature, in `0..ROLLOUT_BUCKETS`.
///
/// A tenant is inside a rollout of `p` basis points when its bucket is below `p`, so raising a
/// percentage only ever adds tenants, and each feature draws its own, independent sample of
/// tenants.
///
/// The bucket is the first 8 bytes, read as a big-endian `u64`, of
/// `SHA-256(16 bytes of the tenant's UUID ‖ UTF-8 feature name)`, modulo 10,000. It does not
/// depend on the process, the platform or the Rust version (std's `DefaultHasher` is randomly
/// seeded and may change between releases), so a tenant's answer never flips between
/// requests, restarts or instances, and other languages can compute the same bucket.
///
/// ```
/// use tenantry_core::TenantId;
/// use tenantry_feature_gate::{rollout_bucket, ROLLOUT_BUCKETS};
///
/// let id: TenantId = "9f1c2d4e-8a7b-4c3d-9e2f-112233445566".parse()?;
/// let bucket = rollout_bucket(id, "new_editor");
/// assert!(bucket < ROLLOUT_BUCKETS);
/// assert_eq!(bucket, rollout_bucket(id, "new_editor"));
/// # Ok::<(), tenantry_core::ParseTenantIdError>(())
/// ```
pub fn rollout_bucket(tenant: TenantId, feature: &str) -> u16 {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_uuid().as_bytes());
    hasher.update(feature.as_bytes());
    let digest = hasher.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    // 2^64 is not a multiple of 10,000, but the bias is below 1e-15: irrelevant here.
    let bucket = u64::from_be_bytes(head) % u64::from(ROLLOUT_BUCKETS);
    // The remainder is below 10,000, so it always fits.
    u16::try_from(bucket).unwrap_or(0)
}

/// A gradual rollout of one feature: a percentage of all tenants, plus an allow-list.
///
/// Register it for a feature in [`FeatureRules`](crate::FeatureRules). A rollout only ever adds
/// a feature on top of plans and grants; a tenant-level revocation still wins (see
/// [`FeatureRules::is_enabled`](crate::FeatureRules::is_enabled)).
///
/// ```
/// use tenantry_core::TenantId;
/// use tenantry_feature_gate::Rollout;
///
/// let pilot = TenantId::new_v4();
/// let rollout = Rollout::percent(10)?.allow(pilot);
/// assert_eq!(rollout.basis_points(), 1_000);
/// assert!(rollout.includes(pilot, "new_editor"));
/// assert!(Rollout::percent(101).is_err());
/// # Ok::<(), tenantry_feature_gate::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    basis_points: u16,
    allow: HashSet<TenantId>,
}

impl Rollout {
    /// A rollout to nobody yet: 0 % and an empty allow-list.
    ///
    /// ```
    /// use tenantry_core::TenantId;
    /// use tenantry_feature_gate::Rollout;
    ///
    /// assert!(!Rollout::none().includes(TenantId::new_v4(), "beta"));
    /// ```
    pub fn none() -> Self {
        Self::default()
    }

    /// A rollout to `percent` % of tenants (0 to 100).
    ///
    /// ```
    /// use tenantry_core::TenantId;
    /// use tenantry_feature_gate::Rollout;
    ///
    /// assert!(Rollout::percent(100)?.includes(TenantId::new_v4(), "beta"));
    /// assert!(Rollout::percent(200).is_err());
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn percent(percent: u8) -> Result<Self, ConfigError> {
        if percent > 100 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidPercentage,
                format!("rollout percentage {percent} is above 100"),
            ));
        }
        Self::basis_points_of(u16::from(percent) * 100)
    }

    /// A rollout to `basis_points` / 100 % of tenants (0 to 10,000), for steps finer than
    /// one percent.
    ///
    /// ```
    /// use tenantry_feature_gate::Rollout;
    ///
    /// assert_eq!(Rollout::basis_points_of(250)?.basis_points(), 250); // 2.5 %
    /// assert!(Rollout::basis_points_of(10_001).is_err());
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn basis_points_of(basis_points: u16) -> Result<Self, ConfigError> {
        if basis_points > ROLLOUT_BUCKETS {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidPercentage,
                format!("rollout of {basis_points} basis points is above 10000 (100 %)"),
            ));
        }
        Ok(Self {
            basis_points,
            allow: HashSet::new(),
        })
    }

    /// Adds a tenant to the allow-list: it gets the feature whatever its bucket.
    ///
    /// ```
    /// use tenantry_core::TenantId;
    /// use tenantry_feature_gate::Rollout;
    ///
    /// let pilot = TenantId::new_v4();
    /// assert!(Rollout::none().allow(pilot).includes(pilot, "beta"));
    /// ```
    pub fn allow(mut self, tenant: TenantId) -> Self {
        self.allow.insert(tenant);
        self
    }

    /// Adds several tenants to the allow-list.
    ///
    /// ```
    /// use tenantry_core::TenantId;
    /// use tenantry_feature_gate::Rollout;
    ///
    /// let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    /// let rollout = Rollout::none().allow_all([a, b]);
    /// assert!(rollout.includes(a, "beta") && rollout.includes(b, "beta"));
    /// ```
    pub fn allow_all(mut self, tenants: impl IntoIterator<Item = TenantId>) -> Self {
        self.allow.extend(tenants);
        self
    }

    /// The share of tenants included, in basis points (10,000 = 100 %).
    ///
    /// ```
    /// use tenantry_feature_gate::Rollout;
    ///
    /// assert_eq!(Rollout::percent(5)?.basis_points(), 500);
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn basis_points(&self) -> u16 {
        self.basis_points
    }

    /// Whether `tenant` is on the allow-list.
    ///
    /// ```
    /// use tenantry_core::TenantId;
    /// use tenantry_feature_gate::Rollout;
    ///
    /// let pilot = TenantId::new_v4();
    /// assert!(Rollout::none().allow(pilot).is_allowed(pilot));
    /// assert!(!Rollout::none().is_allowed(pilot));
    /// ```
    pub fn is_allowed(&self, tenant: TenantId) -> bool {
        self.allow.contains(&tenant)
    }

    /// Whether this rollout of `feature` includes `tenant`: it is on the allow-list, or its
    /// [`rollout_bucket`] is below the percentage. This looks at the rollout alone; use
    /// [`FeatureRules::is_enabled`](crate::FeatureRules::is_enabled) for the full decision.
    ///
    /// ```
    /// use tenantry_core::TenantId;
    /// use tenantry_feature_gate::{rollout_bucket, Rollout};
    ///
    /// let t = TenantId::new_v4();
    /// let half = Rollout::percent(50)?;
    /// assert_eq!(half.includes(t, "beta"), rollout_bucket(t, "beta") < 5_000);
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn includes(&self, tenant: TenantId, feature: &str) -> bool {
        // The allow-list first: it is cheaper than a hash.
        self.is_allowed(tenant)
            || (self.basis_points > 0 && rollout_bucket(tenant, feature) < self.basis_points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> TenantId {
        TenantId::from_uuid(Uuid::from_u128(n)).unwrap()
    }

    #[test]
    fn bucket_matches_the_documented_sha256_construction() {
        // Golden value, computed outside Rust so the formula stays pinned across versions:
        //   printf '\x9f\x1c\x2d\x4e\x8a\x7b\x4c\x3d\x9e\x2f\x11\x22\x33\x44\x55\x66new_editor' \
        //     | sha256sum
        //   = 5acaef0f1b6d3907 96d4ab0d...
        // 0x5acaef0f1b6d3907 = 6542304256872757511, and 6542304256872757511 % 10000 = 7511.
        let t: TenantId = "9f1c2d4e-8a7b-4c3d-9e2f-112233445566".parse().unwrap();
        assert_eq!(rollout_bucket(t, "new_editor"), 7511);
    }

    #[test]
    fn zero_percent_includes_nobody_and_hundred_percent_everybody() {
        let none = Rollout::percent(0).unwrap();
        let all = Rollout::percent(100).unwrap();
        for n in 1..=2_000 {
            assert!(!none.includes(id(n), "beta"));
            assert!(all.includes(id(n), "beta"));
        }
    }

    #[test]
    fn percentages_above_one_hundred_are_rejected() {
        assert_eq!(
            Rollout::percent(101).unwrap_err().kind(),
            ConfigErrorKind::InvalidPercentage
        );
        assert_eq!(
            Rollout::basis_points_of(10_001).unwrap_err().kind(),
            ConfigErrorKind::InvalidPercentage
        );
        assert!(Rollout::basis_points_of(10_000).is_ok());
    }
}
