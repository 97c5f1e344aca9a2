//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use http::{Request, Response};
use http_body_util::Full;
use tenantry_core::{LimitOverrides, Plan, Slug, Tenant, TenantId};
use tenantry_rate_limit::{Limiter, RateLimitLayer};
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, ServiceExt};

pub type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// A tenant on `plan` with its rate overridden.
pub fn tenant_with(id: TenantId, plan: Plan, rpm: u32, burst: u32) -> Arc<Tenant> {
    Arc::new(
        Tenant::builder(id, Slug::new("acme").unwrap(), plan)
            .limit_overrides(LimitOverrides {
                requests_per_minute: Some(rpm),
                burst: Some(burst),
                ..LimitOverrides::default()
            })
            .build(),
    )
}

pub fn tenant(rpm: u32, burst: u32) -> Arc<Tenant> {
    tenant_with(TenantId::new_v4(), Plan::pro(), rpm, burst)
}

pub fn request(tenant: &Arc<Tenant>) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::default());
    req.extensions_mut().insert(Arc::clone(tenant));
    req
}

/// `layer` around a handler answering 200 "ok".
#[allow(clippy::needless_pass_by_value)] // reads better at call sites
pub fn service<L: Limiter>(layer: RateLimitLayer<L>) -> Svc {
    BoxCloneService::new(layer.layer(service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })))
}

pub async fn send(svc: &Svc, tenant: &Arc<Tenant>) -> Response<Full<Bytes>> {
    svc.clone().oneshot(request(tenant)).await.unwrap()
}

pub fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}

/// Asserts no key under `prefix` lacks an expiry (PTTL -1), and returns how many still exist
/// (PTTL -2: expired between the scan and the check). PTTL 0 is a key that has an expiry less
/// than a millisecond away: it has one, and it still exists.
pub async fn assert_every_key_expires(client: &Client, prefix: &str) -> usize {
    let keys: Vec<String> = client
        .custom(
            CustomCommand::new_static("KEYS", ClusterHash::FirstKey, false),
            vec![format!("{prefix}*")],
        )
        .await
        .unwrap();
    let mut live = 0;
    for key in &keys {
        let pttl: i64 = client.pttl(key).await.unwrap();
        assert!(
            pttl >= 0 || pttl == -2,
            "key {key} has no expiry (PTTL {pttl})"
        );
        live += usize::from(pttl >= 0);
    }
    live
}

pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub use fred::types::{ClusterHash, CustomCommand};
