//! Over real HTTP: the statuses tenant-resolve documents (selector alone, mismatch, forged
//! credentials, unavailable tenants, malformed selectors), the rate limit's 429 and the
//! feature gate's 403, each as problem+json.

mod api_common;

use api_common::*;
use documents_api::admin;
use reqwest::Method;
use serde_json::json;
use tenantry_core::{TenantId, TenantStatus};

/// A selector without a credential never grants access: 401 tenant_required, before any
/// lookup; so does a request with nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_alone_is_401_tenant_required() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "sel-a", "pro", &[]).await;
    let srv = Server::start(settings(&db, None)).await;
    let cases = [
        ("nothing", Sel::None),
        ("header slug only", Sel::Header(a.slug.clone())),
        ("header id only", Sel::Header(a.id.to_string())),
        ("subdomain only", Sel::Subdomain(a.slug.clone())),
        (
            "subdomain and header",
            Sel::Both(a.slug.clone(), a.id.to_string()),
        ),
    ];
    for (what, sel) in cases {
        for (method, path) in [
            (Method::GET, "/api/v1/documents"),
            (Method::GET, "/api/v1/whoami"),
            (
                Method::DELETE,
                "/api/v1/documents/00000000-0000-4000-8000-000000000000",
            ),
        ] {
            let got = send(sel.apply(srv.request(method.clone(), path))).await;
            assert_problem(
                &format!("{what} {method} {path}"),
                &got,
                401,
                "tenant_required",
            );
            let www = got
                .1
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(
                www.starts_with("Bearer"),
                "{what}: WWW-Authenticate {www:?}"
            );
        }
    }
    srv.stop().await;
}

/// Every source must name the same tenant: a credential of A with B's subdomain or header,
/// or A's JWT with B's API key, is 403 tenant_mismatch and reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_and_selector_for_different_tenants_is_403_tenant_mismatch() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "mis-a", "pro", &[]).await;
    let b = tenant(&db, "mis-b", "pro", &[]).await;
    let srv = Server::start(settings(&db, None)).await;
    let wrong = [
        Sel::Subdomain(b.slug.clone()),
        Sel::Header(b.slug.clone()),
        Sel::Header(b.id.to_string()),
        Sel::Both(a.slug.clone(), b.id.to_string()),
        Sel::Both(b.slug.clone(), a.id.to_string()),
    ];
    for cred in CREDS {
        for sel in &wrong {
            let got = send(srv.as_tenant(Method::GET, "/api/v1/documents", &a, cred, sel)).await;
            assert_problem(
                &format!("A {cred:?} with {sel:?}"),
                &got,
                403,
                "tenant_mismatch",
            );
            let got = send(
                srv.as_tenant(Method::POST, "/api/v1/documents", &a, cred, sel)
                    .json(&json!({ "title": "must not be written" })),
            )
            .await;
            assert_problem(
                &format!("A {cred:?} POST with {sel:?}"),
                &got,
                403,
                "tenant_mismatch",
            );
        }
    }
    // Two credentials at once are refused as ambiguous (resolve.rs: "more than one
    // credential"), whether they agree or not: never served as either tenant.
    for (what, key) in [("B's", &b.api_key), ("A's own", &a.api_key)] {
        let got = send(
            srv.request(Method::GET, "/api/v1/whoami")
                .bearer_auth(&a.token)
                .header("x-api-key", key),
        )
        .await;
        assert_problem(
            &format!("A's JWT with {what} API key"),
            &got,
            401,
            "invalid_credentials",
        );
    }
    let docs: i64 = db
        .admin()
        .query_one("SELECT count(*) FROM documents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(docs, 0, "no rejected request wrote anything");
    srv.stop().await;
}

/// Forged, tampered, wrongly signed or wrongly addressed tokens and unknown API keys are 401
/// invalid_credentials, whatever the selector says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_invalid_credentials_are_401_invalid_credentials() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "forge-a", "pro", &[]).await;
    let b = tenant(&db, "forge-b", "pro", &[]).await;
    let srv = Server::start(settings(&db, None)).await;

    let mut claims = jwt_claims(&a.token);
    claims["tenant_id"] = json!(b.id.to_string());
    let swapped_tenant = jwt_with_claims(&a.token, &claims);
    let mut claims = jwt_claims(&a.token);
    claims["exp"] = json!(claims["exp"].as_u64().unwrap() + 365 * 24 * 3600);
    let extended = jwt_with_claims(&a.token, &claims);
    let none_header = b64url_encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!(
        "{none_header}.{}.",
        b64url_encode(
            serde_json::to_string(&jwt_claims(&b.token))
                .unwrap()
                .as_bytes()
        )
    );
    let other_secret = admin::sign_token(
        "another-secret-that-is-also-long-enough-0123",
        ISSUER,
        AUDIENCE,
        b.id,
        "mallory",
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let wrong_issuer = admin::sign_token(
        SECRET,
        "someone-else",
        AUDIENCE,
        b.id,
        "u",
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let wrong_audience = admin::sign_token(
        SECRET,
        ISSUER,
        "another-api",
        b.id,
        "u",
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let bearers = [
        ("tenant claim swapped, A's signature", swapped_tenant),
        ("expiry extended, original signature", extended),
        ("alg none", alg_none),
        ("signed with another secret", other_secret),
        ("wrong issuer", wrong_issuer),
        ("wrong audience", wrong_audience),
        (
            "signature stripped",
            a.token.rsplit_once('.').unwrap().0.to_owned() + ".",
        ),
        ("unknown API key", format!("tk_{}", "A".repeat(43))),
        ("API key of B with one character changed", {
            let mut k = b.api_key.clone();
            let last = k.pop().unwrap();
            k.push(if last == 'A' { 'B' } else { 'A' });
            k
        }),
        ("garbage", "not-a-credential".to_owned()),
    ];
    for (what, bearer) in &bearers {
        for sel in [
            Sel::None,
            Sel::Subdomain(b.slug.clone()),
            Sel::Header(b.id.to_string()),
        ] {
            let got = send(
                sel.apply(
                    srv.request(Method::GET, "/api/v1/documents")
                        .bearer_auth(bearer),
                ),
            )
            .await;
            let body = assert_problem(&format!("{what} {sel:?}"), &got, 401, "invalid_credentials");
            assert!(
                body.to_string().find(&b.slug).is_none(),
                "{what}: the body names no tenant"
            );
            let www = got
                .1
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(
                www.contains("invalid_token"),
                "{what}: WWW-Authenticate {www:?}"
            );
        }
    }
    let got = send(
        srv.request(Method::GET, "/api/v1/documents")
            .header("x-api-key", "tk_nope"),
    )
    .await;
    assert_problem("unknown X-API-Key", &got, 401, "invalid_credentials");
    let got = send(
        srv.request(Method::GET, "/api/v1/documents")
            .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
    )
    .await;
    assert!(matches!(got.0.as_u16(), 401), "Basic auth: {}", got.2);
    assert_problem_shape("Basic auth", &got);
    srv.stop().await;
}

/// Suspended, pending, deleted and unknown tenants get one uniform 403 tenant_unavailable,
/// with either credential kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_tenants_are_403_tenant_unavailable() {
    let db = tenantry_testkit::TestDb::new().await;
    let active = tenant(&db, "avail", "pro", &[]).await;
    let mut inactive = Vec::new();
    for status in [
        TenantStatus::Suspended,
        TenantStatus::Pending,
        TenantStatus::Deleted,
    ] {
        let t = tenant(&db, status.as_str(), "pro", &[]).await;
        admin::set_status(db.admin(), &t.slug, status)
            .await
            .unwrap();
        inactive.push((status.as_str().to_owned(), t));
    }
    let srv = Server::start(settings(&db, None)).await;

    let mut bodies = Vec::new();
    for (status, t) in &inactive {
        for cred in CREDS {
            for sel in [Sel::None, Sel::Subdomain(t.slug.clone())] {
                let got =
                    send(srv.as_tenant(Method::GET, "/api/v1/documents", t, cred, &sel)).await;
                let mut body = assert_problem(
                    &format!("{status} {cred:?} {sel:?}"),
                    &got,
                    403,
                    "tenant_unavailable",
                );
                body.as_object_mut().unwrap().remove("instance");
                bodies.push(body);
            }
        }
    }
    // A token for a tenant that does not exist at all.
    let ghost = token_for(TenantId::new_v4());
    let got = send(
        srv.request(Method::GET, "/api/v1/documents")
            .bearer_auth(&ghost),
    )
    .await;
    let mut body = assert_problem("unknown tenant id", &got, 403, "tenant_unavailable");
    body.as_object_mut().unwrap().remove("instance");
    bodies.push(body);
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one uniform answer: {bodies:?}"
    );

    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/whoami",
        &active,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.0, 200, "the active tenant is served");
    srv.stop().await;
}

/// An X-Tenant-ID that is neither an id nor a slug is 400 invalid_tenant_selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tenant_selector_is_400() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "malformed", "pro", &[]).await;
    let srv = Server::start(settings(&db, None)).await;
    for bad in ["Not A Slug!", "-leading-dash", "UPPER", &"x".repeat(300)] {
        for cred in CREDS {
            let got = send(srv.as_tenant(
                Method::GET,
                "/api/v1/documents",
                &a,
                cred,
                &Sel::Header(bad.to_owned()),
            ))
            .await;
            assert_problem(
                &format!("X-Tenant-ID {bad:?} {cred:?}"),
                &got,
                400,
                "invalid_tenant_selector",
            );
        }
    }
    let got = send(
        srv.request(Method::GET, "/api/v1/documents")
            .bearer_auth(&a.token)
            .header("x-tenant-id", a.slug.as_str())
            .header("x-tenant-id", "other"),
    )
    .await;
    assert_problem_shape("two X-Tenant-ID values", &got);
    srv.stop().await;
}

/// Past its quota a tenant gets 429 rate_limited with Retry-After and the RateLimit headers;
/// another tenant is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_is_429_with_rate_limit_headers() {
    let db = tenantry_testkit::TestDb::new().await;
    let limited = tenant(&db, "limited", "pro", &[]).await;
    let other = tenant(&db, "unlimited", "pro", &[]).await;
    set_quota(&db, limited.id, 5).await;
    let srv = Server::start(settings(&db, None)).await;

    for i in 0..5 {
        // Both credential kinds count against the same tenant.
        let cred = CREDS[i % 3];
        let got =
            send(srv.as_tenant(Method::GET, "/api/v1/whoami", &limited, cred, &Sel::None)).await;
        assert_eq!(got.0, 200, "request {i} within the quota");
        assert!(
            got.1.contains_key("ratelimit"),
            "RateLimit header on success"
        );
        assert!(
            got.1.contains_key("ratelimit-policy"),
            "RateLimit-Policy header on success"
        );
    }
    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/documents",
        &limited,
        Cred::ApiKeyHeader,
        &Sel::None,
    ))
    .await;
    let body = assert_problem("6th request", &got, 429, "rate_limited");
    let retry: u64 = got.1["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let policy = got.1["ratelimit-policy"].to_str().unwrap();
    assert!(policy.contains("q=5"), "RateLimit-Policy {policy:?}");
    let rl = got.1["ratelimit"].to_str().unwrap();
    assert!(rl.contains("r=0"), "RateLimit {rl:?}");
    assert!(body["detail"].is_string() || body["title"].is_string());

    let got =
        send(srv.as_tenant(Method::GET, "/api/v1/whoami", &other, Cred::Jwt, &Sel::None)).await;
    assert_eq!(got.0, 200, "another tenant keeps its own quota");
    srv.stop().await;
}

/// A route behind a feature the tenant's plan lacks is 403 feature_not_available naming the
/// feature and the plan; a grant or a bigger plan opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_feature_is_403_feature_not_available() {
    let db = tenantry_testkit::TestDb::new().await;
    let free = tenant(&db, "free", "free", &[]).await;
    let pro = tenant(&db, "pro", "pro", &[]).await;
    let granted = tenant(&db, "granted", "free", &["custom_webhooks"]).await;
    let srv = Server::start(settings(&db, None)).await;

    let cases: [(&ApiTenant, &str, Method, u16, &str); 9] = [
        (&free, "/api/v1/analytics", Method::GET, 403, "analytics"),
        (
            &free,
            "/api/v1/webhooks",
            Method::GET,
            403,
            "custom_webhooks",
        ),
        (
            &free,
            "/api/v1/webhooks",
            Method::POST,
            403,
            "custom_webhooks",
        ),
        (&pro, "/api/v1/analytics", Method::GET, 200, ""),
        (
            &pro,
            "/api/v1/webhooks",
            Method::GET,
            403,
            "custom_webhooks",
        ),
        (
            &pro,
            "/api/v1/webhooks",
            Method::POST,
            403,
            "custom_webhooks",
        ),
        (&granted, "/api/v1/analytics", Method::GET, 403, "analytics"),
        (&granted, "/api/v1/webhooks", Method::GET, 200, ""),
        (&granted, "/api/v1/webhooks", Method::POST, 201, ""),
    ];
    for (t, path, method, status, feature) in cases {
        for cred in CREDS {
            let mut rb = srv.as_tenant(
                method.clone(),
                path,
                t,
                cred,
                &Sel::Subdomain(t.slug.clone()),
            );
            if method == Method::POST {
                let url = format!("https://hooks.example.com/{cred:?}");
                rb = rb.json(&json!({ "url": url }));
            }
            let got = send(rb).await;
            let what = format!("{} {method} {path} {cred:?}", t.slug);
            if status == 403 {
                let body = assert_problem(&what, &got, 403, "feature_not_available");
                assert_eq!(body["feature"], feature, "{what}");
                let plan = if t.slug.starts_with("pro") {
                    "pro"
                } else {
                    "free"
                };
                assert_eq!(body["plan"], plan, "{what}");
            } else {
                assert_eq!(got.0.as_u16(), status, "{what}: {}", got.2);
            }
        }
    }
    let hooks: Vec<(uuid::Uuid,)> = db
        .admin()
        .query("SELECT tenant_id FROM webhooks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0),))
        .collect();
    assert_eq!(hooks.len(), 3);
    assert!(
        hooks.iter().all(|(t,)| t == granted.id.as_uuid()),
        "only the granted tenant wrote"
    );
    srv.stop().await;
}

/// Host headers are read as documented (port stripped, case folded, one trailing dot), other
/// hosts select nothing, and an untrusted `X-Forwarded-Host` is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_variants_select_the_named_tenant_or_nothing() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "host-a", "pro", &[]).await;
    let b = tenant(&db, "host-b", "pro", &[]).await;
    let srv = Server::start(settings(&db, None)).await;
    let selects_b = [
        format!("{}.{BASE_DOMAIN}", b.slug),
        format!("{}.{BASE_DOMAIN}:8443", b.slug),
        format!("{}.{}.", b.slug.to_uppercase(), BASE_DOMAIN.to_uppercase()),
    ];
    let selects_nothing = [
        BASE_DOMAIN.to_owned(),
        format!("www.{BASE_DOMAIN}"),
        format!("x.{}.{BASE_DOMAIN}", b.slug),
        format!("{}.{BASE_DOMAIN}.evil.test", b.slug),
        format!("{}.other.test", b.slug),
        "127.0.0.1".to_owned(),
    ];
    for cred in CREDS {
        for host in &selects_b {
            let got = send(
                a.credential(srv.request(Method::GET, "/api/v1/whoami"), cred)
                    .header("host", host),
            )
            .await;
            assert_problem(
                &format!("A {cred:?} on {host}"),
                &got,
                403,
                "tenant_mismatch",
            );
            let got = send(
                b.credential(srv.request(Method::GET, "/api/v1/whoami"), cred)
                    .header("host", host),
            )
            .await;
            assert_eq!(got.0, 200, "B {cred:?} on {host}: {}", got.2);
            assert_eq!(got.2["tenant"]["slug"], b.slug);
        }
        for host in &selects_nothing {
            let got = send(
                a.credential(srv.request(Method::GET, "/api/v1/whoami"), cred)
                    .header("host", host),
            )
            .await;
            assert_eq!(got.0, 200, "A {cred:?} on {host} (no selector): {}", got.2);
            assert_eq!(got.2["tenant"]["slug"], a.slug, "{host}");
        }
        let got = send(
            a.credential(srv.request(Method::GET, "/api/v1/whoami"), cred)
                .header("x-forwarded-host", format!("{}.{BASE_DOMAIN}", b.slug)),
        )
        .await;
        assert_eq!(got.0, 200, "X-Forwarded-Host is not trusted: {}", got.2);
        assert_eq!(got.2["tenant"]["slug"], a.slug);
    }
    srv.stop().await;
}

/// Malformed credential headers are 401 invalid_credentials, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_credential_headers_are_401() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "cred-hdr", "pro", &[]).await;
    let srv = Server::start(settings(&db, None)).await;
    let non_ascii = reqwest::header::HeaderValue::from_bytes(b"Bearer \xe9\xff").unwrap();
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "empty bearer",
            srv.request(Method::GET, "/api/v1/whoami")
                .header("authorization", "Bearer "),
        ),
        (
            "non-ASCII bearer",
            srv.request(Method::GET, "/api/v1/whoami")
                .header("authorization", non_ascii),
        ),
        (
            "two Authorization headers",
            srv.request(Method::GET, "/api/v1/whoami")
                .header("authorization", format!("Bearer {}", a.token))
                .header("authorization", format!("Bearer {}", a.token)),
        ),
        (
            "two X-API-Key headers",
            srv.request(Method::GET, "/api/v1/whoami")
                .header("x-api-key", &a.api_key)
                .header("x-api-key", &a.api_key),
        ),
        (
            "empty X-API-Key",
            srv.request(Method::GET, "/api/v1/whoami")
                .header("x-api-key", ""),
        ),
        (
            "huge bearer",
            srv.request(Method::GET, "/api/v1/whoami")
                .bearer_auth("a.b.".to_owned() + &"c".repeat(16 * 1024)),
        ),
    ];
    for (what, rb) in cases {
        let got = send(rb).await;
        assert_problem(what, &got, 401, "invalid_credentials");
    }
    srv.stop().await;
}

/// Rejected requests never spend a tenant's quota: forged tokens naming the tenant and
/// mismatched selectors are refused before the rate limiter, so an attacker without the
/// tenant's credentials cannot exhaust it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_do_not_spend_the_tenant_quota() {
    let db = tenantry_testkit::TestDb::new().await;
    let victim = tenant(&db, "victim", "pro", &[]).await;
    let attacker = tenant(&db, "attacker", "pro", &[]).await;
    set_quota(&db, victim.id, 3).await;
    let srv = Server::start(settings(&db, None)).await;
    let mut claims = jwt_claims(&attacker.token);
    claims["tenant_id"] = json!(victim.id.to_string());
    let forged = jwt_with_claims(&attacker.token, &claims);
    for _ in 0..5 {
        let got = send(
            srv.request(Method::GET, "/api/v1/whoami")
                .bearer_auth(&forged),
        )
        .await;
        assert_problem("forged", &got, 401, "invalid_credentials");
        let got = send(srv.as_tenant(
            Method::GET,
            "/api/v1/whoami",
            &attacker,
            Cred::Jwt,
            &Sel::Subdomain(victim.slug.clone()),
        ))
        .await;
        assert_problem("mismatch", &got, 403, "tenant_mismatch");
        let got = send(
            Sel::Header(victim.slug.clone()).apply(srv.request(Method::GET, "/api/v1/whoami")),
        )
        .await;
        assert_problem("selector only", &got, 401, "tenant_required");
    }
    for i in 0..3 {
        let got = send(srv.as_tenant(
            Method::GET,
            "/api/v1/whoami",
            &victim,
            Cred::Jwt,
            &Sel::None,
        ))
        .await;
        assert_eq!(got.0, 200, "victim request {i}: {}", got.2);
    }
    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/whoami",
        &victim,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_problem("victim's 4th", &got, 429, "rate_limited");
    srv.stop().await;
}

/// A selector naming a tenant that does not exist, with a valid credential, is answered like
/// one naming another existing tenant (403 tenant_mismatch): an authenticated caller cannot
/// tell which slugs exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_for_unknown_tenant_is_indistinguishable_from_another_tenant() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "prober", "pro", &[]).await;
    let b = tenant(&db, "existing", "pro", &[]).await;
    let srv = Server::start(settings(&db, None)).await;
    let unknown_slug = slug("no-such-tenant");
    let unknown_id = TenantId::new_v4().to_string();
    for cred in CREDS {
        let mut bodies = Vec::new();
        for sel in [
            Sel::Subdomain(b.slug.clone()),
            Sel::Subdomain(unknown_slug.clone()),
            Sel::Header(b.slug.clone()),
            Sel::Header(unknown_slug.clone()),
            Sel::Header(b.id.to_string()),
            Sel::Header(unknown_id.clone()),
        ] {
            let got = send(srv.as_tenant(Method::GET, "/api/v1/whoami", &a, cred, &sel)).await;
            let mut body =
                assert_problem(&format!("{cred:?} {sel:?}"), &got, 403, "tenant_mismatch");
            body.as_object_mut().unwrap().remove("instance");
            bodies.push(body);
        }
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "{cred:?}: {bodies:?}"
        );
    }
    srv.stop().await;
}
