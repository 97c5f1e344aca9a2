use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use tenantry_core::problem::{codes, Problem};
use tenantry_core::TenantId;

use crate::Requirement;

/// Why a gate refused a request.
///
/// The default response ([`ProblemRejection`]) is [`to_problem`](Self::to_problem) as
/// `application/problem+json`; the rejection itself is also put into the response extensions,
/// so outer layers (metrics, logs) can see why.
///
/// ```
/// use tenantry_feature_gate::{FeatureRejection, TenantMissing};
///
/// let rejection = FeatureRejection::from(TenantMissing::before("RequireFeature"));
/// assert_eq!(rejection.status(), 500);
/// assert_eq!(rejection.to_problem().code(), "misconfigured");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FeatureRejection {
    /// The tenant does not have the feature(s): 403 `feature_not_available`.
    NotAvailable(FeatureNotAvailable),
    /// No tenant in the request extensions: the server is misconfigured (500). Never a grant.
    TenantMissing(TenantMissing),
}

impl FeatureRejection {
    /// The HTTP status of the default response: 403 or 500.
    ///
    /// ```
    /// use tenantry_feature_gate::{FeatureRejection, TenantMissing};
    ///
    /// assert_eq!(FeatureRejection::from(TenantMissing::before("x")).status(), 500);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotAvailable(_) => StatusCode::FORBIDDEN,
            Self::TenantMissing(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem+json document of the default response.
    ///
    /// ```
    /// use tenantry_feature_gate::{FeatureRejection, TenantMissing};
    ///
    /// let problem = FeatureRejection::from(TenantMissing::before("RequireFeature")).to_problem();
    /// assert!(problem.detail().unwrap().contains("TenantResolveLayer"));
    /// ```
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::NotAvailable(e) => e.to_problem(),
            Self::TenantMissing(e) => e.to_problem(),
        }
    }
}

impl From<FeatureNotAvailable> for FeatureRejection {
    fn from(e: FeatureNotAvailable) -> Self {
        Self::NotAvailable(e)
    }
}

impl From<TenantMissing> for FeatureRejection {
    fn from(e: TenantMissing) -> Self {
        Self::TenantMissing(e)
    }
}

impl fmt::Display for FeatureRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAvailable(e) => fmt::Display::fmt(e, f),
            Self::TenantMissing(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl StdError for FeatureRejection {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::NotAvailable(e) => Some(e),
            Self::TenantMissing(e) => Some(e),
        }
    }
}

/// The tenant lacks a required feature.
///
/// Its problem document is 403 `feature_not_available` with the extension members `feature`
/// (the first missing feature), `plan` (the tenant's actual plan), `requirement`, `upgrade_url`
/// (when the gate has one) and, for [`RequireAnyFeature`](crate::RequireAnyFeature) and
/// [`RequireAllFeatures`](crate::RequireAllFeatures), `missing_features`.
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{service_fn, Layer, ServiceExt};
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_feature_gate::{FeatureRejection, RequireFeature, Requirement};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let gate = RequireFeature::new("analytics")?.upgrade_url("https://example.com/upgrade")?;
/// let svc = gate.layer(service_fn(|_: Request<()>| async {
///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
/// }));
/// let tenant = Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::free()).build();
/// let tenant_id = tenant.id();
/// let mut req = Request::new(());
/// req.extensions_mut().insert(Arc::new(tenant));
/// let res = svc.oneshot(req).await?;
/// let Some(FeatureRejection::NotAvailable(e)) = res.extensions().get::<FeatureRejection>()
/// else { panic!("not rejected") };
/// assert_eq!((e.feature(), e.plan()), ("analytics", "free"));
/// assert_eq!(e.missing().collect::<Vec<_>>(), ["analytics"]);
/// assert_eq!(e.requirement(), Requirement::One);
/// assert_eq!(e.tenant_id(), tenant_id);
/// assert_eq!(e.upgrade_url(), Some("https://example.com/upgrade"));
/// let problem = e.to_problem();
/// assert_eq!((problem.status().as_u16(), problem.code()), (403, "feature_not_available"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FeatureNotAvailable {
    pub(crate) requirement: Requirement,
    pub(crate) missing: Box<[Box<str>]>,
    pub(crate) plan: Box<str>,
    pub(crate) tenant_id: TenantId,
    pub(crate) upgrade_url: Option<Arc<str>>,
}

impl FeatureNotAvailable {
    /// The first missing feature (the only one for [`RequireFeature`](crate::RequireFeature)).
    pub fn feature(&self) -> &str {
        self.missing.first().map_or("", |f| f)
    }

    /// Every missing feature, in the order the gate lists them. For `any_of`, that is all of
    /// them.
    pub fn missing(&self) -> impl Iterator<Item = &str> + '_ {
        self.missing.iter().map(|f| &**f)
    }

    /// How the gate combines its features.
    pub fn requirement(&self) -> Requirement {
        self.requirement
    }

    /// The name of the tenant's plan.
    pub fn plan(&self) -> &str {
        &self.plan
    }

    /// The tenant that was refused.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The upgrade link configured on the gate, if any.
    pub fn upgrade_url(&self) -> Option<&str> {
        self.upgrade_url.as_deref()
    }

    /// The 403 problem document. Every accessor is shown in the [type's example](Self).
    pub fn to_problem(&self) -> Problem {
        let mut problem = Problem::new(
            StatusCode::FORBIDDEN,
            codes::FEATURE_NOT_AVAILABLE,
            "Feature not available",
        )
        .with_detail(self.to_string())
        .with_extension("feature", self.feature())
        .with_extension("plan", self.plan())
        .with_extension("requirement", self.requirement.as_str());
        if self.requirement != Requirement::One {
            let missing: Vec<&str> = self.missing().collect();
            problem = problem.with_extension("missing_features", missing);
        }
        if let Some(url) = self.upgrade_url() {
            problem = problem.with_extension("upgrade_url", url);
        }
        problem
    }
}

/// Writes `` `a`, `b` ``.
fn quoted_list(f: &mut fmt::Formatter<'_>, names: &[Box<str>]) -> fmt::Result {
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "`{name}`")?;
    }
    Ok(())
}

impl fmt::Display for FeatureNotAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match (self.requirement, self.missing.len()) {
            (Requirement::AnyOf, n) if n > 1 => {
                f.write_str("None of the features ")?;
                quoted_list(f, &self.missing)?;
                "is"
            }
            (_, 1) => {
                write!(f, "The feature `{}`", self.feature())?;
                "is not"
            }
            _ => {
                f.write_str("The features ")?;
                quoted_list(f, &self.missing)?;
                "are not"
            }
        };
        write!(
            f,
            " {verb} available to this tenant on the `{}` plan.",
            self.plan
        )
    }
}

impl StdError for FeatureNotAvailable {}

/// No `Arc<Tenant>` in the request extensions: the tenant-resolve layer is missing or
/// installed after the gate. A configuration error (500 `misconfigured`), never a grant.
///
/// ```
/// use tenantry_feature_gate::TenantMissing;
///
/// let e = TenantMissing::before("RequireFeature");
/// assert_eq!(
///     e.to_string(),
///     "no tenant in the request extensions: is TenantResolveLayer installed before RequireFeature?",
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantMissing {
    component: &'static str,
}

impl TenantMissing {
    /// The error for `component` (a layer or an extractor) finding no tenant; see the
    /// [type's example](Self).
    pub fn before(component: &'static str) -> Self {
        Self { component }
    }

    /// The layer or extractor that found no tenant.
    ///
    /// ```
    /// use tenantry_feature_gate::TenantMissing;
    ///
    /// assert_eq!(TenantMissing::before("RequireFeature").component(), "RequireFeature");
    /// ```
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The 500 problem document; its detail names the missing layer.
    ///
    /// ```
    /// use tenantry_feature_gate::TenantMissing;
    ///
    /// let problem = TenantMissing::before("RequireFeature").to_problem();
    /// assert_eq!((problem.status().as_u16(), problem.code()), (500, "misconfigured"));
    /// ```
    pub fn to_problem(&self) -> Problem {
        Problem::misconfigured(self.to_string())
    }
}

impl fmt::Display for TenantMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no tenant in the request extensions: is TenantResolveLayer installed before {}?",
            self.component
        )
    }
}

impl StdError for TenantMissing {}

/// Turns a [`FeatureRejection`] into a response. Implemented by [`ProblemRejection`] (the
/// default) and by every `FnMut(FeatureRejection) -> Response<B> + Clone` closure; set it with
/// `with_rejection` on a gate.
///
/// ```
/// use http::{Response, StatusCode};
/// use tenantry_feature_gate::{FeatureRejection, RequireFeature};
///
/// let gate = RequireFeature::new("analytics")?.with_rejection(|rejection: FeatureRejection| {
///     let mut res = Response::new(String::from("upgrade to get analytics"));
///     *res.status_mut() = rejection.status();
///     res
/// });
/// # let _ = gate;
/// # Ok::<(), tenantry_feature_gate::ConfigError>(())
/// ```
pub trait ResponseForFeatureRejection<B> {
    /// The response sent instead of calling the inner service.
    fn response_for(&mut self, rejection: FeatureRejection) -> Response<B>;
}

impl<B, F> ResponseForFeatureRejection<B> for F
where
    F: FnMut(FeatureRejection) -> Response<B>,
{
    fn response_for(&mut self, rejection: FeatureRejection) -> Response<B> {
        self(rejection)
    }
}

/// The default rejection: [`FeatureRejection::to_problem`] as `application/problem+json`, with
/// the [`Problem`] and the [`FeatureRejection`] in the response extensions. Works for any body
/// `B: From<Bytes>`.
///
/// ```
/// use bytes::Bytes;
/// use http::Response;
/// use http_body_util::Full;
/// use tenantry_feature_gate::{
///     FeatureRejection, ProblemRejection, ResponseForFeatureRejection, TenantMissing,
/// };
///
/// let res: Response<Full<Bytes>> =
///     ProblemRejection.response_for(TenantMissing::before("RequireFeature").into());
/// assert_eq!(res.status(), 500);
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// assert!(res.extensions().get::<FeatureRejection>().is_some());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemRejection;

impl<B: From<Bytes>> ResponseForFeatureRejection<B> for ProblemRejection {
    fn response_for(&mut self, rejection: FeatureRejection) -> Response<B> {
        let mut res = rejection.to_problem().into_response();
        res.extensions_mut().insert(rejection);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_available(requirement: Requirement, missing: &[&str]) -> FeatureNotAvailable {
        FeatureNotAvailable {
            requirement,
            missing: missing.iter().map(|&m| Box::from(m)).collect(),
            plan: "free".into(),
            tenant_id: TenantId::new_v4(),
            upgrade_url: None,
        }
    }

    #[test]
    fn problem_names_the_feature_and_the_plan() {
        let p = not_available(Requirement::One, &["analytics"]).to_problem();
        assert_eq!(p.status(), 403);
        assert_eq!(p.code(), codes::FEATURE_NOT_AVAILABLE);
        assert_eq!(p.extension("feature").unwrap(), "analytics");
        assert_eq!(p.extension("plan").unwrap(), "free");
        assert!(p.extension("upgrade_url").is_none());
        assert!(p.extension("missing_features").is_none());
        assert_eq!(
            p.detail().unwrap(),
            "The feature `analytics` is not available to this tenant on the `free` plan."
        );
    }

    #[test]
    fn combinations_list_every_missing_feature() {
        let any = not_available(Requirement::AnyOf, &["a", "b"]).to_problem();
        assert_eq!(
            any.extension("missing_features").unwrap(),
            &serde_json::json!(["a", "b"])
        );
        assert_eq!(any.extension("requirement").unwrap(), "any_of");
        assert_eq!(
            any.detail().unwrap(),
            "None of the features `a`, `b` is available to this tenant on the `free` plan."
        );
        let all = not_available(Requirement::AllOf, &["b", "c"]).to_problem();
        assert_eq!(
            all.detail().unwrap(),
            "The features `b`, `c` are not available to this tenant on the `free` plan."
        );
    }

    #[test]
    fn tenant_missing_is_a_500_naming_the_layer() {
        let p = TenantMissing::before("RequireAllFeatures").to_problem();
        assert_eq!(p.status(), 500);
        assert_eq!(p.code(), codes::MISCONFIGURED);
        assert!(p
            .detail()
            .unwrap()
            .contains("is TenantResolveLayer installed before RequireAllFeatures?"));
    }
}
