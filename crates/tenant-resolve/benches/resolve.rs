//! The layer on a cache hit (JWT verify + in-memory lookup) against a pass-through layer.
//!
//! `cargo bench -p tenantry-resolve -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)]

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tenantry_core::{ApiKeyHash, InMemoryStore, Plan, Slug, Tenant, TenantId};
use tenantry_resolve::{HostRules, JwtVerifier, JwtVerifierBuilder, TenantResolveLayer};
use tower::{Layer, Service, ServiceExt};

const SECRET: &[u8] = b"benchmark-secret-for-tenantry-resolve-0123";
const EC_PRIVATE: &[u8] = include_bytes!("../tests/keys/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../tests/keys/ec_public.pem");

/// The baseline: a layer that forwards the request untouched (clone-and-swap like the real one).
#[derive(Clone)]
struct PassThroughLayer;

impl<S> Layer<S> for PassThroughLayer {
    type Service = PassThrough<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PassThrough(inner)
    }
}

#[derive(Clone)]
struct PassThrough<S>(S);

impl<S: Service<R> + Clone, R> Service<R> for PassThrough<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        let clone = self.0.clone();
        std::mem::replace(&mut self.0, clone).call(req)
    }
}

async fn ok(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::default()))
}

fn token(tenant: TenantId, header: &Header, key: &EncodingKey) -> String {
    let claims = serde_json::json!({
        "sub": "user-1", "tenant_id": tenant.to_string(), "roles": ["editor"],
        "iss": "https://auth.bench", "aud": "bench", "exp": jsonwebtoken::get_current_timestamp() + 3600,
    });
    jsonwebtoken::encode(header, &claims, key).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = InMemoryStore::new();
    // A store with some tenants in it, not just the one we hit.
    let mut hit = None;
    for i in 0..1000 {
        let t = Tenant::builder(
            TenantId::new_v4(),
            Slug::new(&format!("t{i}")).unwrap(),
            Plan::pro(),
        )
        .build();
        store.insert_api_key(ApiKeyHash::of(&format!("tk_bench_key_{i:08}")), t.id());
        hit.get_or_insert(t.id());
        store.insert(t);
    }
    let tenant = hit.unwrap();
    let rules = HostRules::new(["example.com"]).unwrap();
    // Each key with and without the verified-token cache.
    let verifier = |key: fn(JwtVerifierBuilder) -> JwtVerifierBuilder, cached: bool| {
        let b = key(JwtVerifier::builder())
            .issuer("https://auth.bench")
            .audience("bench");
        let b = if cached {
            b.cache_verified_tokens(10_000, Duration::from_secs(60))
        } else {
            b
        };
        b.build().unwrap()
    };
    let hs_key: fn(JwtVerifierBuilder) -> JwtVerifierBuilder = |b| b.hs256(SECRET);
    let es_key: fn(JwtVerifierBuilder) -> JwtVerifierBuilder = |b| b.es256_pem(None, EC_PUBLIC);
    let hs_token = token(
        tenant,
        &Header::default(),
        &EncodingKey::from_secret(SECRET),
    );
    let es_token = token(
        tenant,
        &Header::new(Algorithm::ES256),
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
    );

    let request = |auth: Option<(&str, String)>| {
        let mut b = Request::builder()
            .uri("/docs")
            .header("host", "t0.example.com");
        if let Some((name, value)) = auth {
            b = b.header(name, value);
        }
        b.body(Full::<Bytes>::default()).unwrap()
    };

    let mut group = c.benchmark_group("tenant_resolve");
    let pass = PassThroughLayer.layer(tower::service_fn(ok));
    group.bench_function("pass_through", |b| {
        b.to_async(&rt).iter(|| {
            pass.clone().oneshot(request(Some((
                "authorization",
                format!("Bearer {hs_token}"),
            ))))
        })
    });
    let layered = |verifier: &JwtVerifier| {
        TenantResolveLayer::builder(store.clone())
            .subdomains(rules.clone())
            .jwt(verifier.clone())
            .api_keys()
            .build()
            .unwrap()
            .layer(tower::service_fn(ok))
    };
    let jwt_cases = [
        (
            "jwt_hs256_hit",
            layered(&verifier(hs_key, false)),
            &hs_token,
        ),
        (
            "jwt_hs256_cached_hit",
            layered(&verifier(hs_key, true)),
            &hs_token,
        ),
        (
            "jwt_es256_hit",
            layered(&verifier(es_key, false)),
            &es_token,
        ),
        (
            "jwt_es256_cached_hit",
            layered(&verifier(es_key, true)),
            &es_token,
        ),
    ];
    for (name, svc, token) in &jwt_cases {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let res = svc
                    .clone()
                    .oneshot(request(Some(("authorization", format!("Bearer {token}")))))
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
            })
        });
    }
    let hs_svc = &jwt_cases[0].1;
    group.bench_function("api_key_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let res = hs_svc
                .clone()
                .oneshot(request(Some((
                    "x-api-key",
                    "tk_bench_key_00000000".to_owned(),
                ))))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        })
    });
    group.bench_function("reject_bare_selector", |b| {
        b.to_async(&rt).iter(|| async {
            let res = hs_svc.clone().oneshot(request(None)).await.unwrap();
            assert_eq!(res.status(), 401);
        })
    });
    // For reading the figures: jsonwebtoken's own decode of the same token, outside any layer.
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.set_issuer(&["https://auth.bench"]);
    validation.set_audience(&["bench"]);
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET);
    group.bench_function("jsonwebtoken_decode_only", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                &hs_token,
                &key,
                &validation,
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
