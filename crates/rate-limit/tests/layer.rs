//! RateLimitLayer with the in-process limiter: headers, 429s, tenants, plans, costs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use sfv::{BareItem, Item, List, ListEntry, Parser};
use tenantry_core::{Plan, TenantId};
use tenantry_rate_limit::{InFlightLimitLayer, LocalLimiter, RateLimitLayer};
use tower::{service_fn, Layer, Service, ServiceExt};

fn layer() -> RateLimitLayer<LocalLimiter> {
    RateLimitLayer::new(LocalLimiter::new())
}

/// Parses a header as an RFC 9651 List of one Item and returns (string, params).
fn parse_entry(value: &str) -> (String, Vec<(String, i64)>) {
    let list: List = Parser::new(value)
        .parse()
        .unwrap_or_else(|e| panic!("{value:?} is not an RFC 9651 list: {e}"));
    assert_eq!(list.len(), 1, "{value}");
    let ListEntry::Item(Item { bare_item, params }) = &list[0] else {
        panic!("{value}: not an item");
    };
    let BareItem::String(name) = bare_item else {
        panic!("{value}: the policy name must be an sf-string");
    };
    let params = params
        .iter()
        .map(|(k, v)| match v {
            BareItem::Integer(i) => (k.as_str().to_owned(), i64::from(*i)),
            other => panic!("{value}: parameter {k} is not an integer: {other:?}"),
        })
        .collect();
    (name.as_str().to_owned(), params)
}

#[tokio::test]
async fn allowed_responses_carry_ratelimit_headers_that_parse_as_structured_fields() {
    let svc = service(layer());
    let t = tenant_with(TenantId::new_v4(), Plan::pro(), 1_000, 1_000);
    for _ in 0..3 {
        assert_eq!(send(&svc, &t).await.status(), 200);
    }
    let res = send(&svc, &t).await;
    assert_eq!(res.status(), 200);
    let policy = res.headers()["ratelimit-policy"].to_str().unwrap();
    let state = res.headers()["ratelimit"].to_str().unwrap();
    assert_eq!(policy, r#""pro";q=1000;w=60"#);
    assert_eq!(state, r#""pro";r=996;t=1"#);
    let (name, params) = parse_entry(policy);
    assert_eq!(name, "pro");
    assert_eq!(params, vec![("q".to_owned(), 1000), ("w".to_owned(), 60)]);
    let (name, params) = parse_entry(state);
    assert_eq!(name, "pro");
    assert_eq!(params, vec![("r".to_owned(), 996), ("t".to_owned(), 1)]);
    assert!(res.headers().get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn odd_plan_names_still_yield_valid_structured_fields() {
    let svc = service(layer());
    let plan = Plan::new(
        "gold \"β\" \\ plan",
        *Plan::pro().limits(),
        Default::default(),
    );
    let t = tenant_with(TenantId::new_v4(), plan, 10, 10);
    let res = send(&svc, &t).await;
    let (name, _) = parse_entry(res.headers()["ratelimit"].to_str().unwrap());
    assert_eq!(name, "gold \"_\" \\ plan");
    parse_entry(res.headers()["ratelimit-policy"].to_str().unwrap());
}

#[tokio::test]
async fn exhausted_tenant_gets_429_problem_with_retry_after_rounded_up() {
    let svc = service(layer());
    // 30 per minute: one request every 2 s; burst 2.
    let t = tenant(30, 2);
    assert_eq!(send(&svc, &t).await.status(), 200);
    assert_eq!(send(&svc, &t).await.status(), 200);
    let res = send(&svc, &t).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The wait is just under 2 s: rounded up to 2, never down to 1 or 0.
    assert_eq!(retry, 2);
    let (_, params) = parse_entry(res.headers()["ratelimit"].to_str().unwrap());
    assert_eq!(params[0], ("r".to_owned(), 0));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "rate_limited");
    assert_eq!(v["status"], 429);
}

#[tokio::test]
async fn retry_after_is_at_least_one_second_for_sub_second_waits() {
    let svc = service(layer());
    let t = tenant(600, 1); // one request every 100 ms
    assert_eq!(send(&svc, &t).await.status(), 200);
    let res = send(&svc, &t).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
}

#[tokio::test]
async fn exactly_burst_requests_pass_at_once() {
    let svc = service(layer());
    let t = tenant(100, 100);
    let mut allowed = 0;
    for _ in 0..300 {
        if send(&svc, &t).await.status() == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 100);
}

#[tokio::test]
async fn tenant_a_exhausted_does_not_affect_tenant_b() {
    let svc = service(layer());
    let a = tenant(60, 3);
    let b = tenant(60, 3);
    for _ in 0..3 {
        assert_eq!(send(&svc, &a).await.status(), 200);
    }
    assert_eq!(send(&svc, &a).await.status(), 429);
    for _ in 0..3 {
        assert_eq!(send(&svc, &b).await.status(), 200);
    }
    assert_eq!(send(&svc, &b).await.status(), 429);
}

#[tokio::test]
async fn plan_change_applies_on_the_next_request() {
    let svc = service(layer());
    let id = TenantId::new_v4();
    let free = tenant_with(id, Plan::free(), 60, 2);
    assert_eq!(send(&svc, &free).await.status(), 200);
    assert_eq!(send(&svc, &free).await.status(), 200);
    assert_eq!(send(&svc, &free).await.status(), 429);
    // Upgraded (same tenant id): the next request is decided under the new quota. The key's
    // state is kept (2 s of debt at the free rate), so the upgrade does not reset it.
    let pro = tenant_with(id, Plan::pro(), 6_000, 1_000);
    let res = send(&svc, &pro).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit-policy"], r#""pro";q=6000;w=60"#);
    let (_, params) = parse_entry(res.headers()["ratelimit"].to_str().unwrap());
    // 1000 units minus the 2 s of debt (200 units at 10 ms) minus this request.
    assert!((798..=799).contains(&params[0].1), "{params:?}");
    // Downgraded: at most one more request fits the free plan's 2 s tolerance.
    let mut allowed = 0;
    for _ in 0..10 {
        if send(&svc, &free).await.status() == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 0);
}

#[tokio::test]
async fn missing_tenant_is_a_500_naming_the_missing_layer() {
    let svc = service(layer());
    let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
    assert_eq!(res.status(), 500);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "misconfigured");
    assert!(v["detail"].as_str().unwrap().contains("TenantResolveLayer"));
}

#[tokio::test]
async fn route_cost_weighs_requests_and_zero_cost_is_exempt() {
    let svc = service(layer().cost(|parts| match parts.uri.path() {
        "/export" => 5,
        "/health" => 0,
        _ => 1,
    }));
    let t = tenant(60, 10);
    let req = |path: &str| {
        let mut r = request(&t);
        *r.uri_mut() = path.parse().unwrap();
        r
    };
    assert_eq!(
        svc.clone().oneshot(req("/export")).await.unwrap().status(),
        200
    );
    let res = svc.clone().oneshot(req("/export")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit"], r#""pro";r=0;t=10"#);
    assert_eq!(svc.clone().oneshot(req("/x")).await.unwrap().status(), 429);
    let health = svc.clone().oneshot(req("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn named_policies_count_separately_and_name_the_headers() {
    let limiter = LocalLimiter::new();
    let api = service(RateLimitLayer::new(limiter.clone()));
    let uploads = service(RateLimitLayer::new(limiter).policy("uploads"));
    let t = tenant(60, 1);
    assert_eq!(send(&api, &t).await.status(), 200);
    assert_eq!(send(&api, &t).await.status(), 429);
    let res = send(&uploads, &t).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit-policy"], r#""uploads";q=60;w=60"#);
}

#[tokio::test]
async fn legacy_headers_only_when_opted_in() {
    let svc = service(layer().legacy_headers(true));
    let t = tenant(100, 10);
    let res = send(&svc, &t).await;
    assert_eq!(res.headers()["x-ratelimit-limit"], "100");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "9");
    assert_eq!(res.headers()["x-ratelimit-reset"], "1");
}

#[tokio::test]
async fn clones_of_the_layer_and_service_share_one_limit() {
    // axum#2634: per-clone state multiplied the limit.
    let layer = layer();
    let a = service(layer.clone());
    let b = service(layer);
    let t = tenant(60, 4);
    let mut allowed = 0;
    for i in 0..20 {
        let svc = if i % 2 == 0 { &a } else { &b };
        if send(svc, &t).await.status() == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4);
}

#[tokio::test]
async fn the_inner_service_polled_ready_is_the_one_called() {
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut svc = layer().layer(mock);
    let t = tenant(60, 5);
    handle.allow(1);
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let fut = svc.call(request(&t));
    let (_, send_response) = handle.next_request().await.unwrap();
    send_response.send_response(Response::new(Full::default()));
    let res = fut.await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("ratelimit"));
}

/// A response body that ends when its gate opens.
struct Gate(Option<tokio::sync::oneshot::Receiver<()>>);

impl From<Bytes> for Gate {
    fn from(_: Bytes) -> Self {
        Gate(None)
    }
}

impl http_body::Body for Gate {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.0.as_mut() {
            None => std::task::Poll::Ready(None),
            Some(rx) => match std::pin::Pin::new(rx).poll(cx) {
                std::task::Poll::Pending => std::task::Poll::Pending,
                std::task::Poll::Ready(_) => {
                    self.0 = None;
                    std::task::Poll::Ready(None)
                }
            },
        }
    }
}

use std::future::Future as _;

#[tokio::test]
async fn in_flight_cap_is_held_until_the_response_body_ends() {
    let gates = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = Arc::clone(&gates);
    let svc =
        InFlightLimitLayer::new(1)
            .unwrap()
            .layer(service_fn(move |_req: Request<Full<Bytes>>| {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                g.lock().unwrap().push(tx);
                async move { Ok::<_, std::convert::Infallible>(Response::new(Gate(Some(rx)))) }
            }));
    let a = tenant(60, 60);
    let b = tenant(60, 60);
    let first = svc.clone().oneshot(request(&a)).await.unwrap();
    assert_eq!(first.status(), 200);
    // The handler has returned, but the body is still streaming: the permit is held.
    let busy = svc.clone().oneshot(request(&a)).await.unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(
        busy.extensions()
            .get::<tenantry_core::Problem>()
            .unwrap()
            .code(),
        "tenant_busy"
    );
    assert_eq!(busy.headers()["retry-after"], "1");
    // Another tenant is not affected.
    let other = svc.clone().oneshot(request(&b)).await.unwrap();
    assert_eq!(other.status(), 200);
    // The body ends: the permit is released.
    let tx = gates.lock().unwrap().remove(0);
    tx.send(()).unwrap();
    first.into_body().collect().await.unwrap();
    assert_eq!(
        svc.clone().oneshot(request(&a)).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn sweeping_drops_only_replenished_keys() {
    let limiter = LocalLimiter::builder()
        .sweep_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    let svc = service(RateLimitLayer::new(limiter.clone()));
    let fast = tenant(60_000, 1); // replenished after 1 ms
    let slow = tenant(1, 1); // limited for a minute
    send(&svc, &fast).await;
    send(&svc, &slow).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(limiter.sweep(), 1);
    assert_eq!(limiter.len(), 1);
    assert_eq!(send(&svc, &slow).await.status(), 429);
}

#[tokio::test]
async fn a_full_local_limiter_answers_503_never_unlimited() {
    let limiter = LocalLimiter::builder().max_keys(1).build().unwrap();
    let svc = service(RateLimitLayer::new(limiter));
    let a = tenant(1, 1); // stays limited for a minute: never swept
    let b = tenant(1, 1);
    assert_eq!(send(&svc, &a).await.status(), 200);
    let res = send(&svc, &b).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.extensions()
            .get::<tenantry_core::Problem>()
            .unwrap()
            .code(),
        "service_unavailable"
    );
    // The limited tenant was not evicted to make room.
    assert_eq!(send(&svc, &a).await.status(), 429);
}

#[tokio::test]
async fn a_plan_with_a_zero_rate_allows_nothing() {
    let svc = service(layer());
    let t = tenant(0, 10);
    let res = send(&svc, &t).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_none());
    let t = tenant(10, 0);
    assert_eq!(send(&svc, &t).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_threads_admit_exactly_the_burst() {
    let svc = service(layer());
    let t = tenant(100, 100);
    let tasks: Vec<_> = (0..600)
        .map(|_| {
            let svc = svc.clone();
            let t = t.clone();
            tokio::spawn(async move { svc.oneshot(request(&t)).await.unwrap().status() })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += u32::from(task.await.unwrap() == 200);
    }
    assert_eq!(allowed, 100);
}

#[tokio::test]
async fn works_as_an_axum_router_layer() {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(RateLimitLayer::new(LocalLimiter::new()).policy("api"));
    let t = tenant(60, 1);
    let req = || {
        let mut r = Request::new(axum::body::Body::empty());
        r.extensions_mut().insert(Arc::clone(&t));
        r
    };
    let res = app.clone().oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit"], r#""api";r=0;t=1"#);
    let res = app.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 429);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "rate_limited");
}

#[tokio::test]
async fn in_flight_cap_can_come_from_the_tenant_plan() {
    let layer = InFlightLimitLayer::per_tenant(|t| match t.plan().name() {
        "free" => Some(1),
        "pro" => Some(2),
        _ => None,
    });
    // Bodies that do not end during the test: every response holds its permit.
    let senders = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = Arc::clone(&senders);
    let svc = layer.layer(service_fn(move |_req: Request<Full<Bytes>>| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        s.lock().unwrap().push(tx);
        async move { Ok::<_, std::convert::Infallible>(Response::new(Gate(Some(rx)))) }
    }));
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for (plan, n) in [(Plan::free(), 3), (Plan::pro(), 4), (Plan::enterprise(), 5)] {
        let t = tenant_with(TenantId::new_v4(), plan, 60, 60);
        let mut these = Vec::new();
        for _ in 0..n {
            let res = svc.clone().oneshot(request(&t)).await.unwrap();
            these.push(res.status().as_u16());
            held.push(res);
        }
        statuses.push(these);
    }
    assert_eq!(statuses[0], vec![200, 503, 503]);
    assert_eq!(statuses[1], vec![200, 200, 503, 503]);
    assert_eq!(statuses[2], vec![200; 5]);
}
