//! The response future of [`RateLimit`](crate::RateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderMap, Response};
use pin_project_lite::pin_project;
use tenantry_core::Tenant;

use crate::headers;
use crate::key::Decision;

/// The policy name in the headers: the layer's, or the tenant's plan name (read when the
/// headers are written, so no string is copied per request).
pub(crate) enum PolicyName {
    Named(Arc<str>),
    Plan(Arc<Tenant>),
}

impl PolicyName {
    fn as_str(&self) -> &str {
        match self {
            Self::Named(name) => name,
            Self::Plan(tenant) => tenant.plan().name(),
        }
    }
}

/// What to write on an allowed response.
pub(crate) struct Stamp {
    pub(crate) decision: Decision,
    pub(crate) name: PolicyName,
    pub(crate) legacy: bool,
}

impl Stamp {
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers::append(headers, self.name.as_str(), &self.decision, self.legacy);
    }
}

type BoxedResponse<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

pin_project! {
    /// Response future of [`RateLimit`](crate::RateLimit).
    ///
    /// When the limiter answers at once (the in-process limiter) this is the inner service's
    /// future plus the headers to add; when it must wait (Redis) the wait and the inner call
    /// are one boxed future.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Respond { response: Option<Response<B>> },
        Inner { #[pin] future: F, stamp: Option<Stamp> },
        Boxed { future: BoxedResponse<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn respond(response: Response<B>) -> Self {
        Self {
            kind: Kind::Respond {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(future: F, stamp: Option<Stamp>) -> Self {
        Self {
            kind: Kind::Inner { future, stamp },
        }
    }

    pub(crate) fn boxed(future: BoxedResponse<B, E>) -> Self {
        Self {
            kind: Kind::Boxed { future },
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Respond { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
            KindProj::Inner { future, stamp } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(stamp) = stamp.take() {
                    stamp.apply(res.headers_mut());
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
