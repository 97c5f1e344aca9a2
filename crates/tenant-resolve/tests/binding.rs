//! The binding rules: a selector never grants access alone, all sources must agree, invalid
//! credentials never reach the store, inactive tenants look the same, outages are 503.

mod common;

use bytes::Bytes;
use common::*;
use http::header::{AUTHORIZATION, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use tenantry_core::{Plan, Slug, Tenant, TenantId};
use tenantry_resolve::{
    ConfigErrorKind, HostRules, JwtVerifier, Rejection, RejectionKind, TenantResolve,
    TenantResolveLayer,
};
use tower::Layer;

type Echo = tower::util::ServiceFn<
    fn(
        http::Request<Full<Bytes>>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Response<Full<Bytes>>, std::convert::Infallible>,
                > + Send,
        >,
    >,
>;

fn echo_service() -> Echo {
    tower::service_fn(|req| Box::pin(echo(req)))
}

fn verifier() -> JwtVerifier {
    JwtVerifier::builder()
        .hs256(SECRET)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap()
}

/// Subdomains under example.com, X-Tenant-ID, HS256 JWTs and API keys.
fn service(world: &World) -> TenantResolve<Echo, TestStore> {
    TenantResolveLayer::builder(world.store.clone())
        .subdomains(HostRules::new(["example.com"]).unwrap())
        .jwt(verifier())
        .api_keys()
        .build()
        .unwrap()
        .layer(echo_service())
}

fn assert_rejected(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "body: {:?}", reply.body);
    assert_eq!(reply.code(), code);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
}

// --- a selector alone never grants access ------------------------------------------------

#[tokio::test]
async fn tenant_header_alone_is_401_with_www_authenticate_and_no_lookup() {
    let w = World::new();
    let svc = service(&w);
    let r = send(
        &svc,
        req()
            .header("x-tenant-id", "acme")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "tenant_required");
    assert_eq!(r.headers[WWW_AUTHENTICATE], "Bearer");
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn subdomain_alone_is_401_with_no_lookup() {
    let w = World::new();
    let svc = service(&w);
    let r = send(
        &svc,
        req()
            .header(HOST, "acme.example.com")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "tenant_required");
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn bare_selector_response_is_identical_for_existing_inactive_and_unknown_tenants() {
    let w = World::new();
    let svc = service(&w);
    let mut bodies = Vec::new();
    for selector in [
        "acme",
        "suspended",
        "deleted",
        "nosuchtenant",
        &w.acme.to_string(),
    ] {
        let r = send(
            &svc,
            req()
                .header("x-tenant-id", selector)
                .body(Full::default())
                .unwrap(),
        )
        .await;
        bodies.push((r.status, r.body));
    }
    assert!(bodies.windows(2).all(|p| p[0] == p[1]), "{bodies:?}");
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn no_credential_and_no_selector_is_401() {
    let w = World::new();
    let r = send(&service(&w), req().body(Full::default()).unwrap()).await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "tenant_required");
}

#[tokio::test]
async fn non_bearer_authorization_is_not_a_credential() {
    let w = World::new();
    let r = send(
        &service(&w),
        req()
            .header(AUTHORIZATION, "Basic YWNtZTpwYXNz")
            .header("x-tenant-id", "acme")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "tenant_required");
}

#[tokio::test]
async fn bare_selector_is_served_only_with_the_dangerous_opt_in() {
    let w = World::new();
    let trusting = TenantResolveLayer::builder(w.store.clone())
        .subdomains(HostRules::new(["example.com"]).unwrap())
        .dangerously_trust_bare_selector()
        .build()
        .unwrap()
        .layer(echo_service());
    let r = send(
        &trusting,
        req()
            .header("x-tenant-id", "acme")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.tenant(), "acme");
    assert_eq!(r.json()["kind"], "TrustedSelector");
    let r = send(
        &trusting,
        req()
            .header(HOST, "globex.example.com")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.tenant(), "globex");
    // Still uniform for tenants that cannot be served, and sources must still agree.
    let r = send(
        &trusting,
        req()
            .header("x-tenant-id", "nosuch")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_unavailable");
    let r = send(
        &trusting,
        req()
            .header(HOST, "globex.example.com")
            .header("x-tenant-id", w.acme.to_string())
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    // Without a selector there is nothing to trust.
    let r = send(&trusting, req().body(Full::default()).unwrap()).await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "tenant_required");
}

// --- credentials resolve the tenant --------------------------------------------------------

#[tokio::test]
async fn jwt_alone_resolves_its_tenant_and_keeps_sub_and_roles() {
    let w = World::new();
    let token = hs256(&claims(w.acme));
    let r = send(
        &service(&w),
        req()
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["kind"], "Jwt");
    assert_eq!(v["sub"], "user-1");
    assert_eq!(v["roles"], serde_json::json!(["editor", "admin"]));
}

#[tokio::test]
async fn jwt_tenant_claim_may_be_a_slug() {
    let w = World::new();
    let token = hs256(&claims("globex"));
    let r = send(
        &service(&w),
        req()
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.tenant(), "globex");
}

#[tokio::test]
async fn jwt_agreeing_with_subdomain_and_header_is_served() {
    let w = World::new();
    let token = hs256(&claims(w.acme));
    let r = send(
        &service(&w),
        req()
            .header(HOST, "ACME.example.com:8443")
            .header("x-tenant-id", "acme")
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.tenant(), "acme");
    assert_eq!(w.store.calls(), 1, "one lookup per request");
}

#[tokio::test]
async fn api_key_in_x_api_key_or_bearer_resolves_its_tenant() {
    let w = World::new();
    let svc = service(&w);
    let r = send(
        &svc,
        req()
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.tenant(), "acme");
    assert_eq!(r.json()["kind"], "ApiKey");
    assert_eq!(r.json()["sub"], serde_json::Value::Null);
    let r = send(
        &svc,
        req()
            .header(AUTHORIZATION, bearer(&key_for("globex")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.tenant(), "globex");
}

// --- every source present must name the same tenant ----------------------------------------

#[tokio::test]
async fn jwt_for_acme_on_globex_subdomain_is_403_mismatch() {
    let w = World::new();
    let token = hs256(&claims(w.acme));
    let r = send(
        &service(&w),
        req()
            .header(HOST, "globex.example.com")
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    assert_eq!(r.rejection.unwrap().kind(), RejectionKind::TenantMismatch);
}

#[tokio::test]
async fn jwt_slug_against_other_slug_is_refused_before_any_lookup() {
    let w = World::new();
    let token = hs256(&claims("acme"));
    let r = send(
        &service(&w),
        req()
            .header("x-tenant-id", "globex")
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn jwt_for_acme_with_globex_tenant_header_id_is_403() {
    let w = World::new();
    let token = hs256(&claims(w.acme));
    let r = send(
        &service(&w),
        req()
            .header("x-tenant-id", w.globex.to_string())
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
}

#[tokio::test]
async fn jwt_with_a_header_naming_an_unknown_tenant_is_a_mismatch_not_an_existence_answer() {
    let w = World::new();
    let token = hs256(&claims(w.acme));
    for selector in [
        "globex".to_owned(),
        "nosuchtenant".to_owned(),
        TenantId::new_v4().to_string(),
    ] {
        let r = send(
            &service(&w),
            req()
                .header("x-tenant-id", &selector)
                .header(AUTHORIZATION, bearer(&token))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    }
}

#[tokio::test]
async fn subdomain_and_tenant_header_must_agree() {
    let w = World::new();
    let r = send(
        &service(&w),
        req()
            .header(HOST, "acme.example.com")
            .header("x-tenant-id", "globex")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
}

#[tokio::test]
async fn api_key_for_acme_with_globex_selector_is_403() {
    let w = World::new();
    let svc = service(&w);
    let r = send(
        &svc,
        req()
            .header("x-tenant-id", "globex")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    let r = send(
        &svc,
        req()
            .header(HOST, "globex.example.com")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
}

#[tokio::test]
async fn mismatch_emits_a_warning_event() {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0
                    .lock()
                    .unwrap()
                    .push(event.metadata().target().to_owned());
            }
        }
    }
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = World::new();
    let token = hs256(&claims("acme"));
    let mismatch = || {
        req()
            .header("x-tenant-id", "globex")
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap()
    };
    // Other tests of this binary hit the same WARN callsite on other threads, with no
    // subscriber. A registration there that straddles the `set_default` above can cache
    // "never" after any rebuild done before it ends. So: hit the callsite once (registered
    // by then, here or there), rebuild with this subscriber live, and only then measure.
    let _ = send(&service(&w), mismatch()).await;
    tracing::callsite::rebuild_interest_cache();
    capture.0.lock().unwrap().clear();

    let r = send(&service(&w), mismatch()).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        *capture.0.lock().unwrap(),
        vec!["tenantry::resolve".to_owned()]
    );
}

// --- invalid credentials never reach the store ---------------------------------------------

#[tokio::test]
async fn bad_jwt_signature_is_401_before_any_lookup() {
    let w = World::new();
    let token = tampered_signature(&hs256(&claims(w.acme)));
    let r = send(
        &service(&w),
        req()
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert!(r.headers[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn malformed_api_keys_are_refused_without_lookup() {
    let w = World::new();
    let svc = service(&w);
    for key in [
        "short",
        &"k".repeat(513),
        "has space in the middle ok",
        "tab\tinside-the-key-xx",
    ] {
        let r = send(
            &svc,
            req()
                .header("x-api-key", key)
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_rejected(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    for value in ["Bearer", "Bearer ", "Bearer a b", "Bearer a\tb"] {
        let r = send(
            &svc,
            req()
                .header(AUTHORIZATION, value)
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_rejected(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn unknown_api_key_is_401_invalid_credentials() {
    let w = World::new();
    let r = send(
        &service(&w),
        req()
            .header("x-api-key", key_for("nosuchtenant"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(w.store.calls(), 1);
}

#[tokio::test]
async fn two_credentials_or_two_authorization_headers_are_refused() {
    let w = World::new();
    let svc = service(&w);
    let token = hs256(&claims(w.acme));
    let r = send(
        &svc,
        req()
            .header(AUTHORIZATION, bearer(&token))
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let r = send(
        &svc,
        req()
            .header(AUTHORIZATION, bearer(&token))
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn bearer_api_key_is_refused_when_only_jwts_are_configured() {
    let w = World::new();
    let svc = TenantResolveLayer::builder(w.store.clone())
        .jwt(verifier())
        .build()
        .unwrap()
        .layer(echo_service());
    let r = send(
        &svc,
        req()
            .header(AUTHORIZATION, bearer(&key_for("acme")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // X-API-Key is not read at all: no credential.
    let r = send(
        &svc,
        req()
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::UNAUTHORIZED, "tenant_required");
    assert_eq!(w.store.calls(), 0);
}

// --- uniform statuses for tenants that cannot be served ------------------------------------

#[tokio::test]
async fn unknown_suspended_pending_and_deleted_tenants_get_the_same_response() {
    let w = World::new();
    let svc = service(&w);
    let mut replies = Vec::new();
    for tenant in [w.suspended, w.pending, w.deleted, TenantId::new_v4()] {
        let token = hs256(&claims(tenant));
        let r = send(
            &svc,
            req()
                .header(AUTHORIZATION, bearer(&token))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_unavailable");
        replies.push((r.status, r.headers, r.body));
    }
    let token = hs256(&claims("nosuchtenant"));
    let r = send(
        &svc,
        req()
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    replies.push((r.status, r.headers, r.body));
    assert!(
        replies.windows(2).all(|p| p[0] == p[1]),
        "responses differ: {replies:?}"
    );
}

#[tokio::test]
async fn api_key_of_an_inactive_tenant_gets_the_uniform_response() {
    let w = World::new();
    let svc = service(&w);
    for slug in ["suspended", "pending", "deleted"] {
        let r = send(
            &svc,
            req()
                .header("x-api-key", key_for(slug))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_unavailable");
    }
}

// --- store failures are 503 ----------------------------------------------------------------

#[tokio::test]
async fn store_outage_is_503_with_retry_after_never_500() {
    let w = World::new();
    w.store.fail();
    let svc = service(&w);
    let token = hs256(&claims(w.acme));
    for r in [
        send(
            &svc,
            req()
                .header(AUTHORIZATION, bearer(&token))
                .body(Full::default())
                .unwrap(),
        )
        .await,
        send(
            &svc,
            req()
                .header("x-api-key", key_for("acme"))
                .body(Full::default())
                .unwrap(),
        )
        .await,
    ] {
        assert_rejected(&r, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
        assert!(r.headers.contains_key(RETRY_AFTER));
        let rejection = r.rejection.unwrap();
        assert_eq!(rejection.kind(), RejectionKind::StoreUnavailable);
        let source = std::error::Error::source(&rejection).expect("store error kept as source");
        assert!(source.to_string().contains("unavailable"));
    }
}

#[tokio::test]
async fn store_answering_with_another_tenants_record_is_not_trusted() {
    let w = World::new();
    let other = w.store.inner.clone();
    let globex = tenantry_core::TenantStore::by_id(&other, w.globex)
        .await
        .unwrap()
        .unwrap();
    w.store.always_answer(globex);
    let token = hs256(&claims(w.acme));
    let r = send(
        &service(&w),
        req()
            .header(AUTHORIZATION, bearer(&token))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
}

// --- host and header selectors -------------------------------------------------------------

#[tokio::test]
async fn two_host_values_are_400() {
    let w = World::new();
    let r = send(
        &service(&w),
        req()
            .header(HOST, "acme.example.com")
            .header(HOST, "globex.example.com")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::BAD_REQUEST, "invalid_tenant_selector");
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn host_that_disagrees_with_the_absolute_form_target_is_400() {
    let w = World::new();
    let svc = service(&w);
    let r = send(
        &svc,
        http::Request::builder()
            .uri("http://globex.example.com/docs")
            .header(HOST, "acme.example.com")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::BAD_REQUEST, "invalid_tenant_selector");
    // Agreeing (case-insensitively) is fine.
    let r = send(
        &svc,
        http::Request::builder()
            .uri("http://ACME.example.com/docs")
            .header(HOST, "acme.example.com")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn http2_authority_without_host_header_is_the_subdomain_selector() {
    let w = World::new();
    let svc = service(&w);
    let make = |authority: &str| {
        let mut req = http::Request::builder()
            .uri(format!("https://{authority}/docs"))
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap();
        *req.version_mut() = http::Version::HTTP_2;
        req
    };
    assert_eq!(send(&svc, make("acme.example.com")).await.status, 200);
    let r = send(&svc, make("globex.example.com")).await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
}

#[tokio::test]
async fn userinfo_in_the_request_target_is_400() {
    let w = World::new();
    let r = send(
        &service(&w),
        http::Request::builder()
            .uri("http://acme.example.com@globex.example.com/")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::BAD_REQUEST, "invalid_tenant_selector");
}

#[tokio::test]
async fn foreign_hosts_and_ips_select_nothing_so_the_credential_decides() {
    let w = World::new();
    let svc = service(&w);
    for host in [
        "127.0.0.1:8080",
        "evil.test",
        "www.example.com",
        "a.acme.example.com",
    ] {
        let r = send(
            &svc,
            req()
                .header(HOST, host)
                .header("x-api-key", key_for("acme"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.tenant(), "acme");
    }
}

#[tokio::test]
async fn forwarded_host_headers_are_ignored_without_the_trusted_proxy_option() {
    let w = World::new();
    let r = send(
        &service(&w),
        req()
            .header(HOST, "acme.example.com")
            .header("x-forwarded-host", "globex.example.com")
            .header("forwarded", "host=globex.example.com")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.tenant(), "acme");
}

#[tokio::test]
async fn trusted_proxy_uses_the_host_added_by_the_nearest_proxy() {
    let w = World::new();
    let svc = TenantResolveLayer::builder(w.store.clone())
        .subdomains(HostRules::new(["example.com"]).unwrap())
        .api_keys()
        .trusted_proxy_forwarded_host()
        .build()
        .unwrap()
        .layer(echo_service());
    let with = |name: &str, value: &str, key: &str| {
        req()
            .header(HOST, "internal.lb")
            .header(name, value)
            .header("x-api-key", key_for(key))
            .body(Full::default())
            .unwrap()
    };
    // The forwarded host is now the subdomain selector.
    assert_eq!(
        send(
            &svc,
            with("x-forwarded-host", "globex.example.com", "globex")
        )
        .await
        .status,
        200
    );
    let r = send(&svc, with("x-forwarded-host", "globex.example.com", "acme")).await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    let r = send(
        &svc,
        with(
            "forwarded",
            "for=1.2.3.4;host=\"globex.example.com\";proto=https",
            "acme",
        ),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    // A client-supplied first value is not the one our proxy appended.
    let r = send(
        &svc,
        with(
            "x-forwarded-host",
            "globex.example.com, acme.example.com",
            "acme",
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &svc,
        with(
            "forwarded",
            "host=globex.example.com, for=1.2.3.4;host=acme.example.com",
            "acme",
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    // Commas and semicolons inside quoted strings do not split elements or pairs: the
    // proxy's element names globex, so an acme key is a mismatch, not a missing selector.
    let r = send(
        &svc,
        with(
            "forwarded",
            "for=1.2.3.4;host=globex.example.com;ext=\"a,b\"",
            "acme",
        ),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    let r = send(
        &svc,
        with(
            "forwarded",
            "for=\"x;host=acme.example.com\";host=globex.example.com",
            "acme",
        ),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
}

#[tokio::test]
async fn malformed_or_repeated_tenant_header_is_400_before_lookup() {
    let w = World::new();
    let svc = service(&w);
    for value in [
        "Acme Corp",
        "-acme",
        "acme_corp",
        "00000000-0000-0000-0000-000000000000",
        "",
    ] {
        let r = send(
            &svc,
            req()
                .header("x-tenant-id", value)
                .header("x-api-key", key_for("acme"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_rejected(&r, StatusCode::BAD_REQUEST, "invalid_tenant_selector");
    }
    let r = send(
        &svc,
        req()
            .header("x-tenant-id", "acme")
            .header("x-tenant-id", "acme")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::BAD_REQUEST, "invalid_tenant_selector");
    let r = send(
        &svc,
        req()
            .header(
                "x-tenant-id",
                http::HeaderValue::from_bytes(b"ac\xffme").unwrap(),
            )
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::BAD_REQUEST, "invalid_tenant_selector");
    assert_eq!(w.store.calls(), 0);
}

#[tokio::test]
async fn tenant_header_name_is_configurable_and_can_be_disabled() {
    let w = World::new();
    let renamed = TenantResolveLayer::builder(w.store.clone())
        .tenant_header("X-Org")
        .api_keys()
        .build()
        .unwrap()
        .layer(echo_service());
    let r = send(
        &renamed,
        req()
            .header("x-org", "globex")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_mismatch");
    // The default name is no longer read.
    let r = send(
        &renamed,
        req()
            .header("x-tenant-id", "globex")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);

    let disabled = TenantResolveLayer::builder(w.store.clone())
        .without_tenant_header()
        .api_keys()
        .build()
        .unwrap()
        .layer(echo_service());
    let r = send(
        &disabled,
        req()
            .header("x-tenant-id", "globex")
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.tenant(), "acme");
}

#[tokio::test]
async fn renamed_api_key_header_is_read() {
    let w = World::new();
    let svc = TenantResolveLayer::builder(w.store.clone())
        .api_key_header("X-Key")
        .build()
        .unwrap()
        .layer(echo_service());
    let r = send(
        &svc,
        req()
            .header("x-key", key_for("globex"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.tenant(), "globex");
}

// --- rejection shape -----------------------------------------------------------------------

#[tokio::test]
async fn rejection_is_replaceable_and_always_in_the_response_extensions() {
    let w = World::new();
    let svc = TenantResolveLayer::builder(w.store.clone())
        .api_keys()
        .build()
        .unwrap()
        .with_rejection(|r: Rejection| {
            let mut res = Response::new(Full::new(Bytes::from_static(b"nope")));
            *res.status_mut() = if r.kind() == RejectionKind::TenantRequired {
                StatusCode::IM_A_TEAPOT
            } else {
                r.status()
            };
            res
        })
        .layer(echo_service());
    let r = send(&svc, req().body(Full::default()).unwrap()).await;
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(&r.body[..], b"nope");
    assert_eq!(r.rejection.unwrap().kind(), RejectionKind::TenantRequired);
    // Also for rejections decided after the lookup.
    let r = send(
        &svc,
        req()
            .header("x-api-key", key_for("deleted"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.rejection.unwrap().kind(),
        RejectionKind::TenantUnavailable
    );
}

#[tokio::test]
async fn default_rejection_body_is_problem_json() {
    let w = World::new();
    let r = send(&service(&w), req().body(Full::default()).unwrap()).await;
    let v = r.json();
    assert_eq!(v["type"], "urn:tenantry:problem:tenant_required");
    assert_eq!(v["status"], 401);
    assert!(v["title"].is_string());
}

// --- configuration -------------------------------------------------------------------------

#[test]
fn builder_refuses_configurations_that_could_never_serve_or_are_ambiguous() {
    let store = TestStore::default();
    let kind = |r: Result<TenantResolveLayer<TestStore>, tenantry_resolve::ConfigError>| {
        r.unwrap_err().kind()
    };
    assert_eq!(
        kind(TenantResolveLayer::builder(store.clone()).build()),
        ConfigErrorKind::NoCredentialSource
    );
    assert_eq!(
        kind(
            TenantResolveLayer::builder(store.clone())
                .without_tenant_header()
                .dangerously_trust_bare_selector()
                .build()
        ),
        ConfigErrorKind::NoCredentialSource
    );
    assert_eq!(
        kind(
            TenantResolveLayer::builder(store.clone())
                .tenant_header("bad header")
                .api_keys()
                .build()
        ),
        ConfigErrorKind::InvalidName
    );
    assert_eq!(
        kind(
            TenantResolveLayer::builder(store.clone())
                .tenant_header("authorization")
                .api_keys()
                .build()
        ),
        ConfigErrorKind::InvalidName
    );
    assert_eq!(
        kind(
            TenantResolveLayer::builder(store.clone())
                .tenant_header("x-key")
                .api_key_header("X-Key")
                .build()
        ),
        ConfigErrorKind::InvalidName
    );
    assert!(TenantResolveLayer::builder(store)
        .api_keys()
        .build()
        .is_ok());
}

#[tokio::test]
async fn inactive_tenant_reached_through_a_fresh_record_is_refused() {
    // Suspension takes effect on the next request: nothing is cached by the layer itself.
    let w = World::new();
    let svc = service(&w);
    let r = send(
        &svc,
        req()
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    w.store.inner.insert(
        Tenant::builder(w.acme, Slug::new("acme").unwrap(), Plan::pro())
            .status(tenantry_core::TenantStatus::Suspended)
            .build(),
    );
    let r = send(
        &svc,
        req()
            .header("x-api-key", key_for("acme"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_rejected(&r, StatusCode::FORBIDDEN, "tenant_unavailable");
}
