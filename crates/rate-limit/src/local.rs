//! The in-process backend: one TAT per key in a sharded concurrent map.
//!
//! Memory is bounded two ways. Keys whose TAT has passed are fully replenished and carry no
//! information, so a shard drops them when it is swept (at most once per sweep interval, on
//! insert, or on [`LocalLimiter::sweep`]). And a hard cap on keys: when a shard is full of keys
//! that are still limited, a new key is refused with [`LimiterErrorKind::Capacity`] (the layer
//! answers 503) instead of evicting a limited key, which would let rotating keys reset a
//! tenant's limit.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Ready};
use std::hash::BuildHasher as _;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use foldhash::fast::RandomState;
use quanta::{Clock, Instant};

use crate::error::{ConfigError, ConfigErrorKind, LimiterError, LimiterErrorKind};
use crate::gcra::{step, Quota, Verdict};
use crate::key::{Decision, DecisionSource, Limiter, RateKey};

const DEFAULT_MAX_KEYS: usize = 1_000_000;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// A full shard is swept at most this often, so a flood of new keys cannot make every insert
/// scan the shard.
const FULL_SHARD_SWEEP_GAP_US: u64 = 100_000;

/// The in-process limiter. Cheap to clone; clones share state.
///
/// ```
/// use std::num::NonZeroU32;
/// use tenantry_core::TenantId;
/// use tenantry_rate_limit::{LocalLimiter, Quota, RateKey};
///
/// let limiter = LocalLimiter::new();
/// let key = RateKey::new(TenantId::new_v4(), "api".into());
/// let quota = Quota::per_minute(60, 2)?;
/// let one = NonZeroU32::MIN;
/// assert!(limiter.decide(&key, quota, one)?.is_allowed());
/// assert!(limiter.decide(&key, quota, one)?.is_allowed());
/// assert!(!limiter.decide(&key, quota, one)?.is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LocalLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    shard_seed: u64,
    // quanta reads the TSC: a few ns, against 20+ for `std::time::Instant::now`.
    clock: Clock,
    start: Instant,
    per_shard_cap: usize,
    sweep_interval_us: u64,
}

struct Shard {
    map: RwLock<HashMap<RateKey, AtomicU64, RandomState>>,
    last_sweep_us: AtomicU64,
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("shards", &self.inner.shards.len())
            .field(
                "max_keys",
                &(self.inner.per_shard_cap * self.inner.shards.len()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// A limiter holding at most 1,000,000 active keys, swept every 10 s.
    pub fn new() -> Self {
        Self::builder().build_valid()
    }

    /// A builder to set the key cap and sweep interval.
    pub fn builder() -> LocalLimiterBuilder {
        LocalLimiterBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }

    /// Decides now.
    pub fn decide(
        &self,
        key: &RateKey,
        quota: Quota,
        cost: NonZeroU32,
    ) -> Result<Decision, LimiterError> {
        self.decide_at(key, quota, cost, self.now_us())
    }

    /// Decides at `now_us`, microseconds on this limiter's monotonic clock. For simulations
    /// and tests that feed the same timestamps to several backends; times must not go
    /// backwards for a key.
    pub fn decide_at(
        &self,
        key: &RateKey,
        quota: Quota,
        cost: NonZeroU32,
        now_us: u64,
    ) -> Result<Decision, LimiterError> {
        let verdict = self.step_at(key, quota.increment_us(cost), quota.tolerance_us(), now_us)?;
        Ok(Decision::new(verdict, quota, DecisionSource::Primary))
    }

    /// Microseconds on this limiter's clock (starts at 1 when the limiter is built).
    pub fn now_us(&self) -> u64 {
        let elapsed = self
            .inner
            .clock
            .now()
            .saturating_duration_since(self.inner.start);
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX) + 1
    }

    /// Number of keys held (limited or not yet swept).
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.map.read().map_or(0, |m| m.len()))
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key that is fully replenished. Returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let now = self.now_us();
        self.inner
            .shards
            .iter()
            .map(|shard| {
                shard.last_sweep_us.store(now, Ordering::Relaxed);
                shard.map.write().map_or(0, |mut m| sweep_map(&mut m, now))
            })
            .sum()
    }

    fn step_at(
        &self,
        key: &RateKey,
        increment: u64,
        tolerance: u64,
        now: u64,
    ) -> Result<Verdict, LimiterError> {
        let inner = &*self.inner;
        let shard = &inner.shards[inner.shard_of(key)];

        // Fast path: the key exists; update its TAT with a compare-and-swap under a read lock.
        {
            let map = shard.map.read().map_err(|_| poisoned())?;
            if let Some(cell) = map.get(key) {
                return Ok(cas_step(cell, now, increment, tolerance));
            }
        }

        let mut map = shard.map.write().map_err(|_| poisoned())?;
        if let Some(cell) = map.get(key) {
            return Ok(cas_step(cell, now, increment, tolerance));
        }
        let last = shard.last_sweep_us.load(Ordering::Relaxed);
        let since = now.saturating_sub(last);
        let full = map.len() >= inner.per_shard_cap;
        if since >= inner.sweep_interval_us || (full && since >= FULL_SHARD_SWEEP_GAP_US) {
            shard.last_sweep_us.store(now, Ordering::Relaxed);
            sweep_map(&mut map, now);
        }
        let (verdict, new_tat) = step(None, now, increment, tolerance);
        if let Some(tat) = new_tat {
            if map.len() >= inner.per_shard_cap {
                return Err(LimiterError::new(LimiterErrorKind::Capacity));
            }
            map.insert(key.clone(), AtomicU64::new(tat));
        }
        Ok(verdict)
    }
}

impl Inner {
    /// The shard of a key, from its tenant id alone (one multiply; the map inside the shard
    /// hashes the whole key with a seeded hasher). A tenant's policies share a shard.
    fn shard_of(&self, key: &RateKey) -> usize {
        let id = key.tenant().as_uuid().as_u128();
        #[allow(clippy::cast_possible_truncation)] // folding 128 bits into 64 on purpose
        let folded = (id as u64) ^ ((id >> 64) as u64) ^ self.shard_seed;
        let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        usize::try_from(mixed >> 32).unwrap_or(0) % self.shards.len()
    }
}

fn poisoned() -> LimiterError {
    LimiterError::with_source(LimiterErrorKind::Backend, "local limiter lock poisoned")
}

fn sweep_map(map: &mut HashMap<RateKey, AtomicU64, RandomState>, now: u64) -> usize {
    let before = map.len();
    map.retain(|_, tat| tat.load(Ordering::Relaxed) > now);
    before - map.len()
}

fn cas_step(cell: &AtomicU64, now: u64, increment: u64, tolerance: u64) -> Verdict {
    let mut current = cell.load(Ordering::Acquire);
    loop {
        let (verdict, new_tat) = step(Some(current), now, increment, tolerance);
        let Some(new_tat) = new_tat else {
            return verdict;
        };
        match cell.compare_exchange_weak(current, new_tat, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return verdict,
            Err(actual) => current = actual,
        }
    }
}

impl Limiter for LocalLimiter {
    type Future = Ready<Result<Decision, LimiterError>>;

    fn check(&self, key: &RateKey, quota: Quota, cost: NonZeroU32) -> Self::Future {
        ready(self.decide(key, quota, cost))
    }
}

/// Builds a [`LocalLimiter`].
#[derive(Debug, Clone)]
pub struct LocalLimiterBuilder {
    max_keys: usize,
    sweep_interval: Duration,
}

impl LocalLimiterBuilder {
    /// At most this many keys that are still limited (default 1,000,000). Fully replenished
    /// keys are swept and do not count once swept.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How often a shard drops its fully replenished keys (default 10 s).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Builds the limiter.
    pub fn build(self) -> Result<LocalLimiter, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidSetting,
                "max_keys must be at least 1",
            ));
        }
        Ok(self.build_valid())
    }

    /// Builds from settings already checked (`max_keys >= 1`).
    fn build_valid(self) -> LocalLimiter {
        let parallelism = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (parallelism * 16)
            .next_power_of_two()
            .min(self.max_keys)
            .max(1);
        let per_shard_cap = self.max_keys.div_ceil(shards);
        let hasher = RandomState::default();
        let shard_seed = hasher.hash_one(0xA5A5_u64);
        let clock = Clock::new();
        LocalLimiter {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Shard {
                        map: RwLock::new(HashMap::with_hasher(hasher.clone())),
                        last_sweep_us: AtomicU64::new(0),
                    })
                    .collect(),
                shard_seed,
                start: clock.now(),
                clock,
                per_shard_cap,
                sweep_interval_us: u64::try_from(self.sweep_interval.as_micros())
                    .unwrap_or(u64::MAX),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_core::TenantId;

    fn key() -> RateKey {
        RateKey::new(TenantId::new_v4(), "api".into())
    }

    #[test]
    fn replenished_keys_are_swept() {
        let l = LocalLimiter::new();
        let q = Quota::per_minute(60_000_000, 1).unwrap(); // 1 µs interval
        for _ in 0..100 {
            l.decide_at(&key(), q, NonZeroU32::MIN, 1).unwrap();
        }
        assert_eq!(l.len(), 100);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(l.sweep(), 100);
        assert!(l.is_empty());
    }

    #[test]
    fn rotating_keys_cannot_exceed_the_cap() {
        let l = LocalLimiter::builder().max_keys(64).build().unwrap();
        let q = Quota::per_minute(1, 1).unwrap(); // each key stays limited for a minute
        let mut refused = 0;
        for _ in 0..10_000 {
            match l.decide(&key(), q, NonZeroU32::MIN) {
                Ok(d) => assert!(d.is_allowed()),
                Err(e) => {
                    assert_eq!(e.kind(), LimiterErrorKind::Capacity);
                    refused += 1;
                }
            }
        }
        let shards = l.inner.shards.len();
        assert!(l.len() <= 64.max(shards), "len {}", l.len());
        assert!(refused > 0);
    }

    #[test]
    fn a_limited_key_is_never_evicted_for_a_new_one() {
        let l = LocalLimiter::builder().max_keys(1).build().unwrap();
        let q = Quota::per_minute(1, 1).unwrap();
        let a = key();
        assert!(l.decide(&a, q, NonZeroU32::MIN).unwrap().is_allowed());
        for _ in 0..100 {
            let _ = l.decide(&key(), q, NonZeroU32::MIN);
        }
        assert!(!l.decide(&a, q, NonZeroU32::MIN).unwrap().is_allowed());
    }
}
