//! The `TenantResolve` service and its response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tenantry_core::TenantStore;
use tower_service::Service;

use crate::rejection::respond;
use crate::resolve::{Resolved, Shared};
use crate::{DefaultRejection, Rejection, ResponseForRejection};

/// Middleware that resolves the tenant of each request; see the [crate docs](crate).
///
/// On success the inner service sees `Arc<tenantry_core::Tenant>`, a
/// [`CredentialKind`](crate::CredentialKind) and, for a JWT, a [`Principal`](crate::Principal)
/// in the request extensions. Otherwise it is not called and the response comes from the
/// rejection handler, with the [`Rejection`] in its extensions.
pub struct TenantResolve<S, St, R = DefaultRejection> {
    inner: S,
    shared: Arc<Shared<St>>,
    rejection: R,
}

impl<S, St, R> TenantResolve<S, St, R> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared<St>>, rejection: R) -> Self {
        Self {
            inner,
            shared,
            rejection,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, St, R: Clone> Clone for TenantResolve<S, St, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            rejection: self.rejection.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, R: fmt::Debug> fmt::Debug for TenantResolve<S, St, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantResolve")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("rejection", &self.rejection)
            .finish()
    }
}

impl<S, St, R, ReqBody, ResBody> Service<Request<ReqBody>> for TenantResolve<S, St, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: TenantStore,
    R: ResponseForRejection<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // Everything that needs no store (selectors, JWT verification) runs here, before any
        // allocation for the lookup.
        let rejection = match self.shared.prepare(&req) {
            Err(rejection) => rejection,
            Ok(prepared) => {
                let mut lookup: Lookup = Box::pin(Arc::clone(&self.shared).lookup(prepared));
                // A cached tenant answers at once: then the inner service, the one polled
                // ready, is called now, and is not cloned.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match lookup.as_mut().poll(&mut cx) {
                    Poll::Ready(Err(rejection)) => rejection,
                    Poll::Ready(Ok(resolved)) => {
                        let mut req = req;
                        attach(&mut req, resolved);
                        return ResponseFuture {
                            rejected: None,
                            lookup: None,
                            pending: None,
                            inner: Some(self.inner.call(req)),
                        };
                    }
                    Poll::Pending => {
                        // The call comes after the lookup, in the future: it takes the service
                        // that was polled ready, and a fresh clone stays.
                        let clone = self.inner.clone();
                        let inner = std::mem::replace(&mut self.inner, clone);
                        return ResponseFuture {
                            rejected: None,
                            lookup: Some(lookup),
                            pending: Some(Pending {
                                request: req,
                                service: inner,
                                rejection: self.rejection.clone(),
                            }),
                            inner: None,
                        };
                    }
                }
            }
        };
        ResponseFuture {
            rejected: Some(respond(&mut self.rejection, rejection)),
            lookup: None,
            pending: None,
            inner: None,
        }
    }
}

type Lookup = Pin<Box<dyn Future<Output = Result<Resolved, Rejection>> + Send>>;

/// Puts the resolved tenant, credential kind and principal in the request's extensions, and
/// records the tenant on the current span.
fn attach<B>(request: &mut Request<B>, resolved: Resolved) {
    #[cfg(feature = "tracing")]
    {
        let span = tracing::Span::current();
        span.record("tenant.id", tracing::field::display(resolved.tenant.id()));
        span.record("tenant.slug", resolved.tenant.slug().as_str());
        span.record("tenant.plan", resolved.tenant.plan().name());
    }
    let ext = request.extensions_mut();
    ext.insert(resolved.tenant);
    ext.insert(resolved.kind);
    if let Some(p) = resolved.principal {
        ext.insert(p);
    }
}

struct Pending<S, ReqBody, R> {
    request: Request<ReqBody>,
    service: S,
    rejection: R,
}

pin_project! {
    /// Response future of [`TenantResolve`]: a rejection, or the store lookup followed by the
    /// inner service's future.
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        rejected: Option<S::Response>,
        lookup: Option<Lookup>,
        pending: Option<Pending<S, ReqBody, R>>,
        #[pin]
        inner: Option<S::Future>,
    }
}

impl<S, ReqBody, R> fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.inner.is_some() {
            "inner"
        } else if self.lookup.is_some() {
            "lookup"
        } else if self.rejected.is_some() {
            "rejected"
        } else {
            "done"
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: ResponseForRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(fut) = this.inner.as_mut().as_pin_mut() {
            return fut.poll(cx);
        }
        if let Some(res) = this.rejected.take() {
            return Poll::Ready(Ok(res));
        }
        let Some(lookup) = this.lookup.as_mut() else {
            panic!("ResponseFuture polled after completion");
        };
        let outcome = ready!(lookup.as_mut().poll(cx));
        *this.lookup = None;
        let Some(Pending {
            mut request,
            mut service,
            mut rejection,
        }) = this.pending.take()
        else {
            panic!("ResponseFuture polled after completion");
        };
        match outcome {
            Err(r) => Poll::Ready(Ok(respond(&mut rejection, r))),
            Ok(resolved) => {
                attach(&mut request, resolved);
                this.inner.set(Some(service.call(request)));
                match this.inner.as_pin_mut() {
                    Some(fut) => fut.poll(cx),
                    None => unreachable!("just set"),
                }
            }
        }
    }
}
