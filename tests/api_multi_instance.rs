//! Two server instances sharing PostgreSQL and Redis: the rate limit holds across both, and a
//! tenant suspended through one is refused by the other.

mod api_common;

use std::time::{Duration, Instant};

use api_common::*;
use documents_api::{admin, server};
use reqwest::Method;
use tenantry_core::TenantStatus;

/// A quota of N split across two instances: exactly N requests succeed in total, the rest are
/// 429 on whichever instance they reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_across_two_instances() {
    const QUOTA: u32 = 6;
    let db = tenantry_testkit::TestDb::new().await;
    let redis = tenantry_testkit::TestRedis::new().await;
    let t = tenant(&db, "shared-quota", "pro", &[]).await;
    let neighbour = tenant(&db, "neighbour", "pro", &[]).await;
    set_quota(&db, t.id, QUOTA).await;
    let one = Server::start(settings(&db, Some(&redis))).await;
    let two = Server::start(settings(&db, Some(&redis))).await;

    let mut ok = [0u32; 2];
    let mut limited = [0u32; 2];
    for i in 0..(2 * QUOTA as usize) {
        let (srv, n) = if i % 2 == 0 { (&one, 0) } else { (&two, 1) };
        let got =
            send(srv.as_tenant(Method::GET, "/api/v1/whoami", &t, CREDS[i % 3], &Sel::None)).await;
        match got.0.as_u16() {
            200 => ok[n] += 1,
            429 => {
                assert_problem(&format!("request {i}"), &got, 429, "rate_limited");
                assert!(got.1.contains_key("retry-after"));
                limited[n] += 1;
            }
            s => panic!("request {i}: unexpected {s}: {}", got.2),
        }
    }
    assert_eq!(
        ok[0] + ok[1],
        QUOTA,
        "exactly the quota succeeds across both: {ok:?}"
    );
    assert!(ok[0] > 0 && ok[1] > 0, "both instances served: {ok:?}");
    assert!(
        limited[0] > 0 && limited[1] > 0,
        "both instances refused: {limited:?}"
    );
    let got = send(two.as_tenant(
        Method::GET,
        "/api/v1/whoami",
        &neighbour,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.0, 200, "another tenant is not limited");
    one.stop().await;
    two.stop().await;
}

/// `tenant suspend` through one instance (the admin function and the invalidation it
/// announces) is honoured by another instance that has the tenant cached, within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_announced_on_one_instance_is_honoured_by_the_other() {
    let db = tenantry_testkit::TestDb::new().await;
    let redis = tenantry_testkit::TestRedis::new().await;
    let t = tenant(&db, "to-suspend", "pro", &[]).await;
    let bystander = tenant(&db, "bystander", "pro", &[]).await;
    let cfg = settings(&db, Some(&redis));
    let one = Server::start(cfg.clone()).await;
    let two = Server::start(cfg.clone()).await;

    // Both instances serve the tenant, so both have it cached (positive cache TTL: 30 s).
    for srv in [&one, &two] {
        for cred in [Cred::Jwt, Cred::ApiKeyHeader] {
            let got =
                send(srv.as_tenant(Method::GET, "/api/v1/documents", &t, cred, &Sel::None)).await;
            assert_eq!(got.0, 200, "{}", got.2);
        }
    }

    // `documents-api tenant suspend`, as run against instance one's configuration.
    admin::set_status(db.admin(), &t.slug, TenantStatus::Suspended)
        .await
        .unwrap();
    server::announce_invalidation(&cfg, t.id).await.unwrap();
    let announced = Instant::now();

    let mut delay = None;
    while announced.elapsed() < Duration::from_secs(2) {
        let got =
            send(two.as_tenant(Method::GET, "/api/v1/documents", &t, Cred::Jwt, &Sel::None)).await;
        if got.0 == 403 {
            assert_problem("suspended on two", &got, 403, "tenant_unavailable");
            delay = Some(announced.elapsed());
            break;
        }
        assert_eq!(got.0, 200, "{}", got.2);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delay =
        delay.expect("instance two still serves the suspended tenant 2 s after the announcement");
    eprintln!("suspend propagation delay to the other instance: {delay:?}");
    for (name, srv) in [("one", &one), ("two", &two)] {
        for cred in CREDS {
            let got =
                send(srv.as_tenant(Method::GET, "/api/v1/whoami", &t, cred, &Sel::None)).await;
            assert_problem(
                &format!("suspended on {name} with {cred:?}"),
                &got,
                403,
                "tenant_unavailable",
            );
        }
        let got = send(srv.as_tenant(
            Method::GET,
            "/api/v1/whoami",
            &bystander,
            Cred::Jwt,
            &Sel::None,
        ))
        .await;
        assert_eq!(got.0, 200, "the bystander is still served by {name}");
    }

    // Reactivation propagates the same way.
    admin::set_status(db.admin(), &t.slug, TenantStatus::Active)
        .await
        .unwrap();
    server::announce_invalidation(&cfg, t.id).await.unwrap();
    let announced = Instant::now();
    loop {
        let got =
            send(one.as_tenant(Method::GET, "/api/v1/whoami", &t, Cred::Jwt, &Sel::None)).await;
        if got.0 == 200 {
            break;
        }
        assert!(
            announced.elapsed() < Duration::from_secs(2),
            "reactivation not seen in 2 s: {}",
            got.2
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    one.stop().await;
    two.stop().await;
}

/// The same under concurrency: 3 × the quota sent at once, alternating between two
/// instances, lets exactly the quota through; afterwards both instances refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_exact_under_concurrent_requests_across_instances() {
    const QUOTA: u32 = 8;
    let db = tenantry_testkit::TestDb::new().await;
    let redis = tenantry_testkit::TestRedis::new().await;
    let t = tenant(&db, "concurrent-quota", "pro", &[]).await;
    set_quota(&db, t.id, QUOTA).await;
    let one = Server::start(settings(&db, Some(&redis))).await;
    let two = Server::start(settings(&db, Some(&redis))).await;
    // Cold caches on purpose: the first lookups race too.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..(3 * QUOTA as usize) {
        let srv = if i % 2 == 0 { &one } else { &two };
        let rb = srv.as_tenant(Method::GET, "/api/v1/whoami", &t, CREDS[i % 3], &Sel::None);
        set.spawn(async move { send(rb).await });
    }
    let (mut ok, mut limited) = (0, 0);
    while let Some(res) = set.join_next().await {
        let got = res.expect("request task");
        match got.0.as_u16() {
            200 => ok += 1,
            429 => {
                assert_problem("concurrent", &got, 429, "rate_limited");
                limited += 1;
            }
            s => panic!("unexpected {s}: {}", got.2),
        }
    }
    assert_eq!(
        (ok, limited),
        (QUOTA, 2 * QUOTA),
        "exactly the quota succeeds"
    );
    for srv in [&one, &two] {
        let got =
            send(srv.as_tenant(Method::GET, "/api/v1/whoami", &t, Cred::Jwt, &Sel::None)).await;
        assert_problem("after the quota", &got, 429, "rate_limited");
    }
    one.stop().await;
    two.stop().await;
}

/// A plan change announced through one instance reaches the other: a feature the old plan
/// lacked (403 feature_not_available) is served once the upgrade is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_upgrade_announced_on_one_instance_opens_the_feature_on_the_other() {
    let db = tenantry_testkit::TestDb::new().await;
    let redis = tenantry_testkit::TestRedis::new().await;
    let t = tenant(&db, "upgrader", "free", &[]).await;
    let cfg = settings(&db, Some(&redis));
    let one = Server::start(cfg.clone()).await;
    let two = Server::start(cfg.clone()).await;
    for srv in [&one, &two] {
        let got = send(srv.as_tenant(
            Method::GET,
            "/api/v1/analytics",
            &t,
            Cred::ApiKeyBearer,
            &Sel::None,
        ))
        .await;
        let body = assert_problem("free plan", &got, 403, "feature_not_available");
        assert_eq!(body["plan"], "free");
    }
    admin::set_plan(db.admin(), &t.slug, "pro").await.unwrap();
    server::announce_invalidation(&cfg, t.id).await.unwrap();
    let announced = Instant::now();
    loop {
        let got = send(two.as_tenant(
            Method::GET,
            "/api/v1/analytics",
            &t,
            Cred::ApiKeyBearer,
            &Sel::None,
        ))
        .await;
        if got.0 == 200 {
            break;
        }
        assert_problem(
            "before the upgrade is seen",
            &got,
            403,
            "feature_not_available",
        );
        assert!(
            announced.elapsed() < Duration::from_secs(2),
            "upgrade not seen in 2 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("plan change propagation delay: {:?}", announced.elapsed());
    let got = send(one.as_tenant(Method::GET, "/api/v1/whoami", &t, Cred::Jwt, &Sel::None)).await;
    assert_eq!(got.2["tenant"]["plan"], "pro");
    one.stop().await;
    two.stop().await;
}

/// Redis going away is never a 500: requests are served or refused with 503 problem+json
/// (within the client's timeout), /readyz says 503, and service resumes when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_served_or_503_never_500() {
    let db = tenantry_testkit::TestDb::new().await;
    let mut owned = tenantry_testkit::OwnedRedis::start();
    let cached = tenant(&db, "cached", "pro", &[]).await;
    let cold = tenant(&db, "cold", "pro", &[]).await;
    let mut cfg = settings(&db, None);
    cfg.redis_url = Some(owned.url());
    let srv = Server::start(cfg).await;
    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/documents",
        &cached,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.0, 200);
    let got = send(srv.request(Method::GET, "/readyz")).await;
    assert_eq!(got.0, 200, "{}", got.2);

    owned.stop();
    let mut statuses = Vec::new();
    for (t, cred) in [
        (&cached, Cred::Jwt),
        (&cold, Cred::Jwt),
        (&cached, Cred::ApiKeyHeader),
        (&cold, Cred::ApiKeyBearer),
    ] {
        let started = Instant::now();
        let got = send(srv.as_tenant(Method::GET, "/api/v1/documents", t, cred, &Sel::None)).await;
        match got.0.as_u16() {
            200 => {}
            503 => {
                assert_problem_shape_any(&format!("{} {cred:?} during the outage", t.slug), &got);
            }
            s => panic!("{} {cred:?} during the outage: {s} {}", t.slug, got.2),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered promptly"
        );
        statuses.push(got.0.as_u16());
    }
    eprintln!("statuses during the Redis outage: {statuses:?}");
    let got = send(srv.request(Method::GET, "/readyz")).await;
    assert_eq!(got.0, 503, "readyz during the outage: {}", got.2);
    assert_eq!(got.2["code"], "service_unavailable");

    owned.restart();
    let back = Instant::now();
    loop {
        let ready = send(srv.request(Method::GET, "/readyz")).await;
        let got = send(srv.as_tenant(
            Method::GET,
            "/api/v1/documents",
            &cold,
            Cred::Jwt,
            &Sel::None,
        ))
        .await;
        if ready.0 == 200 && got.0 == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not recovered 10 s after Redis came back: {} {}",
            ready.2,
            got.2
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovery after Redis restart: {:?}", back.elapsed());
    srv.stop().await;
}
