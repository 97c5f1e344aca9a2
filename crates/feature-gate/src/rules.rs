use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tenantry_core::Tenant;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{validate_feature_name, ConfigError, ConfigErrorKind};
use crate::Rollout;

/// The rollouts of every feature, shared by all clones in an `Arc`.
///
/// [`is_enabled`](Self::is_enabled) is the one place a feature decision is made; the
/// [`RequireFeature`](crate::RequireFeature) layers and [`Features`](crate::Features) both call
/// it. `FeatureRules` is also a [`Layer`]: installed in front of the gates and handlers, it puts
/// a clone of itself into the request extensions, where they find it. Without it, only plans,
/// grants and revocations count (no rollout grants anything).
///
/// ```
/// use std::sync::Arc;
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_feature_gate::{FeatureRules, Rollout};
///
/// let pilot = Tenant::builder(TenantId::new_v4(), Slug::new("pilot")?, Plan::free()).build();
/// let rules = FeatureRules::builder()
///     .rollout("new_editor", Rollout::percent(0)?.allow(pilot.id()))
///     .build()?;
/// assert!(rules.is_enabled(&pilot, "new_editor"));
/// assert!(!rules.is_enabled(&pilot, "analytics"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct FeatureRules {
    rollouts: Arc<HashMap<Box<str>, Rollout>>,
}

impl FeatureRules {
    /// Rules without any rollout: features come from plans, grants and revocations only.
    ///
    /// ```
    /// use tenantry_core::{Plan, Slug, Tenant, TenantId};
    /// use tenantry_feature_gate::FeatureRules;
    ///
    /// let t = Tenant::builder(TenantId::new_v4(), Slug::new("t")?, Plan::pro()).build();
    /// assert!(FeatureRules::new().is_enabled(&t, "analytics"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts building rules.
    ///
    /// ```
    /// use tenantry_feature_gate::{FeatureRules, Rollout};
    ///
    /// let rules = FeatureRules::builder()
    ///     .rollout("new_editor", Rollout::percent(10)?)
    ///     .rollout("v2:search", Rollout::percent(50)?)
    ///     .build()?;
    /// assert_eq!(rules.rollout("new_editor").map(Rollout::basis_points), Some(1_000));
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn builder() -> FeatureRulesBuilder {
        FeatureRulesBuilder::default()
    }

    /// The rollout registered for `feature`, if any.
    ///
    /// ```
    /// use tenantry_feature_gate::FeatureRules;
    ///
    /// assert!(FeatureRules::new().rollout("beta").is_none());
    /// ```
    pub fn rollout(&self, feature: &str) -> Option<&Rollout> {
        self.rollouts.get(feature)
    }

    /// The features that have a rollout, in no particular order.
    ///
    /// ```
    /// use tenantry_feature_gate::{FeatureRules, Rollout};
    ///
    /// let rules = FeatureRules::builder().rollout("beta", Rollout::none()).build()?;
    /// assert_eq!(rules.rolled_out().collect::<Vec<_>>(), ["beta"]);
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn rolled_out(&self) -> impl Iterator<Item = &str> + '_ {
        self.rollouts.keys().map(|k| &**k)
    }

    /// Whether `feature` is enabled for `tenant`.
    ///
    /// - A tenant that is not active gets no feature at all (fail closed: the resolve layer
    ///   should never let one through, and if it does, it gets nothing paid).
    /// - A feature in the tenant's effective features (plan + grants − revocations, computed
    ///   once when the record was built) is enabled.
    /// - A feature the tenant has a **revocation** for is disabled, even if a rollout or the
    ///   allow-list would include the tenant: a revocation is a deliberate decision about this
    ///   one tenant (abuse, a contract, a bug it triggers), a rollout a statistical one.
    /// - Otherwise the feature's [`Rollout`] decides: allow-list, then percentage.
    ///
    /// Unknown or malformed names are simply not enabled.
    ///
    /// ```
    /// use tenantry_core::{Plan, Slug, Tenant, TenantId};
    /// use tenantry_feature_gate::{FeatureRules, Rollout};
    ///
    /// let t = Tenant::builder(TenantId::new_v4(), Slug::new("t")?, Plan::free())
    ///     .revoke("beta")
    ///     .build();
    /// let rules = FeatureRules::builder()
    ///     .rollout("beta", Rollout::percent(100)?)
    ///     .rollout("gamma", Rollout::percent(100)?)
    ///     .build()?;
    /// assert!(!rules.is_enabled(&t, "beta"), "the revocation beats the rollout");
    /// assert!(rules.is_enabled(&t, "gamma"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_enabled(&self, tenant: &Tenant, feature: &str) -> bool {
        is_enabled(Some(self), tenant, feature)
    }
}

/// The decision, with the rules optional (absent from the request extensions).
pub(crate) fn is_enabled(rules: Option<&FeatureRules>, tenant: &Tenant, feature: &str) -> bool {
    if !tenant.is_active() {
        return false;
    }
    if tenant.features().contains(feature) {
        return true;
    }
    if tenant.revocations().contains(feature) {
        return false;
    }
    rules
        .and_then(|rules| rules.rollout(feature))
        .is_some_and(|rollout| rollout.includes(tenant.id(), feature))
}

impl fmt::Debug for FeatureRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.rolled_out().collect();
        names.sort_unstable();
        let mut map = f.debug_map();
        for name in names {
            map.entry(&name, &self.rollouts[name].basis_points());
        }
        map.finish()
    }
}

/// Builds [`FeatureRules`]; see [`FeatureRules::builder`].
///
/// The first invalid entry is remembered and returned by [`build`](Self::build), so the calls
/// chain without a `?` each.
///
/// ```
/// use tenantry_feature_gate::{ConfigErrorKind, FeatureRules, Rollout};
///
/// let err = FeatureRules::builder()
///     .rollout("new editor", Rollout::none())
///     .build()
///     .unwrap_err();
/// assert_eq!(err.kind(), ConfigErrorKind::InvalidFeatureName);
/// ```
#[derive(Debug, Default)]
pub struct FeatureRulesBuilder {
    rollouts: HashMap<Box<str>, Rollout>,
    error: Option<ConfigError>,
}

impl FeatureRulesBuilder {
    /// Registers the rollout of `feature`. A malformed name, or a second rollout for the same
    /// feature, makes [`build`](Self::build) fail.
    ///
    /// ```
    /// use tenantry_feature_gate::{ConfigErrorKind, FeatureRules, Rollout};
    ///
    /// let err = FeatureRules::builder()
    ///     .rollout("beta", Rollout::percent(10)?)
    ///     .rollout("beta", Rollout::percent(20)?)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ConfigErrorKind::DuplicateRollout);
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn rollout(mut self, feature: &str, rollout: Rollout) -> Self {
        if self.error.is_some() {
            return self;
        }
        match validate_feature_name(feature) {
            Err(e) => self.error = Some(e),
            Ok(name) => match self.rollouts.entry(name) {
                Entry::Occupied(_) => {
                    self.error = Some(ConfigError::new(
                        ConfigErrorKind::DuplicateRollout,
                        format!("two rollouts registered for feature {feature:?}"),
                    ));
                }
                Entry::Vacant(slot) => {
                    slot.insert(rollout);
                }
            },
        }
        self
    }

    /// The rules, or the first configuration error.
    ///
    /// ```
    /// use tenantry_feature_gate::FeatureRules;
    ///
    /// assert!(FeatureRules::builder().build()?.rollout("x").is_none());
    /// # Ok::<(), tenantry_feature_gate::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<FeatureRules, ConfigError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(FeatureRules {
                rollouts: Arc::new(self.rollouts),
            }),
        }
    }
}

impl<S> Layer<S> for FeatureRules {
    type Service = AddFeatureRules<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddFeatureRules {
            inner,
            rules: self.clone(),
        }
    }
}

/// The service of the [`FeatureRules`] layer: puts the rules into each request's extensions
/// (a reference-count increment) and calls the inner service.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tenantry_feature_gate::FeatureRules;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(FeatureRules::new())
///     .service(service_fn(|req: Request<()>| async move {
///         let found = req.extensions().get::<FeatureRules>().is_some();
///         Ok::<_, Infallible>(Response::new(found))
///     }));
/// assert!(svc.oneshot(Request::new(())).await?.into_body());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AddFeatureRules<S> {
    inner: S,
    rules: FeatureRules,
}

impl<S, ReqBody> Service<Request<ReqBody>> for AddFeatureRules<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        req.extensions_mut().insert(self.rules.clone());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_core::{Plan, Slug, TenantId, TenantStatus};

    fn tenant(plan: Plan) -> tenantry_core::TenantBuilder {
        Tenant::builder(TenantId::new_v4(), Slug::new("t").unwrap(), plan)
    }

    fn everyone(feature: &str) -> FeatureRules {
        FeatureRules::builder()
            .rollout(feature, Rollout::percent(100).unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn revocation_beats_a_full_rollout() {
        let t = tenant(Plan::free()).revoke("beta").build();
        assert!(!everyone("beta").is_enabled(&t, "beta"));
        let other = tenant(Plan::free()).build();
        assert!(everyone("beta").is_enabled(&other, "beta"));
    }

    #[test]
    fn revocation_beats_the_allow_list() {
        let t = tenant(Plan::free()).revoke("beta").build();
        let rules = FeatureRules::builder()
            .rollout("beta", Rollout::none().allow(t.id()))
            .build()
            .unwrap();
        assert!(!rules.is_enabled(&t, "beta"));
    }

    #[test]
    fn inactive_tenants_get_no_feature_even_from_their_plan() {
        for status in [
            TenantStatus::Suspended,
            TenantStatus::Pending,
            TenantStatus::Deleted,
        ] {
            let t = tenant(Plan::enterprise()).status(status).build();
            assert!(!FeatureRules::new().is_enabled(&t, "analytics"), "{status}");
            assert!(!everyone("beta").is_enabled(&t, "beta"), "{status}");
        }
    }

    #[test]
    fn a_rollout_does_not_leak_to_other_features() {
        let t = tenant(Plan::free()).build();
        assert!(!everyone("beta").is_enabled(&t, "gamma"));
    }

    #[test]
    fn clones_share_one_rule_set() {
        let rules = everyone("beta");
        let clone = rules.clone();
        assert!(Arc::ptr_eq(&rules.rollouts, &clone.rollouts));
    }
}
