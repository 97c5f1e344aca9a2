//! The Redis backend on a real Redis: agreement with the Rust core, exactness across
//! instances, isolation, plan changes, expiry of every key, the negative cache, NOSCRIPT.

mod common;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use common::*;
use fred::prelude::*;
use proptest::prelude::*;
use tenantry_core::{Plan, TenantId};
use tenantry_rate_limit::{
    DecisionSource, Limiter, LocalLimiter, Quota, RateKey, RateLimitLayer, RedisLimiter,
};
use tenantry_testkit::{OwnedRedis, TestRedis};
use tower::ServiceExt;

async fn limiter(redis: &TestRedis) -> RedisLimiter {
    RedisLimiter::builder(redis.url())
        .key_prefix(redis.key("rl:"))
        // Generous: a debug build on a loaded 2-core machine; failures are asserted to be 0.
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
}

#[derive(Debug, Clone)]
struct Step {
    dt_us: u64,
    cost: u32,
    quota: (u32, u32),
}

fn step() -> impl Strategy<Value = Step> {
    let quota = prop_oneof![
        Just((100u32, 100u32)),
        Just((60, 1)),
        Just((7, 3)),
        (1u32..100_000, 1u32..200),
    ];
    (0u64..3_000_000, 1u32..6, quota).prop_map(|(dt_us, cost, quota)| Step { dt_us, cost, quota })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..40)
}

/// Runs of identical decisions (what a busy key's batch is made of), flattened.
fn runs() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((1usize..40, step()), 1..5).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(n, s)| std::iter::repeat_n(s, n))
            .collect()
    })
}

/// A runtime to block on from a (synchronous) proptest body, with a limiter on its own
/// namespace of the test Redis.
fn blocking_limiter() -> (tokio::runtime::Runtime, TestRedis, RedisLimiter) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (redis, limiter) = rt.block_on(async {
        let redis = TestRedis::new().await;
        let limiter = limiter(&redis).await;
        (redis, limiter)
    });
    (rt, redis, limiter)
}

#[test]
fn rust_core_and_lua_script_take_the_same_decisions() {
    let (rt, redis, limiter) = blocking_limiter();
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(steps in steps(), start in 0u64..1_000_000)| {
        let local = LocalLimiter::new();
        let key = RateKey::new(TenantId::new_v4(), "api".into());
        // Epoch-sized timestamps, as Redis TIME gives: exercises Lua's doubles.
        let mut now = 1_700_000_000_000_000u64 + start;
        for step in &steps {
            now += step.dt_us;
            let quota = Quota::per_minute(step.quota.0, step.quota.1).unwrap();
            let cost = NonZeroU32::new(step.cost).unwrap();
            let ours = local.decide_at(&key, quota, cost, now).unwrap().verdict();
            let theirs = rt.block_on(limiter.verdict_at(&key, quota, cost, now)).unwrap();
            prop_assert_eq!(ours, theirs, "step {:?} at {}", step, now);
        }
    });
    rt.block_on(async {
        assert_every_key_expires(redis.client(), redis.prefix()).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_admit_exactly_the_burst_of_600_concurrent_requests() {
    let redis = TestRedis::new().await;
    let (one, two) = (limiter(&redis).await, limiter(&redis).await);
    let a = service(RateLimitLayer::new(one.clone()));
    let b = service(RateLimitLayer::new(two.clone()));
    // 100 per minute, burst 100: a new unit every 600 ms. The requests below take well under
    // that, so exactly the burst passes.
    let t = tenant(100, 100);
    let start = Instant::now();
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            let t = t.clone();
            tokio::spawn(async move { svc.oneshot(request(&t)).await.unwrap().status() })
        })
        .collect();
    let mut allowed = 0;
    let mut denied = 0;
    for task in tasks {
        match task.await.unwrap().as_u16() {
            200 => allowed += 1,
            429 => denied += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(one.stats().redis_failures + two.stats().redis_failures, 0);
    eprintln!("600 requests through two instances took {elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "took {elapsed:?}");
    assert_eq!((allowed, denied), (100, 500));
    assert!(assert_every_key_expires(redis.client(), redis.prefix()).await > 0);
}

#[tokio::test]
async fn tenant_a_exhausted_does_not_affect_tenant_b_across_instances() {
    let redis = TestRedis::new().await;
    let one = service(RateLimitLayer::new(limiter(&redis).await));
    let two = service(RateLimitLayer::new(limiter(&redis).await));
    let a = tenant(60, 2);
    let b = tenant(60, 2);
    assert_eq!(send(&one, &a).await.status(), 200);
    assert_eq!(send(&two, &a).await.status(), 200);
    assert_eq!(send(&one, &a).await.status(), 429);
    assert_eq!(send(&two, &a).await.status(), 429);
    assert_eq!(send(&two, &b).await.status(), 200);
    assert_eq!(send(&one, &b).await.status(), 200);
    assert_eq!(send(&one, &b).await.status(), 429);
    assert_eq!(
        assert_every_key_expires(redis.client(), redis.prefix()).await,
        2
    );
}

#[tokio::test]
async fn plan_change_applies_on_the_next_request_in_redis() {
    let redis = TestRedis::new().await;
    let svc = service(RateLimitLayer::new(limiter(&redis).await));
    let id = TenantId::new_v4();
    let free = tenant_with(id, Plan::free(), 60, 2);
    assert_eq!(send(&svc, &free).await.status(), 200);
    assert_eq!(send(&svc, &free).await.status(), 200);
    assert_eq!(send(&svc, &free).await.status(), 429);
    let pro = tenant_with(id, Plan::pro(), 6_000, 1_000);
    let res = send(&svc, &pro).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit-policy"], r#""pro";q=6000;w=60"#);
    assert_eq!(
        assert_every_key_expires(redis.client(), redis.prefix()).await,
        1
    );
}

#[tokio::test]
async fn key_expiry_tracks_the_replenish_time() {
    let redis = TestRedis::new().await;
    let limiter = limiter(&redis).await;
    let key = RateKey::new(TenantId::new_v4(), "api".into());
    let quota = Quota::per_minute(60, 10).unwrap();
    for _ in 0..3 {
        assert!(limiter
            .check(&key, quota, one())
            .await
            .unwrap()
            .is_allowed());
    }
    let redis_key = limiter.redis_key(&key);
    // `<prefix>{<tenant>}:<policy>`: the tenant is the hash tag.
    assert_eq!(
        redis_key,
        format!("{}{{{}}}:api", redis.key("rl:"), key.tenant())
    );
    let pttl: i64 = redis.client().pttl(&redis_key).await.unwrap();
    // Three units at 1 s each: the key lives about 3 s, then it carries no information.
    assert!((2_000..=3_000).contains(&pttl), "PTTL {pttl}");
}

#[tokio::test]
async fn known_denials_are_answered_locally_until_their_retry_time() {
    let redis = TestRedis::new().await;
    let limiter = limiter(&redis).await;
    let svc = service(RateLimitLayer::new(limiter.clone()));
    let t = tenant(60, 1);
    assert_eq!(send(&svc, &t).await.status(), 200);
    assert_eq!(send(&svc, &t).await.status(), 429);
    let before = limiter.stats();
    for _ in 0..20 {
        let res = send(&svc, &t).await;
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "1");
    }
    let after = limiter.stats();
    assert_eq!(
        after.redis_decisions, before.redis_decisions,
        "Redis was asked again"
    );
    assert_eq!(after.negative_cache_hits - before.negative_cache_hits, 20);
    // After the retry time Redis is asked again, and allows.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(send(&svc, &t).await.status(), 200);
    assert_eq!(limiter.stats().redis_decisions, after.redis_decisions + 1);
}

#[tokio::test]
async fn a_flushed_script_is_reloaded_and_the_decision_counted_once() {
    let server = OwnedRedis::start();
    let limiter = RedisLimiter::builder(server.url())
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let client = limiter.client().clone();
    let _: () = client
        .custom(
            CustomCommand::new_static("SCRIPT", ClusterHash::FirstKey, false),
            vec!["FLUSH"],
        )
        .await
        .unwrap();
    let key = RateKey::new(TenantId::new_v4(), "api".into());
    let quota = Quota::per_minute(60, 2).unwrap();
    let d = limiter.check(&key, quota, one()).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.source(), DecisionSource::Primary);
    // Counted once: one unit left.
    assert_eq!(d.remaining(), 1);
}

#[test]
fn one_call_with_many_decisions_equals_the_rust_core_deciding_them_in_order() {
    let (rt, redis, limiter) = blocking_limiter();
    let config = ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    };
    // Batches at successive instants; inside a batch the quota may change (a plan change
    // racing a busy tenant), so one call carries several quotas and costs.
    let batches = prop::collection::vec((0u64..3_000_000, prop_oneof![steps(), runs()]), 1..6);
    proptest!(config, |(batches in batches, start in 0u64..1_000_000)| {
        let local = LocalLimiter::new();
        let key = RateKey::new(TenantId::new_v4(), "api".into());
        let mut now = 1_700_000_000_000_000u64 + start;
        for (dt_us, steps) in &batches {
            now += dt_us;
            let decisions: Vec<(Quota, NonZeroU32)> = steps
                .iter()
                .map(|s| {
                    (
                        Quota::per_minute(s.quota.0, s.quota.1).unwrap(),
                        NonZeroU32::new(s.cost).unwrap(),
                    )
                })
                .collect();
            let ours: Vec<_> = decisions
                .iter()
                .map(|&(quota, cost)| local.decide_at(&key, quota, cost, now).unwrap().verdict())
                .collect();
            let theirs = rt.block_on(limiter.verdicts_at(&key, &decisions, now)).unwrap();
            prop_assert_eq!(ours, theirs, "batch at {}", now);
        }
    });
    rt.block_on(async {
        assert_every_key_expires(redis.client(), redis.prefix()).await;
    });
}

/// `n` decisions for one key, all in before any call is answered: on a current-thread runtime
/// `join_all` polls every future once before any reply can be read.
async fn decide_together(limiter: &RedisLimiter, key: &RateKey, quota: Quota, n: usize) -> usize {
    let checks = (0..n).map(|_| limiter.check(key, quota, one()));
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .filter(|d| d.as_ref().unwrap().is_allowed())
        .count()
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_decisions_for_one_key_share_calls_and_stay_exact() {
    let redis = TestRedis::new().await;
    let coalescing = limiter(&redis).await;
    let key = RateKey::new(TenantId::new_v4(), "api".into());
    let quota = Quota::per_minute(100, 100).unwrap();
    let allowed = decide_together(&coalescing, &key, quota, 300).await;
    let stats = coalescing.stats();
    assert_eq!(allowed, 100, "exactly the burst");
    assert_eq!(stats.redis_decisions, 300);
    // The first finds the key idle and goes alone; the 299 queued behind it go at most 128
    // a call.
    assert_eq!(stats.redis_calls, 4, "{stats:?}");
    assert_eq!(stats.redis_failures, 0);

    // The same with coalescing off: one call per decision, the same count.
    let single = RedisLimiter::builder(redis.url())
        .key_prefix(redis.key("rl:"))
        .timeout(Duration::from_secs(2))
        .coalesce(false)
        .build()
        .await
        .unwrap();
    let other = RateKey::new(TenantId::new_v4(), "api".into());
    let allowed = decide_together(&single, &other, quota, 300).await;
    assert_eq!(allowed, 100);
    assert_eq!(single.stats().redis_calls, 300);
    assert!(assert_every_key_expires(redis.client(), redis.prefix()).await >= 2);
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_request_that_started_a_call_strands_no_other_decision() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};

    let redis = TestRedis::new().await;
    let limiter = limiter(&redis).await;
    let key = RateKey::new(TenantId::new_v4(), "api".into());
    let quota = Quota::per_minute(100, 10).unwrap();
    let mut checks: Vec<_> = (0..20).map(|_| limiter.check(&key, quota, one())).collect();
    // Poll each once: the first sends its own call, the others queue behind it.
    let mut cx = Context::from_waker(Waker::noop());
    for check in &mut checks {
        assert!(Pin::new(check).poll(&mut cx).is_pending());
    }
    // The first request goes away (its client disconnected); and one from the middle.
    drop(checks.remove(10));
    drop(checks.remove(0));
    let verdicts = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(checks),
    )
    .await
    .expect("every remaining decision is answered");
    let allowed: Vec<bool> = verdicts
        .iter()
        .map(|d| d.as_ref().unwrap().is_allowed())
        .collect();
    // The dropped decisions were still sent (a request, once checked, counts): the burst of
    // 10 went to the first 10 in arrival order (the first of which is gone), so of those
    // left, requests 1 to 9 pass and 11 to 19 do not.
    let mut expected = vec![true; 9];
    expected.extend([false; 9]);
    assert_eq!(allowed, expected);
    let stats = limiter.stats();
    assert_eq!(stats.redis_decisions, 18, "{stats:?}");
    // Poll::Pending above proves the 20 were in before any answer: the first request's own
    // call, then one for the 19 queued behind it.
    assert_eq!(stats.redis_calls, 2, "{stats:?}");

    // A request dropped mid-call with nobody behind it frees its key: the next decision for
    // the key is sent at once (a stranded key would leave it queued until its timeout and
    // then to the fail policy).
    let other = RateKey::new(TenantId::new_v4(), "api".into());
    let mut lone = limiter.check(&other, quota, one());
    assert!(Pin::new(&mut lone).poll(&mut cx).is_pending());
    drop(lone);
    let d = tokio::time::timeout(Duration::from_secs(1), limiter.check(&other, quota, one()))
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(d.source(), DecisionSource::Primary);
    assert_eq!(limiter.stats().redis_calls, 4);
}
