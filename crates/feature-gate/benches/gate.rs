//! Cost of a gate on the request path, against the bare handler measured in the same run.
//!
//! Futures are polled once with a no-op waker (everything here is ready at once), so the
//! figures are the middleware's own cost, not an executor's.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use tenantry_core::{Plan, Slug, Tenant, TenantId};
use tenantry_feature_gate::{rollout_bucket, FeatureRules, RequireFeature, Rollout};
use tower::{service_fn, Layer, Service};

type Body = Full<Bytes>;

fn call_now<S>(svc: &mut S, req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(Ok(res)) => res,
        _ => unreachable!("every future here is ready at once"),
    }
}

fn request(tenant: &Arc<Tenant>, rules: Option<&FeatureRules>) -> Request<Body> {
    let mut req = Request::new(Full::default());
    req.extensions_mut().insert(Arc::clone(tenant));
    if let Some(rules) = rules {
        req.extensions_mut().insert(rules.clone());
    }
    req
}

fn bench(c: &mut Criterion) {
    let handler = service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let pro = Arc::new(
        Tenant::builder(TenantId::new_v4(), Slug::new("pro").unwrap(), Plan::pro()).build(),
    );
    let free = Arc::new(
        Tenant::builder(TenantId::new_v4(), Slug::new("free").unwrap(), Plan::free()).build(),
    );
    let rules = FeatureRules::builder()
        .rollout("new_editor", Rollout::percent(100).unwrap())
        .build()
        .unwrap();

    let mut g = c.benchmark_group("gate");
    let mut bare = handler;
    g.bench_function("bare_handler", |b| {
        b.iter(|| black_box(call_now(&mut bare, request(&pro, Some(&rules)))))
    });
    let mut gated = RequireFeature::new("analytics").unwrap().layer(handler);
    g.bench_function("allowed_by_plan", |b| {
        b.iter(|| black_box(call_now(&mut gated, request(&pro, Some(&rules)))))
    });
    let mut rolled = RequireFeature::new("new_editor").unwrap().layer(handler);
    g.bench_function("allowed_by_rollout", |b| {
        b.iter(|| black_box(call_now(&mut rolled, request(&free, Some(&rules)))))
    });
    g.bench_function("rejected_403", |b| {
        b.iter(|| black_box(call_now(&mut gated, request(&free, Some(&rules)))))
    });
    g.finish();

    c.bench_function("rollout_bucket", |b| {
        let id = free.id();
        b.iter(|| black_box(rollout_bucket(black_box(id), black_box("new_editor"))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
