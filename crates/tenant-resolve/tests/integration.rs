//! The layer in its real surroundings: an axum router, a bare hyper server over TCP, tower's
//! readiness contract (tower-test `Mock`), and the tracing span fields.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::header::HOST;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tenantry_core::Tenant;
use tenantry_resolve::{HostRules, JwtVerifier, TenantResolveLayer};
use tower::{Layer, Service};

fn layer(world: &World) -> TenantResolveLayer<TestStore> {
    TenantResolveLayer::builder(world.store.clone())
        .subdomains(HostRules::new(["example.com"]).unwrap())
        .jwt(
            JwtVerifier::builder()
                .hs256(SECRET)
                .issuer(ISS)
                .audience(AUD)
                .build()
                .unwrap(),
        )
        .api_keys()
        .build()
        .unwrap()
}

#[cfg(feature = "axum")]
mod with_axum {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use http::header::AUTHORIZATION;
    use tenantry_resolve::extract;
    use tenantry_resolve::Principal;
    use tower::ServiceExt;

    async fn whoami(tenant: extract::Tenant, principal: Option<Principal>) -> String {
        let sub = principal.as_ref().and_then(|p| p.subject()).unwrap_or("-");
        format!("{} {}", tenant.slug(), sub)
    }

    async fn jwt_only(principal: Principal) -> String {
        principal.subject().unwrap_or_default().to_owned()
    }

    async fn body(res: axum::response::Response) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn axum_router_gets_tenant_and_principal_extractors() {
        let w = World::new();
        let app = Router::new()
            .route("/whoami", get(whoami))
            .route("/jwt", get(jwt_only))
            .layer(layer(&w));
        let token = hs256(&claims(w.acme));
        let res = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/whoami")
                    .header(HOST, "acme.example.com")
                    .header(AUTHORIZATION, bearer(&token))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(body(res).await, "acme user-1");

        // An API key has no principal: Option<Principal> is None, Principal is 401.
        let api = |uri: &str| {
            Request::builder()
                .uri(uri)
                .header("x-api-key", key_for("globex"))
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let res = app.clone().oneshot(api("/whoami")).await.unwrap();
        assert_eq!(body(res).await, "globex -");
        let res = app.clone().oneshot(api("/jwt")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        // Rejections from the layer reach the client as problem+json.
        let res = app
            .oneshot(
                Request::builder()
                    .uri("/whoami")
                    .header("x-tenant-id", "acme")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }

    #[tokio::test]
    async fn extractors_without_the_layer_say_which_layer_is_missing() {
        let app = Router::new()
            .route("/whoami", get(whoami))
            .route("/jwt", get(jwt_only));
        for uri in ["/whoami", "/jwt"] {
            let res = app
                .clone()
                .oneshot(
                    Request::builder()
                        .uri(uri)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(
                body(res).await.contains("is TenantResolveLayer installed"),
                "{uri}"
            );
        }
    }
}

/// A hyper `service_fn` (hyper's own trait, `call(&self)`) adapted to tower so the layer can
/// wrap it; nothing from axum.
#[derive(Clone)]
struct HyperFn<F>(F);

impl<F, R> Service<R> for HyperFn<F>
where
    F: hyper::service::Service<R>,
{
    type Response = F::Response;
    type Error = F::Error;
    type Future = F::Future;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        hyper::service::Service::call(&self.0, req)
    }
}

#[tokio::test]
async fn bare_hyper_server_with_service_fn_over_tcp() {
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let w = World::new();
    let handler = hyper::service::service_fn(|req: Request<Incoming>| async move {
        let slug = req
            .extensions()
            .get::<Arc<Tenant>>()
            .map(|t| t.slug().to_string())
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(slug))))
    });
    let svc = layer(&w).layer(HyperFn(handler));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });

    use hyper_util::rt::TokioIo as Io;
    async fn get(addr: std::net::SocketAddr, host: &str, key: &str) -> (StatusCode, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(Io::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let res = sender
            .send_request(
                Request::builder()
                    .uri("/")
                    .header(HOST, host)
                    .header("x-api-key", key)
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    assert_eq!(
        get(addr, "acme.example.com", &key_for("acme")).await,
        (StatusCode::OK, "acme".to_owned())
    );
    let (status, body) = get(addr, "globex.example.com", &key_for("acme")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("tenant_mismatch"));
    server.await.unwrap();
}

#[tokio::test]
async fn the_inner_service_polled_ready_is_the_one_called() {
    // A store that answers at once: the inner service is called from `call` itself.
    inner_service_polled_ready_is_called(World::new()).await;
}

#[tokio::test]
async fn the_inner_service_polled_ready_is_the_one_called_after_a_store_that_waits() {
    // A store that answers later: the inner service is called from the response future.
    let w = World::new();
    w.store.answer_later();
    inner_service_polled_ready_is_called(w).await;
}

async fn inner_service_polled_ready_is_called(w: World) {
    // tower-test's Mock panics if a clone that was never polled ready is called.
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut svc = layer(&w).layer(mock);
    handle.allow(1);
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let fut = svc.call(
        req()
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    );
    let respond = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("inner service called");
        let slug = request
            .extensions()
            .get::<Arc<Tenant>>()
            .unwrap()
            .slug()
            .to_string();
        send.send_response(Response::new(Full::new(Bytes::from(slug))));
    });
    let res = fut.await.unwrap();
    respond.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        &res.into_body().collect().await.unwrap().to_bytes()[..],
        b"acme"
    );
}

#[tokio::test]
async fn rejected_requests_never_reach_the_inner_service() {
    rejected_requests_never_reach(World::new()).await;
}

#[tokio::test]
async fn rejected_requests_never_reach_the_inner_service_after_a_store_that_waits() {
    let w = World::new();
    w.store.answer_later();
    rejected_requests_never_reach(w).await;
}

async fn rejected_requests_never_reach(w: World) {
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut svc = layer(&w).layer(mock);
    handle.allow(2);
    for r in [
        req()
            .header("x-tenant-id", "acme")
            .body(Full::default())
            .unwrap(),
        req()
            .header("x-api-key", key_for("suspended"))
            .body(Full::default())
            .unwrap(),
    ] {
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let res = svc.call(r).await.unwrap();
        assert!(res.status().is_client_error());
    }
    drop(svc);
    assert!(
        handle.next_request().await.is_none(),
        "inner service was called"
    );
}

#[cfg(feature = "tracing")]
#[tokio::test]
async fn tenant_id_slug_and_plan_are_recorded_on_the_request_span() {
    use std::sync::Mutex;
    use tower::ServiceExt;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Fields(Arc<Mutex<Vec<(String, String)>>>);
    struct Visitor<'a>(&'a mut Vec<(String, String)>);
    impl tracing::field::Visit for Visitor<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Fields {
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            values.record(&mut Visitor(&mut self.0.lock().unwrap()));
        }
    }

    let fields = Fields::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(fields.clone()));
    // Callsites registered meanwhile by tests on other threads (no subscriber) may have
    // cached "never"; rebuild with this subscriber live.
    tracing::callsite::rebuild_interest_cache();
    // A store that answers at once (the fields are recorded in `call`) and one that answers
    // later (in the response future).
    for later in [false, true] {
        fields.0.lock().unwrap().clear();
        let w = World::new();
        if later {
            w.store.answer_later();
        }
        let svc = layer(&w).layer(tower::service_fn(echo));
        let span = tracing::info_span!(
            "request",
            tenant.id = tracing::field::Empty,
            tenant.slug = tracing::field::Empty,
            tenant.plan = tracing::field::Empty
        );
        let res = svc
            .oneshot(
                req()
                    .header("x-api-key", key_for("acme"))
                    .body(Full::default())
                    .unwrap(),
            )
            .instrument(span)
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let recorded = fields.0.lock().unwrap().clone();
        assert!(
            recorded.contains(&("tenant.id".to_owned(), w.acme.to_string())),
            "{recorded:?}"
        );
        assert!(
            recorded.contains(&("tenant.slug".to_owned(), "acme".to_owned())),
            "{recorded:?}"
        );
        // World's tenants are on the pro plan.
        assert!(
            recorded.contains(&("tenant.plan".to_owned(), "pro".to_owned())),
            "{recorded:?}"
        );
    }
}
