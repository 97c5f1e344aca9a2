use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{FeatureSet, InvalidFeatureName, Limits, Plan, Slug, TenantId};

/// A tenant's lifecycle state. Only [`TenantStatus::Active`] tenants are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Served normally.
    Active,
    /// Temporarily refused (unpaid bill, abuse); data kept.
    Suspended,
    /// Created but not yet provisioned.
    Pending,
    /// Soft-deleted; never served again.
    Deleted,
}

impl TenantStatus {
    /// The lowercase name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Pending => "pending",
            Self::Deleted => "deleted",
        }
    }

    /// Parses the lowercase name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "pending" => Self::Pending,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a tenant's rows live. Handlers do not change when a tenant moves.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", content = "target", rename_all = "snake_case")]
pub enum Placement {
    /// The shared tables, isolated by row-level security (the default).
    #[default]
    Shared,
    /// Its own schema with the same tables (RLS still on). Holds the schema name.
    Schema(Box<str>),
    /// Its own database. Holds the connection string (never printed by `Debug`).
    Database(Box<str>),
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shared => f.write_str("Shared"),
            Self::Schema(s) => f.debug_tuple("Schema").field(s).finish(),
            Self::Database(_) => f.write_str("Database(<redacted>)"),
        }
    }
}

/// Per-tenant changes to its plan's limits; `None` keeps the plan's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverrides {
    /// Overrides [`Limits::requests_per_minute`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Overrides [`Limits::burst`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Overrides [`Limits::statement_timeout`], in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout_ms: Option<u64>,
    /// Overrides [`Limits::max_concurrent_transactions`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_transactions: Option<NonZeroU32>,
}

impl LimitOverrides {
    fn apply(&self, base: &Limits) -> Limits {
        Limits {
            requests_per_minute: self.requests_per_minute.unwrap_or(base.requests_per_minute),
            burst: self.burst.unwrap_or(base.burst),
            statement_timeout: self
                .statement_timeout_ms
                .map_or(base.statement_timeout, Duration::from_millis),
            max_concurrent_transactions: self
                .max_concurrent_transactions
                .or(base.max_concurrent_transactions),
        }
    }
}

/// One tenant record.
///
/// Its effective features (plan features + grants − revocations) and effective limits (plan
/// limits with overrides applied) are computed once, when the record is built, so a layer
/// reads them for free on every request. Layers share a tenant as `Arc<Tenant>` in the request
/// extensions.
///
/// ```
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
///
/// let tenant = Tenant::builder(TenantId::new_v4(), Slug::new("globex")?, Plan::pro())
///     .revoke("analytics")
///     .build();
/// assert!(!tenant.features().contains("analytics"));
/// assert_eq!(tenant.plan().name(), "pro");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TenantParts", into = "TenantParts")]
pub struct Tenant {
    parts: TenantParts,
    features: FeatureSet,
    limits: Limits,
}

/// The stored fields of a tenant, from which the effective values are derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TenantParts {
    id: TenantId,
    slug: Slug,
    plan: Plan,
    status: TenantStatus,
    #[serde(default)]
    placement: Placement,
    #[serde(default, skip_serializing_if = "FeatureSet::is_empty")]
    grants: FeatureSet,
    #[serde(default, skip_serializing_if = "FeatureSet::is_empty")]
    revocations: FeatureSet,
    #[serde(default)]
    limit_overrides: LimitOverrides,
}

impl From<TenantParts> for Tenant {
    fn from(parts: TenantParts) -> Self {
        let mut features = parts.plan.features().clone();
        for f in parts.grants.iter() {
            // Already validated when `grants` was built.
            let _ = features.insert(f);
        }
        for f in parts.revocations.iter() {
            features.remove(f);
        }
        let limits = parts.limit_overrides.apply(parts.plan.limits());
        Self {
            parts,
            features,
            limits,
        }
    }
}

impl From<Tenant> for TenantParts {
    fn from(t: Tenant) -> Self {
        t.parts
    }
}

impl Tenant {
    /// Starts building an active, shared-placement tenant on `plan`.
    pub fn builder(id: TenantId, slug: Slug, plan: Plan) -> TenantBuilder {
        TenantBuilder {
            parts: TenantParts {
                id,
                slug,
                plan,
                status: TenantStatus::Active,
                placement: Placement::Shared,
                grants: FeatureSet::new(),
                revocations: FeatureSet::new(),
                limit_overrides: LimitOverrides::default(),
            },
            error: None,
        }
    }

    /// The tenant's id.
    pub fn id(&self) -> TenantId {
        self.parts.id
    }

    /// The tenant's slug.
    pub fn slug(&self) -> &Slug {
        &self.parts.slug
    }

    /// The tenant's plan.
    pub fn plan(&self) -> &Plan {
        &self.parts.plan
    }

    /// The tenant's status.
    pub fn status(&self) -> TenantStatus {
        self.parts.status
    }

    /// Whether the tenant may be served.
    pub fn is_active(&self) -> bool {
        self.parts.status == TenantStatus::Active
    }

    /// Where the tenant's rows live.
    pub fn placement(&self) -> &Placement {
        &self.parts.placement
    }

    /// Effective features: plan features + grants − revocations.
    pub fn features(&self) -> &FeatureSet {
        &self.features
    }

    /// Features granted on top of the plan.
    pub fn grants(&self) -> &FeatureSet {
        &self.parts.grants
    }

    /// Plan features taken away from this tenant.
    pub fn revocations(&self) -> &FeatureSet {
        &self.parts.revocations
    }

    /// Effective limits: the plan's limits with this tenant's overrides applied.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// This tenant's overrides of its plan's limits.
    pub fn limit_overrides(&self) -> &LimitOverrides {
        &self.parts.limit_overrides
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.parts.id)
            .field("slug", &self.parts.slug)
            .field("plan", &self.parts.plan.name())
            .field("status", &self.parts.status)
            .field("placement", &self.parts.placement)
            .field("features", &self.features)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Builds a [`Tenant`]; see [`Tenant::builder`].
#[derive(Debug, Clone)]
pub struct TenantBuilder {
    parts: TenantParts,
    error: Option<InvalidFeatureName>,
}

impl TenantBuilder {
    /// Sets the status (default: active).
    pub fn status(mut self, status: TenantStatus) -> Self {
        self.parts.status = status;
        self
    }

    /// Sets the placement (default: shared).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.parts.placement = placement;
        self
    }

    /// Grants a feature on top of the plan.
    pub fn grant(mut self, feature: &str) -> Self {
        if let Err(e) = self.parts.grants.insert(feature) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Revokes a plan feature for this tenant. A revocation wins over a grant.
    pub fn revoke(mut self, feature: &str) -> Self {
        if let Err(e) = self.parts.revocations.insert(feature) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Replaces all grants.
    pub fn grants(mut self, grants: FeatureSet) -> Self {
        self.parts.grants = grants;
        self
    }

    /// Replaces all revocations.
    pub fn revocations(mut self, revocations: FeatureSet) -> Self {
        self.parts.revocations = revocations;
        self
    }

    /// Overrides some of the plan's limits.
    pub fn limit_overrides(mut self, overrides: LimitOverrides) -> Self {
        self.parts.limit_overrides = overrides;
        self
    }

    /// Builds the tenant, failing if a feature name given to [`grant`](Self::grant) or
    /// [`revoke`](Self::revoke) was invalid.
    pub fn try_build(self) -> Result<Tenant, InvalidFeatureName> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Tenant::from(self.parts)),
        }
    }

    /// Builds the tenant. Invalid feature names passed to [`grant`](Self::grant) or
    /// [`revoke`](Self::revoke) are dropped (fail closed: an invalid grant grants nothing);
    /// use [`try_build`](Self::try_build) to see them as an error.
    pub fn build(self) -> Tenant {
        Tenant::from(self.parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(plan: Plan) -> TenantBuilder {
        Tenant::builder(TenantId::new_v4(), Slug::new("t").unwrap(), plan)
    }

    #[test]
    fn effective_features_are_plan_plus_grants_minus_revocations() {
        let t = tenant(Plan::pro())
            .grant("beta")
            .revoke("analytics")
            .build();
        assert!(t.features().contains("beta"));
        assert!(!t.features().contains("analytics"));
        assert!(
            t.plan().features().contains("analytics"),
            "plan itself unchanged"
        );
    }

    #[test]
    fn revocation_wins_over_grant() {
        let t = tenant(Plan::free()).grant("x").revoke("x").build();
        assert!(!t.features().contains("x"));
    }

    #[test]
    fn invalid_grant_grants_nothing_and_try_build_reports_it() {
        assert!(tenant(Plan::free()).grant("bad name").try_build().is_err());
        let t = tenant(Plan::free()).grant("bad name").build();
        assert!(t.features().is_empty());
    }

    #[test]
    fn limit_overrides_apply_field_by_field() {
        let t = tenant(Plan::free())
            .limit_overrides(LimitOverrides {
                requests_per_minute: Some(7),
                statement_timeout_ms: Some(250),
                ..Default::default()
            })
            .build();
        assert_eq!(t.limits().requests_per_minute, 7);
        assert_eq!(t.limits().burst, Plan::free().limits().burst);
        assert_eq!(t.limits().statement_timeout, Duration::from_millis(250));
    }

    #[test]
    fn serde_round_trip_recomputes_effective_values() {
        let t = tenant(Plan::pro())
            .grant("beta")
            .status(TenantStatus::Suspended)
            .placement(Placement::Schema("tenant_t".into()))
            .build();
        let json = serde_json::to_string(&t).unwrap();
        let back: Tenant = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(back.features().contains("beta"));
    }

    #[test]
    fn database_placement_debug_redacts_the_dsn() {
        let p = Placement::Database("postgres://u:secret@h/db".into());
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            TenantStatus::Active,
            TenantStatus::Suspended,
            TenantStatus::Pending,
            TenantStatus::Deleted,
        ] {
            assert_eq!(TenantStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TenantStatus::parse("Active"), None);
    }
}
