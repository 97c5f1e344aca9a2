use std::collections::BTreeSet;
use std::sync::Arc;

use http::Extensions;
use tenantry_core::Tenant;

use crate::rules::{self, FeatureRules};
use crate::TenantMissing;

/// The features of the request's tenant, for handlers that branch instead of rejecting.
///
/// Get it with [`Features::from_extensions`] (any framework) or, with the `axum` feature, as an
/// extractor. It answers with the same [`FeatureRules::is_enabled`] decision as the gates.
///
/// ```
/// use std::sync::Arc;
/// use http::Request;
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_feature_gate::Features;
///
/// let tenant = Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::pro()).build();
/// let mut req = Request::new(());
/// req.extensions_mut().insert(Arc::new(tenant));
///
/// let features = Features::from_extensions(req.extensions())?;
/// let report = if features.is_enabled("analytics") { "full" } else { "summary" };
/// assert_eq!(report, "full");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Features {
    tenant: Arc<Tenant>,
    rules: Option<FeatureRules>,
}

impl Features {
    /// The features of the tenant in `extensions`, with the [`FeatureRules`] found there (if
    /// any). Fails closed, with a configuration error, when there is no `Arc<Tenant>`.
    ///
    /// ```
    /// use tenantry_feature_gate::Features;
    ///
    /// let err = Features::from_extensions(&http::Extensions::new()).unwrap_err();
    /// assert!(err.to_string().contains("TenantResolveLayer"));
    /// ```
    pub fn from_extensions(extensions: &Extensions) -> Result<Self, TenantMissing> {
        let tenant = extensions
            .get::<Arc<Tenant>>()
            .ok_or(TenantMissing::before("the Features extractor"))?;
        Ok(Self {
            tenant: Arc::clone(tenant),
            rules: extensions.get::<FeatureRules>().cloned(),
        })
    }

    /// The features of `tenant` under `rules`, for code that has both at hand.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tenantry_core::{Plan, Slug, Tenant, TenantId};
    /// use tenantry_feature_gate::{FeatureRules, Features};
    ///
    /// let t = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("t")?, Plan::free()).build());
    /// assert!(!Features::new(t, FeatureRules::new()).is_enabled("analytics"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(tenant: Arc<Tenant>, rules: FeatureRules) -> Self {
        Self {
            tenant,
            rules: Some(rules),
        }
    }

    /// Whether `feature` is enabled for this tenant; see [`FeatureRules::is_enabled`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tenantry_core::{Plan, Slug, Tenant, TenantId};
    /// use tenantry_feature_gate::{FeatureRules, Features};
    ///
    /// let t = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("t")?, Plan::pro()).build());
    /// let features = Features::new(t, FeatureRules::new());
    /// assert!(features.is_enabled("analytics"));
    /// assert!(!features.is_enabled("custom_webhooks"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_enabled(&self, feature: &str) -> bool {
        rules::is_enabled(self.rules.as_ref(), &self.tenant, feature)
    }

    /// Every enabled feature, sorted: the effective features and the rollouts that include
    /// this tenant (for example, for a `GET /me/features` endpoint a front end reads).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tenantry_core::{Plan, Slug, Tenant, TenantId};
    /// use tenantry_feature_gate::{FeatureRules, Features, Rollout};
    ///
    /// let t = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("t")?, Plan::pro()).build());
    /// let rules = FeatureRules::builder().rollout("beta", Rollout::percent(100)?).build()?;
    /// let features = Features::new(t, rules);
    /// assert_eq!(features.enabled().into_iter().collect::<Vec<_>>(), ["analytics", "beta"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enabled(&self) -> BTreeSet<&str> {
        let rolled_out = self.rules.iter().flat_map(FeatureRules::rolled_out);
        self.tenant
            .features()
            .iter()
            .chain(rolled_out)
            .filter(|f| self.is_enabled(f))
            .collect()
    }

    /// The tenant.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tenantry_core::{Plan, Slug, Tenant, TenantId};
    /// use tenantry_feature_gate::{FeatureRules, Features};
    ///
    /// let t = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("t")?, Plan::pro()).build());
    /// assert_eq!(Features::new(t.clone(), FeatureRules::new()).tenant().id(), t.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }

    /// The name of the tenant's plan.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tenantry_core::{Plan, Slug, Tenant, TenantId};
    /// use tenantry_feature_gate::{FeatureRules, Features};
    ///
    /// let t = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("t")?, Plan::pro()).build());
    /// assert_eq!(Features::new(t, FeatureRules::new()).plan(), "pro");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn plan(&self) -> &str {
        self.tenant.plan().name()
    }
}

/// Extracts [`Features`]; without a tenant in the extensions it rejects with 500
/// `misconfigured` ("is TenantResolveLayer installed before the Features extractor?").
///
/// ```
/// use axum::{routing::get, Router};
/// use tenantry_feature_gate::Features;
///
/// async fn report(features: Features) -> &'static str {
///     if features.is_enabled("analytics") { "full report" } else { "summary" }
/// }
/// let app: Router = Router::new().route("/report", get(report));
/// # let _ = app;
/// ```
#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Features {
    type Rejection = tenantry_core::Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Self::from_extensions(&parts.extensions).map_err(|e| e.to_problem())
    }
}
