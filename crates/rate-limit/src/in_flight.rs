//! [`InFlightLimitLayer`]: at most N requests of one tenant in flight at once, each counted until
//! its response body has been sent (or dropped), so a slow download still counts.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tenantry_core::problem::{codes, Problem};
use tenantry_core::{Tenant, TenantId};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{ConfigError, ConfigErrorKind};

type Counts = Arc<Mutex<HashMap<TenantId, u32>>>;
type CapFn = dyn Fn(&Tenant) -> Option<u32> + Send + Sync;

/// The cap of one tenant: the same for all, or computed from the tenant (its plan).
#[derive(Clone)]
enum Cap {
    Fixed(u32),
    PerTenant(Arc<CapFn>),
}

impl Cap {
    fn of(&self, tenant: &Tenant) -> Option<u32> {
        match self {
            Self::Fixed(n) => Some(*n),
            Self::PerTenant(f) => f(tenant),
        }
    }
}

impl fmt::Debug for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::PerTenant(_) => f.write_str("per tenant"),
        }
    }
}

/// Caps the requests of one tenant in flight (until the response body ends). Over the cap a
/// request gets 503 `tenant_busy` with `Retry-After: 1`.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_rate_limit::InFlightLimitLayer;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(InFlightLimitLayer::new(8)?)
///     .service(service_fn(|_req: Request<Full<Bytes>>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
///     }));
/// let mut req = Request::new(Full::default());
/// req.extensions_mut()
///     .insert(Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::free()).build()));
/// assert_eq!(svc.oneshot(req).await?.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InFlightLimitLayer {
    max: Cap,
    counts: Counts,
}

impl fmt::Debug for InFlightLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLimitLayer")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl InFlightLimitLayer {
    /// At most `max` (at least 1) requests per tenant in flight.
    pub fn new(max: u32) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidSetting,
                "the in-flight cap must be at least 1",
            ));
        }
        Ok(Self {
            max: Cap::Fixed(max),
            counts: Arc::default(),
        })
    }

    /// A cap computed from each tenant (for example from its plan); `None` means no cap for
    /// that tenant, and `Some(0)` refuses all its requests.
    pub fn per_tenant<F>(cap: F) -> Self
    where
        F: Fn(&Tenant) -> Option<u32> + Send + Sync + 'static,
    {
        Self {
            max: Cap::PerTenant(Arc::new(cap)),
            counts: Arc::default(),
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            max: self.max.clone(),
            counts: Arc::clone(&self.counts),
        }
    }
}

/// The service made by [`InFlightLimitLayer`](crate::InFlightLimitLayer).
#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    max: Cap,
    counts: Counts,
}

impl<S: fmt::Debug> fmt::Debug for InFlight<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("inner", &self.inner)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// One request in flight; released on drop.
struct Permit {
    tenant: TenantId,
    counts: Counts,
}

impl Permit {
    fn acquire(counts: &Counts, tenant: TenantId, max: u32) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(tenant).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            tenant,
            counts: Arc::clone(counts),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InFlight<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<InFlightBody<ResBody>>;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some((tenant, max)) = req
            .extensions()
            .get::<Arc<Tenant>>()
            .map(|t| (t.id(), self.max.of(t)))
        else {
            return InFlightFuture::respond(
                Problem::misconfigured(
                    "InFlightLimitLayer found no tenant in the request: is TenantResolveLayer \
                     installed before it?",
                )
                .into_response(),
            );
        };
        let Some(max) = max else {
            // No cap for this tenant.
            let inner = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, inner);
            return InFlightFuture {
                future: Some(inner.call(req)),
                permit: None,
                response: None,
            };
        };
        let Some(permit) = Permit::acquire(&self.counts, tenant, max) else {
            return InFlightFuture::respond(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::TENANT_BUSY,
                    "Too many requests in flight",
                )
                .with_detail(format!(
                    "At most {max} requests of this tenant may be in flight at once."
                ))
                .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(1u32))
                .into_response(),
            );
        };
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        InFlightFuture {
            future: Some(inner.call(req)),
            permit: Some(permit),
            response: None,
        }
    }
}

pin_project! {
    /// Response future of [`InFlight`].
    pub struct InFlightFuture<F, B> {
        #[pin]
        future: Option<F>,
        permit: Option<Permit>,
        response: Option<Response<B>>,
    }
}

impl<F, B> fmt::Debug for InFlightFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightFuture").finish_non_exhaustive()
    }
}

impl<F, B> InFlightFuture<F, B> {
    fn respond(response: Response<B>) -> Self {
        Self {
            future: None,
            permit: None,
            response: Some(response),
        }
    }
}

impl<F, B, E> Future for InFlightFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<InFlightBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            let res = this
                .response
                .take()
                .expect("InFlightFuture polled after completion");
            return Poll::Ready(Ok(res.map(|body| InFlightBody {
                inner: body,
                permit: None,
            })));
        };
        // An error drops the permit with this future.
        let res = ready!(future.poll(cx))?;
        let permit = this.permit.take();
        Poll::Ready(Ok(res.map(|body| InFlightBody {
            inner: body,
            permit,
        })))
    }
}

pin_project! {
    /// A response body that holds its tenant's in-flight permit until it ends or is dropped.
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> fmt::Debug for InFlightBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightBody")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.permit.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
