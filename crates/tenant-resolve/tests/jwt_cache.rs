//! The verified-token cache: a remembered token is answered without re-verification, and
//! nothing that full verification would refuse is ever accepted because of the cache.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::header::AUTHORIZATION;
use http::StatusCode;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tenantry_core::{Plan, Slug, Tenant, TenantStatus};
use tenantry_resolve::{ConfigErrorKind, JwtVerifier, TenantResolveLayer};
use tower::Layer;

type Svc = tenantry_resolve::TenantResolve<
    tower::util::BoxCloneService<
        http::Request<Full<Bytes>>,
        http::Response<Full<Bytes>>,
        std::convert::Infallible,
    >,
    TestStore,
>;

fn cached_verifier(leeway: Duration) -> JwtVerifier {
    JwtVerifier::builder()
        .hs256(SECRET)
        .issuer(ISS)
        .audience(AUD)
        .leeway(leeway)
        .cache_verified_tokens(1_000, Duration::from_secs(60))
        .build()
        .unwrap()
}

fn service(world: &World, verifier: JwtVerifier) -> Svc {
    TenantResolveLayer::builder(world.store.clone())
        .jwt(verifier)
        .build()
        .unwrap()
        .layer(tower::util::BoxCloneService::new(tower::service_fn(echo)))
}

async fn call(svc: &Svc, token: &str) -> Reply {
    send(
        svc,
        req()
            .header(AUTHORIZATION, bearer(token))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

async fn assert_accepted(svc: &Svc, token: &str, why: &str) {
    let r = call(svc, token).await;
    assert_eq!(r.status, StatusCode::OK, "{why}: {:?}", r.body);
    assert_eq!(r.tenant(), "acme", "{why}");
}

async fn assert_refused(svc: &Svc, token: &str, why: &str) {
    let r = call(svc, token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: accepted");
    assert_eq!(r.code(), "invalid_credentials", "{why}");
}

#[tokio::test]
async fn a_remembered_token_is_accepted_and_counted_once() {
    let w = World::new();
    let verifier = cached_verifier(JwtVerifier::DEFAULT_LEEWAY);
    let svc = service(&w, verifier.clone());
    let token = hs256(&claims(w.acme));
    for i in 0..5 {
        assert_accepted(&svc, &token, &format!("request {i}")).await;
    }
    assert_eq!(verifier.cached_tokens(), 1, "one token, one entry");
    verifier.clear_cached_tokens();
    assert_accepted(&svc, &token, "after clearing").await;
}

#[tokio::test]
async fn tokens_that_differ_in_any_part_are_verified_in_full() {
    let w = World::new();
    let svc = service(&w, cached_verifier(JwtVerifier::DEFAULT_LEEWAY));
    let honest = hs256(&claims(w.acme));
    assert_accepted(&svc, &honest, "warm the cache").await;

    // The same header and claims with a forged signature.
    let (signed, _sig) = honest.rsplit_once('.').unwrap();
    assert_refused(
        &svc,
        &format!("{signed}.{}", b64(b"forged")),
        "forged signature",
    )
    .await;
    // One changed character in the signature.
    let flipped = tampered_signature(&honest);
    assert_ne!(flipped, honest);
    assert_refused(&svc, &flipped, "changed signature character").await;
    // The same claims with `alg: none` and no signature.
    let none = raw_token(&json!({"alg": "none", "typ": "JWT"}), &claims(w.acme), b"");
    assert_refused(&svc, &none, "alg none").await;
    // The honest signature on claims naming another tenant.
    let payload = b64(serde_json::to_vec(&claims(w.globex)).unwrap().as_slice());
    let (header, rest) = honest.split_once('.').unwrap();
    let sig = rest.rsplit_once('.').unwrap().1;
    assert_refused(&svc, &format!("{header}.{payload}.{sig}"), "swapped claims").await;
    // Signed with another secret, same claims.
    let other = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(w.acme),
        &EncodingKey::from_secret(b"another-secret-that-is-also-long-enough!"),
    )
    .unwrap();
    assert_refused(&svc, &other, "other secret").await;
    // The honest token still works.
    assert_accepted(&svc, &honest, "honest again").await;
}

#[tokio::test]
async fn refused_tokens_are_never_remembered() {
    let w = World::new();
    let verifier = cached_verifier(JwtVerifier::DEFAULT_LEEWAY);
    let svc = service(&w, verifier.clone());
    let expired = hs256(&json!({
        "sub": "user-1", "tenant_id": w.acme.to_string(), "iss": ISS, "aud": AUD,
        "exp": now() - 3_600,
    }));
    let wrong_aud = hs256(&json!({
        "sub": "user-1", "tenant_id": w.acme.to_string(), "iss": ISS, "aud": "other",
        "exp": now() + 300,
    }));
    for _ in 0..3 {
        assert_refused(&svc, &expired, "expired").await;
        assert_refused(&svc, &wrong_aud, "wrong audience").await;
    }
    assert_eq!(verifier.cached_tokens(), 0);
}

#[tokio::test]
async fn a_token_that_expires_while_remembered_is_refused() {
    let w = World::new();
    // No leeway: the token is valid for this second and the next, then refused.
    let svc = service(&w, cached_verifier(Duration::ZERO));
    let token = hs256(&json!({
        "sub": "user-1", "tenant_id": w.acme.to_string(), "iss": ISS, "aud": AUD,
        "exp": now() + 1,
    }));
    assert_accepted(&svc, &token, "fresh").await;
    assert_accepted(&svc, &token, "remembered").await;
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_refused(&svc, &token, "expired while cached").await;
    assert_refused(&svc, &token, "and stays refused").await;
}

#[tokio::test]
async fn the_tenant_is_still_looked_up_and_bound_on_every_request() {
    let w = World::new();
    let svc = service(&w, cached_verifier(JwtVerifier::DEFAULT_LEEWAY));
    let token = hs256(&claims(w.acme));
    assert_accepted(&svc, &token, "warm").await;

    // A selector that disagrees with the remembered token is still a mismatch.
    let r = send(
        &svc,
        req()
            .header(AUTHORIZATION, bearer(&token))
            .header("x-tenant-id", "globex")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "tenant_mismatch");

    // Suspending the tenant refuses the remembered token at once: the cache holds the
    // verification, never the tenant.
    let before = w.store.calls();
    w.store.inner.insert(
        Tenant::builder(w.acme, Slug::new("acme").unwrap(), Plan::pro())
            .status(TenantStatus::Suspended)
            .build(),
    );
    let r = call(&svc, &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "tenant_unavailable");
    assert!(w.store.calls() > before, "the store was asked");
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let w = World::new();
    let verifier = JwtVerifier::builder()
        .hs256(SECRET)
        .issuer(ISS)
        .audience(AUD)
        .cache_verified_tokens(16, Duration::from_secs(60))
        .build()
        .unwrap();
    let svc = service(&w, verifier.clone());
    for i in 0..200 {
        let mut c = claims(w.acme);
        c["sub"] = json!(format!("user-{i}"));
        assert_accepted(&svc, &hs256(&c), "distinct token").await;
    }
    let n = verifier.cached_tokens();
    assert!((1..=16).contains(&n), "{n} tokens remembered, bound 16");
}

#[test]
fn an_empty_or_timeless_cache_is_a_configuration_error() {
    for (max, ttl) in [(0, Duration::from_secs(60)), (10, Duration::ZERO)] {
        let err = JwtVerifier::builder()
            .hs256(SECRET)
            .issuer(ISS)
            .audience(AUD)
            .cache_verified_tokens(max, ttl)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidCache);
    }
}
