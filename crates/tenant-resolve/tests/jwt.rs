//! The JWT catalogue of SECURITY.md: every way a token can lie, each refused with 401
//! `invalid_credentials` before the store is asked anything, next to the valid token that
//! proves the same setup accepts the honest case.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::header::AUTHORIZATION;
use http::StatusCode;
use http_body_util::Full;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tenantry_resolve::{ConfigErrorKind, JwtVerifier, RejectionKind, TenantResolveLayer};
use tower::Layer;

type Svc = tenantry_resolve::TenantResolve<
    tower::util::BoxCloneService<
        http::Request<Full<Bytes>>,
        http::Response<Full<Bytes>>,
        std::convert::Infallible,
    >,
    TestStore,
>;

fn service(world: &World, verifier: JwtVerifier) -> Svc {
    TenantResolveLayer::builder(world.store.clone())
        .jwt(verifier)
        .build()
        .unwrap()
        .layer(tower::util::BoxCloneService::new(tower::service_fn(echo)))
}

fn hs_verifier() -> JwtVerifier {
    JwtVerifier::builder()
        .hs256(SECRET)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap()
}

fn rs_verifier() -> JwtVerifier {
    JwtVerifier::builder()
        .rs256_pem(Some("rsa-1"), RSA_PUBLIC)
        .rs256_pem(Some("rsa-2"), RSA2_PUBLIC)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap()
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

/// Asserts `token` is refused as an invalid credential without any store lookup.
async fn refused(world: &World, svc: &Svc, token: &str, why: &str) {
    let before = world.store.calls();
    let r = call(svc, token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: accepted");
    assert_eq!(r.code(), "invalid_credentials", "{why}");
    assert_eq!(
        r.rejection.as_ref().unwrap().kind(),
        RejectionKind::InvalidCredentials,
        "{why}"
    );
    assert_eq!(world.store.calls(), before, "{why}: store was asked");
}

async fn accepted(svc: &Svc, token: &str, why: &str) {
    let r = call(svc, token).await;
    assert_eq!(r.status, StatusCode::OK, "{why}: {:?}", r.body);
    assert_eq!(r.tenant(), "acme", "{why}");
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn rs256(kid: Option<&str>, private: &[u8], claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_owned);
    sign(&h, claims, &EncodingKey::from_rsa_pem(private).unwrap())
}

#[tokio::test]
async fn alg_none_is_rejected_in_every_spelling() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    accepted(&svc, &hs256(&claims(w.acme)), "control").await;
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let token = raw_token(&json!({"alg": alg, "typ": "JWT"}), &claims(w.acme), b"");
        refused(&w, &svc, &token, alg).await;
        let token = token.trim_end_matches('.').to_owned();
        refused(&w, &svc, &token, "two segments").await;
    }
    let no_alg = raw_token(&json!({"typ": "JWT"}), &claims(w.acme), b"sig");
    refused(&w, &svc, &no_alg, "missing alg").await;
}

#[tokio::test]
async fn hs256_token_signed_with_the_rsa_public_key_is_rejected() {
    // Key confusion: the attacker knows the public key and uses it as an HMAC secret.
    let w = World::new();
    let svc = service(&w, rs_verifier());
    accepted(
        &svc,
        &rs256(Some("rsa-1"), RSA_PRIVATE, &claims(w.acme)),
        "control",
    )
    .await;
    for kid in [Some("rsa-1"), None] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.map(str::to_owned);
        let token = sign(&h, &claims(w.acme), &EncodingKey::from_secret(RSA_PUBLIC));
        refused(&w, &svc, &token, "HS256 with public key").await;
    }
}

#[tokio::test]
async fn token_of_another_family_than_the_key_is_rejected() {
    let w = World::new();
    // An HMAC verifier does not accept an RS256 token, even with a valid RSA signature.
    let hs = service(&w, hs_verifier());
    refused(
        &w,
        &hs,
        &rs256(None, RSA_PRIVATE, &claims(w.acme)),
        "RS256 to HS256 key",
    )
    .await;
    // HS384/HS512 with the right secret: the key is pinned to HS256.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(
            &Header::new(alg),
            &claims(w.acme),
            &EncodingKey::from_secret(SECRET),
        );
        refused(&w, &hs, &token, "other HMAC alg").await;
    }
    // An ES256 key refuses an RS256 token and a PS256 token.
    let es = service(
        &w,
        JwtVerifier::builder()
            .es256_pem(None, EC_PUBLIC)
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap(),
    );
    let es_token = sign(
        &Header::new(Algorithm::ES256),
        &claims(w.acme),
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
    );
    accepted(&es, &es_token, "ES256 control").await;
    refused(
        &w,
        &es,
        &rs256(None, RSA_PRIVATE, &claims(w.acme)),
        "RS256 to ES256 key",
    )
    .await;
    let ps = sign(
        &Header::new(Algorithm::PS256),
        &claims(w.acme),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    );
    refused(&w, &es, &ps, "PS256 to ES256 key").await;
    // An RS256 key refuses PS256 (same family, different algorithm).
    let rs = service(&w, rs_verifier());
    let mut h = Header::new(Algorithm::PS256);
    h.kid = Some("rsa-1".into());
    let ps = sign(
        &h,
        &claims(w.acme),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    );
    refused(&w, &rs, &ps, "PS256 to RS256 key").await;
}

#[tokio::test]
async fn eddsa_keys_verify_and_refuse_other_keys_signatures() {
    let w = World::new();
    let ed = service(
        &w,
        JwtVerifier::builder()
            .eddsa_pem(Some("ed"), ED_PUBLIC)
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap(),
    );
    let key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("ed".into());
    accepted(&ed, &sign(&h, &claims(w.acme), &key), "EdDSA control").await;
    // Without kid: one key only, so it is used.
    accepted(
        &ed,
        &sign(&Header::new(Algorithm::EdDSA), &claims(w.acme), &key),
        "EdDSA no kid",
    )
    .await;
    let mut tampered = sign(&h, &claims(w.acme), &key);
    let sig_start = tampered.rfind('.').unwrap() + 1;
    let flipped = if &tampered[sig_start..=sig_start] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(sig_start..=sig_start, flipped);
    refused(&w, &ed, &tampered, "tampered signature").await;
}

#[tokio::test]
async fn missing_exp_iss_or_aud_is_rejected() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    for claim in ["exp", "iss", "aud"] {
        refused(&w, &svc, &hs256(&without(claims(w.acme), claim)), claim).await;
    }
}

#[tokio::test]
async fn odd_exp_iss_aud_and_nbf_values_are_rejected() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    let c = || claims(w.acme);
    let cases = [
        (
            "exp string",
            with(c(), "exp", json!((now() + 300).to_string())),
        ),
        ("exp null", with(c(), "exp", Value::Null)),
        ("exp negative", with(c(), "exp", json!(-1))),
        ("exp object", with(c(), "exp", json!({"t": now() + 300}))),
        ("exp huge float", with(c(), "exp", json!(f64::MAX))),
        (
            "iss array with the right issuer",
            with(c(), "iss", json!([ISS, "https://evil.test"])),
        ),
        ("iss number", with(c(), "iss", json!(1))),
        ("iss wrong", with(c(), "iss", json!("https://evil.test"))),
        ("iss case", with(c(), "iss", json!(ISS.to_uppercase()))),
        ("aud wrong", with(c(), "aud", json!("other-api"))),
        ("aud empty array", with(c(), "aud", json!([]))),
        (
            "aud array without ours",
            with(c(), "aud", json!(["a", "b"])),
        ),
        ("aud number", with(c(), "aud", json!(7))),
        ("nbf string", with(c(), "nbf", json!(now().to_string()))),
        ("nbf in the future", with(c(), "nbf", json!(now() + 3600))),
        ("sub number", with(c(), "sub", json!(42))),
    ];
    for (why, claims) in cases {
        refused(&w, &svc, &hs256(&claims), why).await;
    }
    // Controls: an audience array containing ours, and an nbf in the past, are fine.
    accepted(
        &svc,
        &hs256(&with(c(), "aud", json!(["other", AUD]))),
        "aud array",
    )
    .await;
    accepted(
        &svc,
        &hs256(&with(c(), "nbf", json!(now() - 10))),
        "nbf past",
    )
    .await;
}

#[tokio::test]
async fn expired_tokens_are_rejected_beyond_a_small_bounded_leeway() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    let c = || claims(w.acme);
    refused(
        &w,
        &svc,
        &hs256(&with(c(), "exp", json!(now() - 3600))),
        "expired an hour ago",
    )
    .await;
    refused(
        &w,
        &svc,
        &hs256(&with(c(), "exp", json!(now() - 31))),
        "expired beyond 30 s",
    )
    .await;
    accepted(
        &svc,
        &hs256(&with(c(), "exp", json!(now() - 5))),
        "within leeway",
    )
    .await;
    refused(
        &w,
        &svc,
        &hs256(&with(c(), "nbf", json!(now() + 31))),
        "nbf beyond 30 s",
    )
    .await;

    let strict = service(
        &w,
        JwtVerifier::builder()
            .hs256(SECRET)
            .issuer(ISS)
            .audience(AUD)
            .leeway(Duration::ZERO)
            .build()
            .unwrap(),
    );
    refused(
        &w,
        &strict,
        &hs256(&with(c(), "exp", json!(now() - 2))),
        "no leeway",
    )
    .await;
    let err = JwtVerifier::builder()
        .hs256(SECRET)
        .issuer(ISS)
        .audience(AUD)
        .leeway(Duration::from_secs(301))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::LeewayTooLarge);
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    refused(
        &w,
        &svc,
        &hs256(&with(claims(w.acme), "aud", json!("billing-api"))),
        "aud",
    )
    .await;
}

#[tokio::test]
async fn unknown_kid_is_rejected_and_rotation_selects_by_kid() {
    let w = World::new();
    let svc = service(&w, rs_verifier());
    accepted(
        &svc,
        &rs256(Some("rsa-1"), RSA_PRIVATE, &claims(w.acme)),
        "key 1",
    )
    .await;
    accepted(
        &svc,
        &rs256(Some("rsa-2"), RSA2_PRIVATE, &claims(w.acme)),
        "key 2",
    )
    .await;
    refused(
        &w,
        &svc,
        &rs256(Some("rsa-1"), RSA2_PRIVATE, &claims(w.acme)),
        "key 2 signed, kid 1",
    )
    .await;
    refused(
        &w,
        &svc,
        &rs256(Some("rsa-3"), RSA_PRIVATE, &claims(w.acme)),
        "unknown kid",
    )
    .await;
    refused(
        &w,
        &svc,
        &rs256(None, RSA_PRIVATE, &claims(w.acme)),
        "no kid with several keys",
    )
    .await;
}

#[tokio::test]
async fn hostile_kids_are_rejected() {
    let w = World::new();
    let svc = service(&w, rs_verifier());
    let long = "k".repeat(10_000);
    for kid in [
        "../../../../etc/passwd",
        "rsa-1' OR '1'='1",
        "http://evil.test/jwks.json",
        "rsa-1\u{0}",
        "rsa-1\n",
        " rsa-1",
        "",
        "rsa‑1",
        long.as_str(),
    ] {
        refused(
            &w,
            &svc,
            &rs256(Some(kid), RSA_PRIVATE, &claims(w.acme)),
            kid,
        )
        .await;
    }
    // A kid that is not a string is a malformed header.
    let token = raw_token(&json!({"alg": "RS256", "kid": 1}), &claims(w.acme), b"sig");
    refused(&w, &svc, &token, "numeric kid").await;
}

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_headers_are_ignored() {
    // The attacker signs with their own key and points at it every way a header can.
    let w = World::new();
    let svc = service(&w, rs_verifier());
    let attacker = EncodingKey::from_rsa_pem(RSA2_PRIVATE).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    h.jku = Some("https://evil.test/jwks.json".into());
    h.x5u = Some("https://evil.test/cert.pem".into());
    h.jwk = Some(Jwk::from_encoding_key(&attacker, Algorithm::RS256).unwrap());
    refused(
        &w,
        &svc,
        &sign(&h, &claims(w.acme), &attacker),
        "embedded attacker key",
    )
    .await;
}

#[tokio::test]
async fn crit_header_is_rejected() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    let h = Header {
        crit: Some(vec!["exp".into()]),
        ..Header::default()
    };
    refused(
        &w,
        &svc,
        &sign(&h, &claims(w.acme), &EncodingKey::from_secret(SECRET)),
        "crit",
    )
    .await;
}

#[tokio::test]
async fn tampered_payload_and_garbage_tokens_are_rejected() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    let token = hs256(&claims(w.acme));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = b64(claims(w.globex).to_string().as_bytes());
    let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    refused(&w, &svc, &forged, "payload swapped").await;
    for garbage in [
        "a.b.c",
        "..",
        "e30.e30.",
        "💥.💥.💥",
        "eyJhbGciOiJIUzI1NiJ9.e30.e30",
    ] {
        refused(&w, &svc, garbage, garbage).await;
    }
    refused(
        &w,
        &svc,
        &format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c"),
        "oversized",
    )
    .await;
}

#[tokio::test]
async fn missing_or_invalid_tenant_claim_is_rejected() {
    let w = World::new();
    let svc = service(&w, hs_verifier());
    let c = || claims(w.acme);
    refused(&w, &svc, &hs256(&without(c(), "tenant_id")), "missing").await;
    for bad in [
        json!(""),
        json!("Acme Corp"),
        json!(5),
        json!([w.acme.to_string()]),
        json!(null),
    ] {
        refused(
            &w,
            &svc,
            &hs256(&with(c(), "tenant_id", bad.clone())),
            &bad.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn tenant_claim_name_is_configurable() {
    let w = World::new();
    let svc = service(
        &w,
        JwtVerifier::builder()
            .hs256(SECRET)
            .issuer(ISS)
            .audience(AUD)
            .tenant_claim("https://tenantry.test/org")
            .build()
            .unwrap(),
    );
    let c = with(
        without(claims(w.globex), "tenant_id"),
        "https://tenantry.test/org",
        json!(w.acme.to_string()),
    );
    accepted(&svc, &hs256(&c), "custom claim").await;
    // The default claim name is no longer read.
    refused(&w, &svc, &hs256(&claims(w.acme)), "default claim ignored").await;
}

#[tokio::test]
async fn roles_may_be_an_array_or_a_space_separated_string_but_nothing_else() {
    let w = World::new();
    let svc = service(
        &w,
        JwtVerifier::builder()
            .hs256(SECRET)
            .issuer(ISS)
            .audience(AUD)
            .roles_claim("scope")
            .build()
            .unwrap(),
    );
    let r = call(
        &svc,
        &hs256(&with(claims(w.acme), "scope", json!("read write"))),
    )
    .await;
    assert_eq!(r.json()["roles"], json!(["read", "write"]));
    refused(
        &w,
        &svc,
        &hs256(&with(claims(w.acme), "scope", json!([1, 2]))),
        "numeric roles",
    )
    .await;
    refused(
        &w,
        &svc,
        &hs256(&with(claims(w.acme), "scope", json!({"a": 1}))),
        "object roles",
    )
    .await;
}

fn jwks() -> String {
    let mut k1 = Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    k1.common.key_id = Some("rsa-1".into());
    let mut k2 = Jwk::from_encoding_key(
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        Algorithm::ES256,
    )
    .unwrap();
    k2.common.key_id = Some("ec-1".into());
    let mut k3 = Jwk::from_encoding_key(
        &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        Algorithm::EdDSA,
    )
    .unwrap();
    k3.common.key_id = Some("ed-1".into());
    k3.common.key_algorithm = None; // implied by the key type
    serde_json::to_string(&JwkSet {
        keys: vec![k1, k2, k3],
    })
    .unwrap()
}

#[tokio::test]
async fn jwks_from_a_value_or_a_file_verifies_each_key_with_its_own_algorithm() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks()).unwrap();
    for builder in [
        JwtVerifier::builder().jwks_json(&jwks()),
        JwtVerifier::builder().jwks_file(&path),
    ] {
        let svc = service(&w, builder.issuer(ISS).audience(AUD).build().unwrap());
        accepted(
            &svc,
            &rs256(Some("rsa-1"), RSA_PRIVATE, &claims(w.acme)),
            "rsa",
        )
        .await;
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ec-1".into());
        accepted(
            &svc,
            &sign(
                &h,
                &claims(w.acme),
                &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
            ),
            "ec",
        )
        .await;
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("ed-1".into());
        accepted(
            &svc,
            &sign(
                &h,
                &claims(w.acme),
                &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
            ),
            "ed",
        )
        .await;
        // The EC key under the RSA kid, or RS256 under the EC kid: refused.
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("ec-1".into());
        refused(
            &w,
            &svc,
            &sign(
                &h,
                &claims(w.acme),
                &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            ),
            "RS256 under ec kid",
        )
        .await;
        // HS256 "signed" with the JWKS text: refused (no HMAC key in a JWKS).
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        refused(
            &w,
            &svc,
            &sign(
                &h,
                &claims(w.acme),
                &EncodingKey::from_secret(jwks().as_bytes()),
            ),
            "HS256 under rsa kid",
        )
        .await;
    }
}

#[test]
fn inconsistent_key_configuration_is_a_config_error() {
    let b = || JwtVerifier::builder().issuer(ISS).audience(AUD);
    let kind = |r: Result<JwtVerifier, tenantry_resolve::ConfigError>| r.unwrap_err().kind();
    assert_eq!(kind(b().build()), ConfigErrorKind::InvalidKey, "no key");
    assert_eq!(
        kind(b().hs256(b"short").build()),
        ConfigErrorKind::InvalidKey,
        "short secret"
    );
    assert_eq!(
        kind(
            b().hs256_with_kid("h", SECRET)
                .rs256_pem(Some("r"), RSA_PUBLIC)
                .build()
        ),
        ConfigErrorKind::InvalidKey,
        "mixed families"
    );
    assert_eq!(
        kind(
            b().rs256_pem(Some("r"), RSA_PUBLIC)
                .rs256_pem(Some("r"), RSA2_PUBLIC)
                .build()
        ),
        ConfigErrorKind::InvalidKey,
        "duplicate kid"
    );
    assert_eq!(
        kind(
            b().rs256_pem(None, RSA_PUBLIC)
                .rs256_pem(Some("r"), RSA2_PUBLIC)
                .build()
        ),
        ConfigErrorKind::InvalidKey,
        "missing kid among several"
    );
    assert_eq!(
        kind(b().rs256_pem(None, b"not a pem").build()),
        ConfigErrorKind::InvalidKey
    );
    assert_eq!(
        kind(b().jwks_json("{").build()),
        ConfigErrorKind::InvalidJwks
    );
    assert_eq!(
        kind(b().jwks_file("/nonexistent/jwks.json").build()),
        ConfigErrorKind::InvalidJwks
    );
    let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#;
    assert_eq!(
        kind(b().jwks_json(oct).build()),
        ConfigErrorKind::InvalidKey,
        "oct in JWKS"
    );
    let mut v: Value = serde_json::from_str(&jwks()).unwrap();
    v["keys"][0].as_object_mut().unwrap().remove("kid");
    assert_eq!(
        kind(b().jwks_json(&v.to_string()).build()),
        ConfigErrorKind::InvalidKey,
        "JWKS without kid"
    );
    let mut v: Value = serde_json::from_str(&jwks()).unwrap();
    v["keys"][1]["alg"] = json!("RS256");
    assert_eq!(
        kind(b().jwks_json(&v.to_string()).build()),
        ConfigErrorKind::InvalidKey,
        "alg vs kty"
    );
    let mut v: Value = serde_json::from_str(&jwks()).unwrap();
    v["keys"][0]["use"] = json!("enc");
    assert_eq!(
        kind(b().jwks_json(&v.to_string()).build()),
        ConfigErrorKind::InvalidKey,
        "enc key"
    );
    let only = |b: tenantry_resolve::JwtVerifierBuilder| kind(b.hs256(SECRET).build());
    assert_eq!(
        only(JwtVerifier::builder().issuer(ISS)),
        ConfigErrorKind::MissingIssuerOrAudience
    );
    assert_eq!(
        only(JwtVerifier::builder().audience(AUD)),
        ConfigErrorKind::MissingIssuerOrAudience
    );
}

#[test]
fn verifier_debug_never_prints_key_material() {
    let v = hs_verifier();
    let s = format!("{v:?}");
    assert!(!s.contains(std::str::from_utf8(SECRET).unwrap()));
    assert!(s.contains("HS256"));
}
