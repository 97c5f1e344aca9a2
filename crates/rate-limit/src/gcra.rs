//! The Generic Cell Rate Algorithm, in integer microseconds.
//!
//! One key holds one number, its *theoretical arrival time* (TAT): the instant at which the
//! key would be fully replenished. A request of cost `c` at time `now` is allowed when
//! `max(TAT, now) + c * interval - now <= tolerance`, where `interval = 60 s / rpm` and
//! `tolerance = burst * interval`; an allowed request moves TAT there, a denied one leaves
//! it. So an idle key admits exactly `burst` unit requests at once, then one per `interval`,
//! and there is no window edge where twice the limit passes.
//!
//! The Redis backend runs the same arithmetic in Lua ([`crate::redis`] when the `redis`
//! feature is on); both are fed the same two numbers computed here
//! ([`Quota::increment`] and [`Quota::tolerance`]), and tests check that they agree.

use std::fmt;
use std::num::NonZeroU32;

use crate::error::{ConfigError, ConfigErrorKind};

/// Microseconds in a minute.
const MINUTE_US: u64 = 60_000_000;

/// Tolerances and increments are clamped to this many microseconds (about 12.7 days), so
/// `now + increment` stays far below 2^53 and Lua's doubles compute exactly what Rust does.
pub const MAX_SPAN_US: u64 = 1 << 40;

/// A rate: `requests_per_minute` sustained, `burst` at once on an idle key.
///
/// ```
/// use tenantry_rate_limit::Quota;
///
/// let q = Quota::per_minute(100, 100)?;
/// assert_eq!(q.interval_us(), 600_000); // one request every 600 ms
/// assert_eq!(q.tolerance_us(), 60_000_000);
/// # Ok::<(), tenantry_rate_limit::ConfigError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    requests_per_minute: NonZeroU32,
    burst: NonZeroU32,
    interval_us: u64,
    tolerance_us: u64,
}

impl Quota {
    /// A quota of `requests_per_minute` with `burst` requests allowed at once. Both must be at
    /// least 1.
    pub fn per_minute(requests_per_minute: u32, burst: u32) -> Result<Self, ConfigError> {
        let (Some(rpm), Some(burst)) =
            (NonZeroU32::new(requests_per_minute), NonZeroU32::new(burst))
        else {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidQuota,
                "requests per minute and burst must both be at least 1",
            ));
        };
        // At least 1 µs: rates above 60 million per minute are treated as 60 million.
        let interval_us = (MINUTE_US / u64::from(rpm.get())).max(1);
        let tolerance_us = interval_us
            .saturating_mul(u64::from(burst.get()))
            .min(MAX_SPAN_US);
        Ok(Self {
            requests_per_minute: rpm,
            burst,
            interval_us,
            tolerance_us,
        })
    }

    /// The same rate with `share` of the requests per minute and of the burst (each at least
    /// 1). Used by the `Local` fail policy.
    pub fn scaled(&self, share: f64) -> Self {
        let scale = |v: u32| -> u32 {
            let scaled = (f64::from(v) * share).floor();
            if scaled.is_nan() || scaled < 1.0 {
                1
            } else if scaled >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                // In range and integral: the cast is exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                {
                    scaled as u32
                }
            }
        };
        Self::per_minute(
            scale(self.requests_per_minute.get()),
            scale(self.burst.get()),
        )
        .unwrap_or(*self)
    }

    /// Sustained requests per minute.
    pub fn requests_per_minute(&self) -> u32 {
        self.requests_per_minute.get()
    }

    /// Requests allowed at once on an idle key.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// The emission interval: microseconds per request.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// The delay variation tolerance, `burst * interval`, in microseconds.
    pub fn tolerance_us(&self) -> u64 {
        self.tolerance_us
    }

    /// How far a request of `cost` moves the key's TAT, in microseconds (clamped like the
    /// tolerance).
    pub fn increment_us(&self, cost: NonZeroU32) -> u64 {
        self.interval_us
            .saturating_mul(u64::from(cost.get()))
            .min(MAX_SPAN_US + 1)
    }

    /// Whole units left when the key's TAT is `reset_after_us` ahead of now.
    pub(crate) fn remaining(&self, reset_after_us: u64) -> u64 {
        self.tolerance_us.saturating_sub(reset_after_us) / self.interval_us
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("requests_per_minute", &self.requests_per_minute)
            .field("burst", &self.burst)
            .finish()
    }
}

/// The raw outcome of one GCRA step, as both backends compute it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Microseconds until the key is fully replenished (TAT − now, after this step).
    pub reset_after_us: u64,
    /// When denied, microseconds until a request of the same cost would be allowed; else 0.
    pub retry_after_us: u64,
}

/// One GCRA step: the key's stored TAT (`None` when absent), the current time, the quota's
/// increment and tolerance. Returns the verdict and, when allowed, the TAT to store.
pub(crate) fn step(
    stored_tat: Option<u64>,
    now: u64,
    increment: u64,
    tolerance: u64,
) -> (Verdict, Option<u64>) {
    let tat = stored_tat.map_or(now, |t| t.max(now));
    let new_tat = tat + increment;
    let diff = new_tat - now;
    if diff <= tolerance {
        (
            Verdict {
                allowed: true,
                reset_after_us: diff,
                retry_after_us: 0,
            },
            Some(new_tat),
        )
    } else {
        (
            Verdict {
                allowed: false,
                reset_after_us: tat - now,
                retry_after_us: diff - tolerance,
            },
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    #[test]
    fn idle_key_admits_exactly_burst_then_one_per_interval() {
        let q = Quota::per_minute(100, 10).unwrap();
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..50 {
            let (v, new) = step(tat, 1_000, q.increment_us(one()), q.tolerance_us());
            if v.allowed {
                allowed += 1;
                tat = new;
            } else {
                assert_eq!(v.retry_after_us, q.interval_us());
            }
        }
        assert_eq!(allowed, 10);
        // One interval later exactly one more passes.
        let now = 1_000 + q.interval_us();
        let (v, new) = step(tat, now, q.increment_us(one()), q.tolerance_us());
        assert!(v.allowed);
        let (v, _) = step(new, now, q.increment_us(one()), q.tolerance_us());
        assert!(!v.allowed);
    }

    #[test]
    fn no_double_burst_at_a_window_edge() {
        // A fixed window allows 2x the limit around its edge; GCRA allows burst + elapsed/interval.
        let q = Quota::per_minute(60, 60).unwrap();
        let mut tat = None;
        let mut allowed = 0;
        for now in [59_999_000u64, 60_000_001] {
            for _ in 0..100 {
                let (v, new) = step(tat, now, q.increment_us(one()), q.tolerance_us());
                if v.allowed {
                    allowed += 1;
                    tat = new;
                }
            }
        }
        assert_eq!(allowed, 60);
    }

    #[test]
    fn zero_rates_are_rejected() {
        assert!(Quota::per_minute(0, 1).is_err());
        assert!(Quota::per_minute(1, 0).is_err());
    }

    #[test]
    fn scaled_quota_keeps_at_least_one() {
        let q = Quota::per_minute(100, 20).unwrap().scaled(0.25);
        assert_eq!((q.requests_per_minute(), q.burst()), (25, 5));
        let q = Quota::per_minute(1, 1).unwrap().scaled(0.1);
        assert_eq!((q.requests_per_minute(), q.burst()), (1, 1));
    }

    #[test]
    fn huge_bursts_are_clamped_below_double_precision() {
        let q = Quota::per_minute(1, u32::MAX).unwrap();
        assert_eq!(q.tolerance_us(), MAX_SPAN_US);
        assert!(q.increment_us(NonZeroU32::MAX) <= MAX_SPAN_US + 1);
    }
}
