//! [`RateLimitLayer`] and the [`RateLimit`] service.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tenantry_core::problem::{codes, Problem};
use tenantry_core::Tenant;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::LimiterError;
use crate::future::{PolicyName, ResponseFuture, Stamp};
use crate::gcra::Quota;
use crate::headers;
use crate::key::{Decision, DecisionSource, Limiter, RateKey};
use crate::local::LocalLimiter;

type CostFn = dyn Fn(&Parts) -> u32 + Send + Sync;

/// Per-tenant rate limiting with GCRA.
///
/// The key is the tenant's id (from the `Arc<Tenant>` that `TenantResolveLayer` puts in the
/// request extensions) plus this layer's policy name; the quota is the tenant's
/// `limits().requests_per_minute` and `limits().burst`, read on every request, so a plan change
/// applies on the next one. Allowed responses carry `RateLimit-Policy` and `RateLimit`
/// headers; denied requests get a 429 `rate_limited` problem with `Retry-After`. A request
/// without a tenant is a server misconfiguration: 500, never unlimited.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_rate_limit::{LocalLimiter, RateLimitLayer};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(LocalLimiter::new()))
///     .service(service_fn(|_req: Request<Full<Bytes>>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
///     }));
///
/// let tenant = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::pro()).build());
/// let mut req = Request::new(Full::default());
/// req.extensions_mut().insert(tenant);
/// let res = svc.oneshot(req).await?;
/// assert_eq!(res.status(), 200);
/// assert_eq!(res.headers()["ratelimit-policy"], r#""pro";q=1000;w=60"#);
/// assert_eq!(res.headers()["ratelimit"], r#""pro";r=999;t=1"#);
/// # Ok(())
/// # }
/// ```
pub struct RateLimitLayer<L = LocalLimiter> {
    shared: Arc<Shared<L>>,
}

pub(crate) struct Shared<L> {
    pub(crate) limiter: L,
    /// Key component; also the header name when set explicitly.
    policy: Arc<str>,
    named: bool,
    cost: Option<Arc<CostFn>>,
    pub(crate) legacy_headers: bool,
}

impl<L: Clone> Clone for RateLimitLayer<L> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<L: fmt::Debug> fmt::Debug for RateLimitLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.shared.limiter)
            .field("policy", &self.shared.policy)
            .field("cost", &self.shared.cost.as_ref().map(|_| "fn"))
            .field("legacy_headers", &self.shared.legacy_headers)
            .finish()
    }
}

impl<L: Limiter> RateLimitLayer<L> {
    /// A layer deciding with `limiter`, under the policy `"default"`, cost 1 per request.
    pub fn new(limiter: L) -> Self {
        Self {
            shared: Arc::new(Shared {
                limiter,
                policy: Arc::from("default"),
                named: false,
                cost: None,
                legacy_headers: false,
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Shared<L>)) -> Self {
        let mut shared = match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared,
            Err(arc) => Shared {
                limiter: arc.limiter.clone(),
                policy: Arc::clone(&arc.policy),
                named: arc.named,
                cost: arc.cost.clone(),
                legacy_headers: arc.legacy_headers,
            },
        };
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Names the policy: a separate counter per tenant for this layer (for example
    /// `"uploads"` next to `"api"`), and the name in the `RateLimit` headers. Without it the
    /// counter is `"default"` and the headers carry the tenant's plan name.
    pub fn policy(self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.map(|s| {
            s.policy = name;
            s.named = true;
        })
    }

    /// The cost (weight) of a request, from its method, URI, headers and extensions; 1 when
    /// unset. A cost of 0 exempts the request (no check, no headers).
    pub fn cost<F>(self, cost: F) -> Self
    where
        F: Fn(&Parts) -> u32 + Send + Sync + 'static,
    {
        let cost: Arc<CostFn> = Arc::new(cost);
        self.map(|s| s.cost = Some(cost))
    }

    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
    /// (default off).
    pub fn legacy_headers(self, on: bool) -> Self {
        self.map(|s| s.legacy_headers = on)
    }
}

impl<S, L> Layer<S> for RateLimitLayer<L> {
    type Service = RateLimit<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`RateLimitLayer`].
pub struct RateLimit<S, L = LocalLimiter> {
    inner: S,
    shared: Arc<Shared<L>>,
}

impl<S: Clone, L> Clone for RateLimit<S, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, L: fmt::Debug> fmt::Debug for RateLimit<S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.shared.limiter)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// The 429 answer for a denied decision.
pub(crate) fn rejection<B: From<Bytes>>(stamp: &Stamp) -> Response<B> {
    let d = &stamp.decision;
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        codes::RATE_LIMITED,
        "Rate limited",
    )
    .with_detail(format!(
        "The tenant's limit of {} requests per minute is exhausted.",
        d.quota().requests_per_minute()
    ));
    if let Some(wait) = d.retry_after() {
        problem = problem.with_extension("retry_after", headers::ceil_secs(wait).max(1));
    }
    let mut res: Response<B> = problem.into_response();
    stamp.apply(res.headers_mut());
    headers::insert_retry_after(res.headers_mut(), d);
    res
}

/// The 503 answer when no decision could be taken (`FailPolicy::Closed`, key capacity).
pub(crate) fn unavailable<B: From<Bytes>>(err: &LimiterError) -> Response<B> {
    tracing::warn!(error = %err, "rate limit: no decision, answering 503");
    Problem::service_unavailable("The rate limiter is unavailable; retry shortly.")
        .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(1u32))
        .into_response()
}

impl<S, L, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, L>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    L: Limiter,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(tenant) = req.extensions().get::<Arc<Tenant>>().cloned() else {
            return ResponseFuture::respond(
                Problem::misconfigured(
                    "RateLimitLayer found no tenant in the request: is TenantResolveLayer \
                     installed before it?",
                )
                .into_response(),
            );
        };
        let shared = &self.shared;
        let cost = match &shared.cost {
            None => 1,
            Some(f) => {
                let (parts, body) = req.into_parts();
                let cost = f(&parts);
                let req = Request::from_parts(parts, body);
                if cost == 0 {
                    // Called now: the service polled ready is `self.inner` itself.
                    return ResponseFuture::inner(self.inner.call(req), None);
                }
                return self.decide(req, &tenant, cost);
            }
        };
        self.decide(req, &tenant, cost)
    }
}

impl<S, L: Limiter> RateLimit<S, L> {
    fn decide<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
        tenant: &Arc<Tenant>,
        cost: u32,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: From<Bytes> + Send + 'static,
    {
        let shared = &self.shared;
        let limits = tenant.limits();
        let Ok(quota) = Quota::per_minute(limits.requests_per_minute, limits.burst) else {
            // A plan that allows nothing: deny, with nothing to wait for.
            return ResponseFuture::respond(
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    codes::RATE_LIMITED,
                    "Rate limited",
                )
                .with_detail("The tenant's plan allows no requests.")
                .into_response(),
            );
        };
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let key = RateKey::new(tenant.id(), Arc::clone(&shared.policy));
        let mut check = shared.limiter.check(&key, quota, cost);
        let name = if shared.named {
            PolicyName::Named(Arc::clone(&shared.policy))
        } else {
            PolicyName::Plan(Arc::clone(tenant))
        };
        let legacy = shared.legacy_headers;

        // The in-process limiter answers at once: no allocation on that path, and no clone of
        // the inner service (it is called now, and it is the one that was polled ready).
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut check).poll(&mut cx) {
            Poll::Ready(result) => match outcome(result, name, legacy) {
                Outcome::Proceed(stamp) => ResponseFuture::inner(self.inner.call(req), stamp),
                Outcome::Respond(res) => {
                    // Not called: give up what its readiness may hold, as a call would have.
                    let fresh = self.inner.clone();
                    drop(std::mem::replace(&mut self.inner, fresh));
                    ResponseFuture::respond(res)
                }
            },
            Poll::Pending => {
                // The call comes later, in the future: it takes the service that was polled
                // ready, and a fresh clone stays.
                let fresh = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::boxed(Box::pin(async move {
                    match outcome(check.await, name, legacy) {
                        Outcome::Proceed(stamp) => {
                            let mut res = inner.call(req).await?;
                            if let Some(stamp) = stamp {
                                stamp.apply(res.headers_mut());
                            }
                            Ok(res)
                        }
                        Outcome::Respond(res) => Ok(res),
                    }
                }))
            }
        }
    }
}

enum Outcome<B> {
    Proceed(Option<Stamp>),
    Respond(Response<B>),
}

fn outcome<B: From<Bytes>>(
    result: Result<Decision, LimiterError>,
    name: PolicyName,
    legacy: bool,
) -> Outcome<B> {
    match result {
        Ok(decision) if decision.source() == DecisionSource::FailOpen => Outcome::Proceed(None),
        Ok(decision) => {
            let stamp = Stamp {
                decision,
                name,
                legacy,
            };
            if decision.is_allowed() {
                Outcome::Proceed(Some(stamp))
            } else {
                Outcome::Respond(rejection(&stamp))
            }
        }
        Err(err) => Outcome::Respond(unavailable(&err)),
    }
}
