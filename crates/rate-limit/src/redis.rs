//! The Redis backend: limits shared by every instance.
//!
//! Decisions are taken by one `EVALSHA` of a small Lua script ([`SCRIPT`](RedisLimiter::SCRIPT)):
//! read the key's TAT, apply GCRA, write the new TAT with its expiry, all atomically, with the
//! clock taken from Redis `TIME` so instances with skewed clocks agree. The quota travels with
//! every call, so a plan change applies on the next request. Keys look like
//! `<prefix>{<tenant id>}:<policy>`: the hash tag keeps all of a tenant's keys in one Redis
//! Cluster slot.
//!
//! A decision never costs more than one call, and concurrent decisions for one key share
//! calls (on by default, see [`RedisLimiterBuilder::coalesce`]): while a call for a key is in
//! flight, further decisions for that key queue, and the next call decides all of them, in
//! arrival order, with the arithmetic of as many single calls at one instant. The counts stay
//! exact; a busy tenant costs Redis one script run per round trip instead of one per request.
//!
//! Failures are bounded: every call has a timeout and is sent at most once (fred's defaults
//! are no timeout and three attempts, and a retried script can count a request twice); after
//! consecutive failures a circuit breaker stops calling Redis for a cool-down; and a
//! [`FailPolicy`] says what to answer meanwhile. Once Redis has said "denied until t", the
//! key is answered locally until t (the negative cache), which spares Redis the flood a
//! limited client sends.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, Client, ClientLike, Config, ReconnectPolicy};
use fred::types::{ClusterHash, CustomCommand, Value};
use fred::util::redis_keyslot;

use crate::error::{ConfigError, ConfigErrorKind, LimiterError, LimiterErrorKind};
use crate::gcra::{Quota, Verdict};
use crate::key::{Decision, DecisionSource, Limiter, RateKey};
use crate::local::LocalLimiter;

const NEGATIVE_CACHE_CAP: usize = 100_000;
/// Most decisions one coalesced call carries; more wait for the next call.
const MAX_BATCH: usize = 128;

/// What to answer when Redis cannot decide (error, timeout, open circuit).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum FailPolicy {
    /// Allow the request, unlimited, without rate-limit headers.
    Open,
    /// Refuse the request: 503 `service_unavailable`.
    Closed,
    /// Decide with an in-process limiter at `share` (0 < share <= 1) of the tenant's quota.
    /// With N instances a tenant gets at most about N × share of its quota during an outage.
    Local {
        /// The share of the quota each instance grants on its own.
        share: f64,
    },
}

impl Default for FailPolicy {
    /// `Local { share: 0.5 }`.
    fn default() -> Self {
        Self::Local { share: 0.5 }
    }
}

/// Counters of a [`RedisLimiter`], for tests and health pages (also exported through the
/// `metrics` facade).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Decisions Redis took.
    pub redis_decisions: u64,
    /// Calls sent to Redis (fewer than decisions when concurrent decisions share calls).
    pub redis_calls: u64,
    /// Redis calls that failed or timed out.
    pub redis_failures: u64,
    /// Denials answered from the negative cache.
    pub negative_cache_hits: u64,
    /// Decisions taken by the in-process fallback ([`FailPolicy::Local`]).
    pub fallback_decisions: u64,
    /// Requests allowed unchecked ([`FailPolicy::Open`]).
    pub fail_open_decisions: u64,
    /// Requests refused because no decision could be taken ([`FailPolicy::Closed`]).
    pub unavailable_decisions: u64,
    /// Whether the circuit breaker is open now.
    pub circuit_open: bool,
}

/// The Redis-backed limiter. Cheap to clone; clones share the client, breaker and caches.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tenantry_rate_limit::{FailPolicy, RateLimitLayer, RedisLimiter};
///
/// let limiter = RedisLimiter::builder("redis://127.0.0.1:6379")
///     .key_prefix("rl:")
///     .timeout(Duration::from_millis(50))
///     .fail_policy(FailPolicy::Local { share: 0.5 })
///     .build()
///     .await?;
/// let layer = RateLimitLayer::new(limiter);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    sha: String,
    prefix: String,
    options: fred::prelude::Options,
    timeout: Duration,
    breaker: Breaker,
    fail_policy: FailPolicy,
    fallback: LocalLimiter,
    negative: Option<RwLock<HashMap<RateKey, Denied>>>,
    /// Decisions waiting for a call, by Redis key; a key is present while its driver runs.
    queues: Option<Mutex<HashMap<String, Vec<Waiting>>>>,
    clock: Instant,
    counters: Counters,
}

/// The call in flight for a key, made by the request that found the key idle; dropping it
/// (call ended, or request dropped mid-call) hands the key over.
struct Lead<'a> {
    limiter: &'a RedisLimiter,
    redis_key: String,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.limiter.hand_over(std::mem::take(&mut self.redis_key));
    }
}

/// A decision queued behind a call in flight for its key.
struct Waiting {
    step: Step,
    /// When it must have its answer (limiter clock, µs): queued plus twice the timeout, as
    /// long as an uncoalesced decision can take.
    deadline: u64,
    reply: tokio::sync::oneshot::Sender<Result<Verdict, LimiterError>>,
}

/// One decision's arguments to the script.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Step {
    increment_us: u64,
    tolerance_us: u64,
}

impl Step {
    fn new(quota: Quota, cost: NonZeroU32) -> Self {
        Self {
            increment_us: quota.increment_us(cost),
            tolerance_us: quota.tolerance_us(),
        }
    }
}

#[derive(Default)]
struct Counters {
    redis_decisions: AtomicU64,
    redis_calls: AtomicU64,
    redis_failures: AtomicU64,
    negative_cache_hits: AtomicU64,
    fallback_decisions: AtomicU64,
    fail_open_decisions: AtomicU64,
    unavailable_decisions: AtomicU64,
}

/// A denial remembered until `until` (local clock, µs).
#[derive(Clone, Copy)]
struct Denied {
    until: u64,
    reset_at: u64,
    quota: Quota,
    cost: NonZeroU32,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("fail_policy", &self.inner.fail_policy)
            .field("negative_cache", &self.inner.negative.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// The Lua script run for every decision.
    pub const SCRIPT: &'static str = include_str!("gcra.lua");

    /// A builder for a limiter connecting to `url` (`redis://`, `rediss://`,
    /// `redis-cluster://`, ...).
    pub fn builder(url: impl Into<String>) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            source: Source::Url(url.into()),
            prefix: "tenantry:rl:".to_owned(),
            timeout: Duration::from_millis(100),
            failure_threshold: 5,
            cool_down: Duration::from_secs(1),
            fail_policy: FailPolicy::default(),
            negative_cache: true,
            coalesce: true,
            fallback_max_keys: 100_000,
        }
    }

    /// A builder for a limiter using an existing client. Each call still gets this limiter's
    /// timeout and is sent at most once, whatever the client's own settings.
    pub fn builder_with_client(client: Client) -> RedisLimiterBuilder {
        let mut b = Self::builder(String::new());
        b.source = Source::Client(client);
        b
    }

    /// The Redis key of `key`: `<prefix>{<tenant>}:<policy>`.
    pub fn redis_key(&self, key: &RateKey) -> String {
        // Built by hand: `format!` with the id's `Display` costs about ten times as much, on
        // every decision.
        let tenant = key.tenant().as_hyphenated_buf();
        let (prefix, policy) = (self.inner.prefix.as_str(), key.policy());
        let mut out = String::with_capacity(prefix.len() + tenant.len() + policy.len() + 3);
        out.push_str(prefix);
        out.push('{');
        out.extend(tenant.iter().map(|&b| char::from(b)));
        out.push_str("}:");
        out.push_str(policy);
        out
    }

    /// The counters.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.counters;
        RedisStats {
            redis_decisions: c.redis_decisions.load(Ordering::Relaxed),
            redis_calls: c.redis_calls.load(Ordering::Relaxed),
            redis_failures: c.redis_failures.load(Ordering::Relaxed),
            negative_cache_hits: c.negative_cache_hits.load(Ordering::Relaxed),
            fallback_decisions: c.fallback_decisions.load(Ordering::Relaxed),
            fail_open_decisions: c.fail_open_decisions.load(Ordering::Relaxed),
            unavailable_decisions: c.unavailable_decisions.load(Ordering::Relaxed),
            circuit_open: self.inner.breaker.is_open(self.now_us()),
        }
    }

    /// The client (for health checks).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Runs the script once with an explicit clock (`now_us`, microseconds) instead of Redis
    /// `TIME`, bypassing the breaker, the negative cache, coalescing and the fail policy. For
    /// tests that feed the Rust core and the script the same timestamps; production calls use
    /// [`Limiter::check`].
    pub async fn verdict_at(
        &self,
        key: &RateKey,
        quota: Quota,
        cost: NonZeroU32,
        now_us: u64,
    ) -> Result<Verdict, LimiterError> {
        single(self.verdicts_at(key, &[(quota, cost)], now_us).await?)
    }

    /// Runs the script once for several decisions on one key, in order, with an explicit
    /// clock: what a coalesced call does. Like [`verdict_at`](Self::verdict_at), for tests.
    pub async fn verdicts_at(
        &self,
        key: &RateKey,
        decisions: &[(Quota, NonZeroU32)],
        now_us: u64,
    ) -> Result<Vec<Verdict>, LimiterError> {
        let steps: Vec<Step> = decisions
            .iter()
            .map(|&(quota, cost)| Step::new(quota, cost))
            .collect();
        self.eval(&self.redis_key(key), &steps, Some(now_us), self.max_wait())
            .await
    }

    /// Decides now (what [`Limiter::check`] does).
    pub async fn decide(
        &self,
        key: &RateKey,
        quota: Quota,
        cost: NonZeroU32,
    ) -> Result<Decision, LimiterError> {
        let now = self.now_us();
        if let Some(d) = self.cached_denial(key, quota, cost, now) {
            return Ok(d);
        }
        if self.inner.breaker.is_open(now) {
            let err = LimiterError::new(LimiterErrorKind::CircuitOpen);
            return self.fail(key, quota, cost, err);
        }
        let step = Step::new(quota, cost);
        let verdict = match &self.inner.queues {
            Some(queues) => self.queued(queues, key, step, now).await,
            None => self
                .call(&self.redis_key(key), &[step], self.max_wait())
                .await
                .and_then(single),
        };
        match verdict {
            Ok(verdict) => {
                self.inner
                    .counters
                    .redis_decisions
                    .fetch_add(1, Ordering::Relaxed);
                if !verdict.allowed {
                    self.remember_denial(key, quota, cost, verdict);
                }
                Ok(Decision::new(verdict, quota, DecisionSource::Primary))
            }
            Err(err) => self.fail(key, quota, cost, err),
        }
    }

    /// Decides `step` with its own call when no call for its key is in flight (the key is
    /// then marked busy until the call ends); otherwise queues it for the key's next call.
    async fn queued(
        &self,
        queues: &Mutex<HashMap<String, Vec<Waiting>>>,
        key: &RateKey,
        step: Step,
        now: u64,
    ) -> Result<Verdict, LimiterError> {
        let redis_key = self.redis_key(key);
        let answer = {
            let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
            match queues.get_mut(&redis_key) {
                Some(waiting) => {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let deadline = now.saturating_add(micros(self.max_wait()));
                    waiting.push(Waiting {
                        step,
                        deadline,
                        reply,
                    });
                    Some(answer)
                }
                None => {
                    queues.insert(redis_key.clone(), Vec::new());
                    None
                }
            }
        };
        let Some(answer) = answer else {
            // Nothing in flight: this decision goes now, alone. Whatever queues meanwhile is
            // handed to a driver when the call ends, or when this future is dropped first.
            let lead = Lead {
                limiter: self,
                redis_key,
            };
            return self
                .call(&lead.redis_key, &[step], self.max_wait())
                .await
                .and_then(single);
        };
        // The driver answers by the deadline (see `drive`): no timer per decision.
        match answer.await {
            Ok(verdict) => verdict,
            Err(closed) => Err(LimiterError::with_source(LimiterErrorKind::Backend, closed)),
        }
    }

    /// Called when a key's call in flight ends: frees the key, or, when decisions queued
    /// behind the call, starts a driver for them.
    fn hand_over(&self, redis_key: String) {
        let Some(queues) = &self.inner.queues else {
            return;
        };
        let mut map = queues.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&redis_key).is_some_and(|w| !w.is_empty()) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(map);
                // A task, not a request's future: the server may drop any request (client
                // gone) while others wait on the call.
                runtime.spawn(self.clone().drive(redis_key));
                return;
            }
        }
        // No one waiting (or no runtime to drive them: their senders drop with the entry,
        // and each falls back to the fail policy).
        map.remove(&redis_key);
    }

    /// Sends the queued decisions of `redis_key`, a batch per call, until none are left.
    ///
    /// Every decision is answered by its deadline, as promptly as an uncoalesced one when
    /// Redis stalls with a long queue: one whose deadline has passed is answered with an error
    /// without being sent, and a call is given no longer than its batch's earliest deadline.
    async fn drive(self, redis_key: String) {
        let Some(queues) = &self.inner.queues else {
            return;
        };
        loop {
            let mut batch: Vec<Waiting> = {
                let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
                let Some(waiting) = queues.get_mut(&redis_key) else {
                    return;
                };
                if waiting.is_empty() {
                    queues.remove(&redis_key);
                    return;
                }
                let n = waiting.len().min(MAX_BATCH);
                waiting.drain(..n).collect()
            };
            let now = self.now_us();
            for late in batch.extract_if(.., |w| w.deadline <= now) {
                let _ = late.reply.send(Err(LimiterError::with_source(
                    LimiterErrorKind::Backend,
                    "no answer from Redis within the timeout",
                )));
            }
            let Some(first) = batch.iter().map(|w| w.deadline).min() else {
                continue;
            };
            let budget = Duration::from_micros(first - now).min(self.max_wait());
            let steps: Vec<Step> = batch.iter().map(|w| w.step).collect();
            match self.call(&redis_key, &steps, budget).await {
                Ok(verdicts) => {
                    for (waiting, verdict) in batch.into_iter().zip(verdicts) {
                        // A waiter that is gone (request dropped) needs no answer.
                        let _ = waiting.reply.send(Ok(verdict));
                    }
                }
                Err(err) => {
                    for waiting in batch {
                        let _ = waiting.reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    /// One call through the circuit breaker, given `budget` to answer: `steps` decided in
    /// order, or the call's error.
    async fn call(
        &self,
        redis_key: &str,
        steps: &[Step],
        budget: Duration,
    ) -> Result<Vec<Verdict>, LimiterError> {
        let inner = &*self.inner;
        if !inner.breaker.allow(self.now_us()) {
            return Err(LimiterError::new(LimiterErrorKind::CircuitOpen));
        }
        inner.counters.redis_calls.fetch_add(1, Ordering::Relaxed);
        match self.eval(redis_key, steps, None, budget).await {
            Ok(verdicts) => {
                inner.breaker.success();
                Ok(verdicts)
            }
            Err(err) => {
                inner
                    .counters
                    .redis_failures
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tenantry_rate_limit_redis_failures_total").increment(1);
                if inner.breaker.failure(self.now_us()) {
                    tracing::warn!(error = %err, "rate limit: Redis circuit breaker opened");
                }
                Err(err)
            }
        }
    }

    /// The longest one call may take, and so one decision may wait: the call and, when Redis
    /// lost the script, its reload (twice the timeout).
    fn max_wait(&self) -> Duration {
        self.inner.timeout * 2
    }

    fn now_us(&self) -> u64 {
        micros(self.inner.clock.elapsed())
    }

    fn cached_denial(
        &self,
        key: &RateKey,
        quota: Quota,
        cost: NonZeroU32,
        now: u64,
    ) -> Option<Decision> {
        let cache = self.inner.negative.as_ref()?;
        let denied = *cache.read().ok()?.get(key)?;
        // A plan change (another quota) or a cheaper request asks Redis again.
        if now >= denied.until || denied.quota != quota || cost < denied.cost {
            return None;
        }
        self.inner
            .counters
            .negative_cache_hits
            .fetch_add(1, Ordering::Relaxed);
        Some(Decision::new(
            Verdict {
                allowed: false,
                reset_after_us: denied.reset_at.saturating_sub(now),
                retry_after_us: denied.until - now,
            },
            quota,
            DecisionSource::NegativeCache,
        ))
    }

    fn remember_denial(&self, key: &RateKey, quota: Quota, cost: NonZeroU32, verdict: Verdict) {
        let Some(cache) = &self.inner.negative else {
            return;
        };
        let Ok(mut map) = cache.write() else {
            return;
        };
        let now = self.now_us();
        if map.len() >= NEGATIVE_CACHE_CAP {
            map.retain(|_, d| d.until > now);
            if map.len() >= NEGATIVE_CACHE_CAP {
                return;
            }
        }
        map.insert(
            key.clone(),
            Denied {
                until: now + verdict.retry_after_us,
                reset_at: now + verdict.reset_after_us,
                quota,
                cost,
            },
        );
    }

    fn fail(
        &self,
        key: &RateKey,
        quota: Quota,
        cost: NonZeroU32,
        err: LimiterError,
    ) -> Result<Decision, LimiterError> {
        let c = &self.inner.counters;
        match self.inner.fail_policy {
            FailPolicy::Open => {
                c.fail_open_decisions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tenantry_rate_limit_fallback_decisions_total", "policy" => "open")
                    .increment(1);
                tracing::warn!(tenant = %key.tenant(), policy = key.policy(), error = %err,
                    "rate limit: Redis unavailable, request allowed unchecked (FailPolicy::Open)");
                Ok(Decision::new(
                    Verdict {
                        allowed: true,
                        reset_after_us: 0,
                        retry_after_us: 0,
                    },
                    quota,
                    DecisionSource::FailOpen,
                ))
            }
            FailPolicy::Closed => {
                c.unavailable_decisions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tenantry_rate_limit_fallback_decisions_total", "policy" => "closed")
                    .increment(1);
                tracing::warn!(tenant = %key.tenant(), policy = key.policy(), error = %err,
                    "rate limit: Redis unavailable, request refused (FailPolicy::Closed)");
                Err(err)
            }
            FailPolicy::Local { share } => {
                let quota = quota.scaled(share);
                let local = self.inner.fallback.decide(key, quota, cost)?;
                c.fallback_decisions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tenantry_rate_limit_fallback_decisions_total", "policy" => "local")
                    .increment(1);
                tracing::warn!(tenant = %key.tenant(), policy = key.policy(), error = %err,
                    allowed = local.is_allowed(),
                    "rate limit: Redis unavailable, decided in process (FailPolicy::Local)");
                Ok(Decision::new(
                    local.verdict(),
                    quota,
                    DecisionSource::Fallback,
                ))
            }
        }
    }

    async fn eval(
        &self,
        redis_key: &str,
        steps: &[Step],
        now: Option<u64>,
        budget: Duration,
    ) -> Result<Vec<Verdict>, LimiterError> {
        let inner = &*self.inner;
        let slot = redis_keyslot(redis_key.as_bytes());
        let runs = runs(steps);
        let mut args: Vec<Value> = Vec::with_capacity(4 + 3 * runs.len());
        args.push(Value::from(inner.sha.as_str()));
        args.push(Value::from(1i64));
        args.push(Value::from(redis_key));
        args.push(now.map_or_else(|| Value::from(""), |now| Value::from(now.to_string())));
        for (count, step) in &runs {
            args.push(Value::from(count.to_string()));
            args.push(Value::from(step.increment_us.to_string()));
            args.push(Value::from(step.tolerance_us.to_string()));
        }
        let cmd = || CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
        let client = inner.client.with_options(&inner.options);
        let call = async {
            match client.custom::<Value, _>(cmd(), args.clone()).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    // The script did not run: loading it and sending again cannot double-count.
                    let load =
                        CustomCommand::new_static("SCRIPT", ClusterHash::Custom(slot), false);
                    client
                        .custom::<Value, _>(
                            load,
                            vec![Value::from("LOAD"), Value::from(RedisLimiter::SCRIPT)],
                        )
                        .await?;
                    client.custom::<Value, _>(cmd(), args).await
                }
                other => other,
            }
        };
        // fred's own timeout covers the command; this one, the call's budget, also covers
        // the reload.
        let value = tokio::time::timeout(budget, call)
            .await
            .map_err(|e| LimiterError::with_source(LimiterErrorKind::Backend, e))?
            .map_err(|e| LimiterError::with_source(LimiterErrorKind::Backend, e))?;
        parse_verdicts(value, &runs)
    }
}

/// `d` in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The one verdict of a one-decision call.
fn single(verdicts: Vec<Verdict>) -> Result<Verdict, LimiterError> {
    verdicts
        .into_iter()
        .next()
        .ok_or_else(|| LimiterError::new(LimiterErrorKind::Protocol))
}

/// Consecutive identical steps as (count, step): a busy key's batch is usually one run, and
/// the script's work is per run, not per decision.
fn runs(steps: &[Step]) -> Vec<(usize, Step)> {
    let mut runs: Vec<(usize, Step)> = Vec::new();
    for &step in steps {
        match runs.last_mut() {
            Some((count, last)) if *last == step => *count += 1,
            _ => runs.push((1, step)),
        }
    }
    runs
}

/// The script's reply: per run, how many were admitted and the TAT before the run (relative to
/// now). Expanded into each decision's verdict with `gcra::step`'s arithmetic: the first
/// `admitted` pass, each pushing the TAT one increment; the rest are refused at the TAT the
/// admitted ones left.
fn parse_verdicts(value: Value, runs: &[(usize, Step)]) -> Result<Vec<Verdict>, LimiterError> {
    let protocol = || LimiterError::new(LimiterErrorKind::Protocol);
    let Value::Array(items) = value else {
        return Err(protocol());
    };
    if items.len() != 2 * runs.len() {
        return Err(protocol());
    }
    let mut verdicts = Vec::with_capacity(runs.iter().map(|(n, _)| n).sum());
    for (pair, &(count, step)) in items.chunks_exact(2).zip(runs) {
        let number = |v: &Value| v.as_i64().and_then(|n| u64::try_from(n).ok());
        let (Some(admitted), Some(base)) = (number(&pair[0]), number(&pair[1])) else {
            return Err(protocol());
        };
        let admitted = usize::try_from(admitted)
            .ok()
            .filter(|&k| k <= count)
            .ok_or_else(protocol)?;
        let mut tat = base;
        for _ in 0..admitted {
            tat += step.increment_us;
            verdicts.push(Verdict {
                allowed: true,
                reset_after_us: tat,
                retry_after_us: 0,
            });
        }
        let refused = Verdict {
            allowed: false,
            reset_after_us: tat,
            retry_after_us: (tat + step.increment_us).saturating_sub(step.tolerance_us),
        };
        verdicts.extend(std::iter::repeat_n(refused, count - admitted));
    }
    Ok(verdicts)
}

impl Limiter for RedisLimiter {
    type Future = Pin<Box<dyn Future<Output = Result<Decision, LimiterError>> + Send>>;

    fn check(&self, key: &RateKey, quota: Quota, cost: NonZeroU32) -> Self::Future {
        let this = self.clone();
        let key = key.clone();
        Box::pin(async move { this.decide(&key, quota, cost).await })
    }
}

/// Consecutive failures open the circuit for a cool-down; then one probe call is let
/// through (the others keep failing fast), and its success closes the circuit.
struct Breaker {
    threshold: u32,
    cool_down_us: u64,
    failures: AtomicU32,
    /// 0 = closed; otherwise the local time (µs) until which calls are refused.
    open_until: AtomicU64,
}

impl Breaker {
    fn allow(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        // Half open: the caller that moves the deadline forward is the one probe.
        self.open_until
            .compare_exchange(
                until,
                (now + self.cool_down_us).max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("rate limit: Redis circuit breaker closed");
        }
    }

    /// Records a failure; true when this one opened the circuit.
    fn failure(&self, now: u64) -> bool {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n < self.threshold {
            return false;
        }
        let was = self
            .open_until
            .swap((now + self.cool_down_us).max(1), Ordering::AcqRel);
        was == 0
    }

    fn is_open(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != 0 && now < until
    }
}

enum Source {
    Url(String),
    Client(Client),
}

/// Builds a [`RedisLimiter`].
pub struct RedisLimiterBuilder {
    source: Source,
    prefix: String,
    timeout: Duration,
    failure_threshold: u32,
    cool_down: Duration,
    fail_policy: FailPolicy,
    negative_cache: bool,
    coalesce: bool,
    fallback_max_keys: usize,
}

impl fmt::Debug for RedisLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiterBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("failure_threshold", &self.failure_threshold)
            .field("cool_down", &self.cool_down)
            .field("fail_policy", &self.fail_policy)
            .field("negative_cache", &self.negative_cache)
            .field("coalesce", &self.coalesce)
            .finish_non_exhaustive()
    }
}

impl RedisLimiterBuilder {
    /// Prefix of every key (default `tenantry:rl:`); must not contain `{` or `}`, which
    /// would break the tenant hash tag.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Timeout of one Redis call (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive failures that open the circuit (default 5).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// How long the open circuit refuses calls before one probe (default 1 s).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// What to answer when Redis cannot decide (default [`FailPolicy::Local`] at 0.5).
    pub fn fail_policy(mut self, policy: FailPolicy) -> Self {
        self.fail_policy = policy;
        self
    }

    /// Answer known denials locally until their retry time (default on).
    pub fn negative_cache(mut self, on: bool) -> Self {
        self.negative_cache = on;
        self
    }

    /// Let concurrent decisions for one key share Redis calls (default on).
    ///
    /// While a call for a key is in flight, further decisions for that key wait, and the next
    /// call decides up to 128 of them in arrival order, exactly as that many single calls at
    /// one instant would. Under load a hot key costs Redis one script run per round trip
    /// instead of one per request; a decision that arrives while none is in flight is sent at
    /// once, by its own request, at the cost of an uncoalesced one. Queued decisions are sent
    /// by a spawned Tokio task, so a dropped request never strands the ones behind it, and
    /// each is answered within twice the [timeout](Self::timeout) of its arrival, as an
    /// uncoalesced decision is, however long the queue. Off, every decision is its own call.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// Key cap of the in-process fallback limiter (default 100,000).
    pub fn fallback_max_keys(mut self, n: usize) -> Self {
        self.fallback_max_keys = n;
        self
    }

    /// Builds the limiter and starts connecting. Redis being down is not an error here: the
    /// client keeps reconnecting and the fail policy answers meanwhile.
    pub async fn build(self) -> Result<RedisLimiter, ConfigError> {
        if self.prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidName,
                "the key prefix must not contain `{` or `}`",
            ));
        }
        if self.timeout.is_zero() || self.failure_threshold == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidSetting,
                "timeout and failure threshold must be positive",
            ));
        }
        if let FailPolicy::Local { share } = self.fail_policy {
            if !(share > 0.0 && share <= 1.0) {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidSetting,
                    "the Local fail policy's share must be in (0, 1]",
                ));
            }
        }
        let fallback = LocalLimiter::builder()
            .max_keys(self.fallback_max_keys)
            .build()?;
        let client = match self.source {
            Source::Client(client) => client,
            Source::Url(url) => {
                let config = Config::from_url(&url).map_err(|e| {
                    ConfigError::new(ConfigErrorKind::Redis, format!("bad Redis URL: {e}"))
                })?;
                let timeout = self.timeout;
                let client = Builder::from_config(config)
                    .with_performance_config(|p| p.default_command_timeout = timeout)
                    .with_connection_config(|c| {
                        c.max_command_attempts = 1;
                        c.connection_timeout = timeout.max(Duration::from_millis(500));
                        c.internal_command_timeout = timeout.max(Duration::from_millis(500));
                    })
                    .set_policy(ReconnectPolicy::new_constant(0, 100))
                    .build()
                    .map_err(|e| ConfigError::new(ConfigErrorKind::Redis, e.to_string()))?;
                let _connection = client.connect();
                // Wait briefly for the first connection; an outage at start is the fail
                // policy's business, not a configuration error.
                let _ = tokio::time::timeout(
                    timeout.max(Duration::from_secs(1)),
                    client.wait_for_connect(),
                )
                .await;
                client
            }
        };
        let options = fred::prelude::Options {
            max_attempts: Some(1),
            timeout: Some(self.timeout),
            fail_fast: true,
            ..Default::default()
        };
        Ok(RedisLimiter {
            inner: Arc::new(Inner {
                client,
                sha: fred::util::sha1_hash(RedisLimiter::SCRIPT),
                prefix: self.prefix,
                options,
                timeout: self.timeout,
                breaker: Breaker {
                    threshold: self.failure_threshold,
                    cool_down_us: u64::try_from(self.cool_down.as_micros()).unwrap_or(u64::MAX),
                    failures: AtomicU32::new(0),
                    open_until: AtomicU64::new(0),
                },
                fail_policy: self.fail_policy,
                fallback,
                negative: self.negative_cache.then(|| RwLock::new(HashMap::new())),
                queues: self.coalesce.then(|| Mutex::new(HashMap::new())),
                clock: Instant::now(),
                counters: Counters::default(),
            }),
        })
    }
}
