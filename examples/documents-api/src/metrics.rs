//! Request counters by route and status: `http_requests_total{route, status}` and
//! `http_rejections_total{code}`.
//!
//! A plain tower layer rather than `axum::middleware::from_fn`, which boxes a clone of the
//! whole inner stack and the handler future on every request; and each (route, status)
//! counter handle is looked up once, then reused, instead of building and hashing a labelled
//! key per request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use metrics::Counter;
use tenantry_core::problem::Problem;
use tower::{Layer, Service};

/// Counts every response of the wrapped routes (apply with `Router::layer`, so the
/// `MatchedPath` is known).
#[derive(Clone, Default)]
pub(crate) struct CountRequestsLayer {
    counters: Arc<Counters>,
}

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            counters: Arc::clone(&self.counters),
        }
    }
}

/// Counter handles by route, then status. Routes come from the router's fixed set of paths
/// (or "unmatched"), statuses from the responses: the map stays small.
#[derive(Default)]
struct Counters {
    by_route: RwLock<HashMap<Box<str>, HashMap<u16, Counter>>>,
}

impl Counters {
    fn count(&self, route: &str, status: u16) {
        if let Ok(map) = self.by_route.read() {
            if let Some(counter) = map.get(route).and_then(|m| m.get(&status)) {
                counter.increment(1);
                return;
            }
        }
        let counter = metrics::counter!(
            "http_requests_total",
            "route" => route.to_owned(),
            "status" => status.to_string()
        );
        counter.increment(1);
        if let Ok(mut map) = self.by_route.write() {
            map.entry(route.into()).or_default().insert(status, counter);
        }
    }
}

/// The service of [`CountRequestsLayer`].
#[derive(Clone)]
pub(crate) struct CountRequests<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Service<Request> for CountRequests<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CountFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        CountFuture {
            inner: self.inner.call(req),
            route,
            counters: Arc::clone(&self.counters),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CountRequests`].
    pub(crate) struct CountFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        counters: Arc<Counters>,
    }
}

impl<F, E> Future for CountFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx))?;
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        this.counters.count(route, res.status().as_u16());
        if let Some(problem) = res.extensions().get::<Problem>() {
            metrics::counter!("http_rejections_total", "code" => problem.code().to_owned())
                .increment(1);
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[test]
    fn responses_are_counted_by_matched_route_and_status() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let app = Router::new()
                    .route("/docs/{id}", get(|| async { "ok" }))
                    .route(
                        "/teapot",
                        get(|| async {
                            Problem::new(StatusCode::IM_A_TEAPOT, "teapot", "Short and stout")
                        }),
                    )
                    .layer(CountRequestsLayer::default());
                for uri in ["/docs/1", "/docs/2", "/docs/3", "/teapot", "/nowhere"] {
                    let req = Request::builder().uri(uri).body(axum::body::Body::empty());
                    app.clone().oneshot(req.unwrap()).await.unwrap();
                }
            });
        });
        let text = handle.render();
        for line in [
            r#"http_requests_total{route="/docs/{id}",status="200"} 3"#,
            r#"http_requests_total{route="/teapot",status="418"} 1"#,
            r#"http_rejections_total{code="teapot"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
