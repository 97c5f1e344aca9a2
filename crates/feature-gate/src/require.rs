use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, Request, Response, Uri};
use pin_project_lite::pin_project;
use tenantry_core::Tenant;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::rejection::{FeatureNotAvailable, ProblemRejection, ResponseForFeatureRejection};
use crate::requirement::FeatureRequirement;
use crate::rules::{self, FeatureRules};
use crate::{FeatureRejection, Requirement, TenantMissing};

/// What every gate layer holds; cloned into each service (the requirement and the link are
/// shared in `Arc`s).
#[derive(Clone)]
struct Gate<R> {
    requirement: Arc<FeatureRequirement>,
    upgrade_url: Option<Arc<str>>,
    rejection: R,
    component: &'static str,
}

impl<R> Gate<R> {
    fn new(requirement: FeatureRequirement, rejection: R, component: &'static str) -> Self {
        Self {
            requirement: Arc::new(requirement),
            upgrade_url: None,
            rejection,
            component,
        }
    }

    fn with_upgrade_url(mut self, url: &str) -> Result<Self, ConfigError> {
        if url.parse::<Uri>().is_err() {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidUpgradeUrl,
                format!("upgrade link {url:?} is not a valid URI"),
            ));
        }
        self.upgrade_url = Some(url.into());
        Ok(self)
    }

    fn with_rejection<R2>(self, rejection: R2) -> Gate<R2> {
        Gate {
            requirement: self.requirement,
            upgrade_url: self.upgrade_url,
            rejection,
            component: self.component,
        }
    }

    /// The decision for one request. Fails closed: no tenant, no feature.
    fn check(&self, extensions: &Extensions) -> Result<(), FeatureRejection> {
        let Some(tenant) = extensions.get::<Arc<Tenant>>() else {
            return Err(TenantMissing::before(self.component).into());
        };
        let rules = extensions.get::<FeatureRules>();
        self.requirement
            .check(|feature| rules::is_enabled(rules, tenant, feature))
            .map_err(|missing| {
                FeatureNotAvailable {
                    requirement: self.requirement.kind(),
                    missing,
                    plan: tenant.plan().name().into(),
                    tenant_id: tenant.id(),
                    upgrade_url: self.upgrade_url.clone(),
                }
                .into()
            })
    }
}

impl<R> fmt::Debug for Gate<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.component)
            .field("requirement", &self.requirement.kind())
            .field("features", &self.requirement.features())
            .field("upgrade_url", &self.upgrade_url)
            .finish_non_exhaustive()
    }
}

/// The methods the three gate layers share.
macro_rules! gate_layer {
    ($name:ident, $features:literal) => {
        impl<R> $name<R> {
            #[doc = concat!(
                "Adds an upgrade link (absolute or relative URI) to the 403 problem body, as \
                 its `upgrade_url` member.\n\n",
                "```\n",
                "use tenantry_feature_gate::", stringify!($name), ";\n\n",
                "let gate = ", stringify!($name), "::new(", $features, ")?\n",
                "    .upgrade_url(\"https://example.com/billing/upgrade\")?;\n",
                "assert!(", stringify!($name), "::new(", $features, ")?.upgrade_url(\"not a uri\").is_err());\n",
                "# let _ = gate;\n",
                "# Ok::<(), tenantry_feature_gate::ConfigError>(())\n",
                "```"
            )]
            pub fn upgrade_url(self, url: &str) -> Result<Self, ConfigError> {
                Ok(Self {
                    gate: self.gate.with_upgrade_url(url)?,
                })
            }

            #[doc = concat!(
                "Replaces the rejection response: any [`ResponseForFeatureRejection`], such as \
                 a `FnMut(FeatureRejection) -> Response<B> + Clone` closure.\n\n",
                "```\n",
                "use http::Response;\n",
                "use tenantry_feature_gate::{FeatureRejection, ", stringify!($name), "};\n\n",
                "let gate = ", stringify!($name), "::new(", $features, ")?\n",
                "    .with_rejection(|r: FeatureRejection| {\n",
                "        let mut res = Response::new(r.to_string());\n",
                "        *res.status_mut() = r.status();\n",
                "        res\n",
                "    });\n",
                "# let _ = gate;\n",
                "# Ok::<(), tenantry_feature_gate::ConfigError>(())\n",
                "```"
            )]
            pub fn with_rejection<R2>(self, rejection: R2) -> $name<R2> {
                $name {
                    gate: self.gate.with_rejection(rejection),
                }
            }

            #[doc = concat!(
                "The features this gate checks, validated and without duplicates.\n\n",
                "```\n",
                "use tenantry_feature_gate::", stringify!($name), ";\n\n",
                "let gate = ", stringify!($name), "::new(", $features, ")?;\n",
                "assert!(gate.features().count() >= 1);\n",
                "# Ok::<(), tenantry_feature_gate::ConfigError>(())\n",
                "```"
            )]
            pub fn features(&self) -> impl Iterator<Item = &str> + '_ {
                self.gate.requirement.features().iter().map(|f| &**f)
            }
        }

        impl<R> fmt::Debug for $name<R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.gate, f)
            }
        }

        impl<S, R: Clone> Layer<S> for $name<R> {
            type Service = FeatureGate<S, R>;

            fn layer(&self, inner: S) -> Self::Service {
                FeatureGate {
                    inner,
                    gate: self.gate.clone(),
                }
            }
        }
    };
}

/// A layer that lets a request through only if its tenant has one feature.
///
/// Otherwise it answers 403 `feature_not_available` (naming the feature and the tenant's plan,
/// with an optional upgrade link) without calling the inner service. A request without an
/// `Arc<Tenant>` in its extensions gets 500 `misconfigured`: the tenant-resolve layer must run
/// first. Features come from [`FeatureRules::is_enabled`]; install a [`FeatureRules`] layer in
/// front for rollouts.
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower::util::MapRequestLayer;
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_feature_gate::RequireFeature;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let free = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::free()).build());
/// let svc = ServiceBuilder::new()
///     // Stands in for TenantResolveLayer, which puts the tenant into the extensions.
///     .layer(MapRequestLayer::new(move |mut req: Request<()>| {
///         req.extensions_mut().insert(free.clone());
///         req
///     }))
///     .layer(RequireFeature::new("analytics")?)
///     .service(service_fn(|_req| async {
///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("report"))))
///     }));
/// let res = svc.oneshot(Request::new(())).await?;
/// assert_eq!(res.status(), StatusCode::FORBIDDEN);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RequireFeature<R = ProblemRejection> {
    gate: Gate<R>,
}

impl RequireFeature {
    /// A gate for `feature`. Fails if the name is empty, has whitespace, or is otherwise not
    /// a valid feature name.
    ///
    /// ```
    /// use tenantry_feature_gate::RequireFeature;
    ///
    /// assert!(RequireFeature::new("analytics").is_ok());
    /// assert!(RequireFeature::new("").is_err());
    /// assert!(RequireFeature::new("analytics ").is_err());
    /// ```
    pub fn new(feature: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            gate: Gate::new(
                FeatureRequirement::one(feature)?,
                ProblemRejection,
                "RequireFeature",
            ),
        })
    }
}

gate_layer!(RequireFeature, "\"analytics\"");

/// A layer that lets a request through if its tenant has at least one of several features.
///
/// Rejections as for [`RequireFeature`]; the problem body lists every feature under
/// `missing_features`.
///
/// ```
/// use tenantry_feature_gate::RequireAnyFeature;
///
/// let gate = RequireAnyFeature::new(["analytics", "custom_webhooks"])?;
/// assert_eq!(gate.features().collect::<Vec<_>>(), ["analytics", "custom_webhooks"]);
/// # Ok::<(), tenantry_feature_gate::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RequireAnyFeature<R = ProblemRejection> {
    gate: Gate<R>,
}

impl RequireAnyFeature {
    /// A gate for any of `features`. Fails if the list is empty or a name is invalid.
    ///
    /// ```
    /// use tenantry_feature_gate::RequireAnyFeature;
    ///
    /// assert!(RequireAnyFeature::new(["a", "b"]).is_ok());
    /// assert!(RequireAnyFeature::new(Vec::<String>::new()).is_err());
    /// ```
    pub fn new<I, N>(features: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        Ok(Self {
            gate: Gate::new(
                FeatureRequirement::many(Requirement::AnyOf, features)?,
                ProblemRejection,
                "RequireAnyFeature",
            ),
        })
    }
}

gate_layer!(RequireAnyFeature, "[\"analytics\", \"export\"]");

/// A layer that lets a request through only if its tenant has every one of several features.
///
/// Rejections as for [`RequireFeature`]; the problem body lists the missing ones under
/// `missing_features`.
///
/// ```
/// use tenantry_feature_gate::RequireAllFeatures;
///
/// let gate = RequireAllFeatures::new(["analytics", "export"])?;
/// assert_eq!(gate.features().count(), 2);
/// # Ok::<(), tenantry_feature_gate::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RequireAllFeatures<R = ProblemRejection> {
    gate: Gate<R>,
}

impl RequireAllFeatures {
    /// A gate for all of `features`. Fails if the list is empty or a name is invalid.
    ///
    /// ```
    /// use tenantry_feature_gate::RequireAllFeatures;
    ///
    /// assert!(RequireAllFeatures::new(["a", "b"]).is_ok());
    /// assert!(RequireAllFeatures::new(["a", "b c"]).is_err());
    /// ```
    pub fn new<I, N>(features: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        Ok(Self {
            gate: Gate::new(
                FeatureRequirement::many(Requirement::AllOf, features)?,
                ProblemRejection,
                "RequireAllFeatures",
            ),
        })
    }
}

gate_layer!(RequireAllFeatures, "[\"analytics\", \"export\"]");

/// The service of [`RequireFeature`], [`RequireAnyFeature`] and [`RequireAllFeatures`].
///
/// The check is synchronous, so `call` either calls the inner service (the one that was
/// polled ready) right away or answers with the rejection, never both.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{service_fn, Layer};
/// use tenantry_feature_gate::{FeatureGate, RequireFeature};
///
/// let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
/// let mut gate: FeatureGate<_> = RequireFeature::new("analytics")?.layer(inner);
/// let _: &_ = gate.get_ref();
/// let _: &mut _ = gate.get_mut();
/// let _inner = gate.into_inner();
/// # Ok::<(), tenantry_feature_gate::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct FeatureGate<S, R = ProblemRejection> {
    inner: S,
    gate: Gate<R>,
}

impl<S, R> FeatureGate<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the gate, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, R> fmt::Debug for FeatureGate<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeatureGate")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for FeatureGate<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: ResponseForFeatureRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.gate.check(req.extensions()) {
            Ok(()) => ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(req),
                },
            },
            Err(rejection) => ResponseFuture {
                kind: Kind::Rejected {
                    response: Some(self.gate.rejection.response_for(rejection)),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`FeatureGate`]: the inner service's, or a ready rejection.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::Full;
    /// use tower::{service_fn, Layer, Service, ServiceExt};
    /// use tenantry_feature_gate::{RequireFeature, ResponseFuture};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut gate = RequireFeature::new("analytics")?.layer(service_fn(|_: Request<()>| async {
    ///     Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    /// }));
    /// // No tenant in the extensions: rejected without calling the inner service.
    /// let future: ResponseFuture<_, _> = gate.ready().await?.call(Request::new(()));
    /// let res = future.await?;
    /// assert_eq!(res.status(), 500);
    /// # Ok(()) }
    /// ```
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => {
                Poll::Ready(Ok(response.take().expect("future polled after completion")))
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
