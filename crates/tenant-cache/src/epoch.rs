//! Which cached entries an invalidation made stale.
//!
//! Every load remembers the value of a logical clock read *before* it asked the store. An
//! invalidation of tenant `T` advances the clock and records the new value for `T`. An entry
//! that names `T` (whatever key it is cached under: id, slug or API-key hash) is current only
//! if it was loaded at or after `T`'s last invalidation. So one invalidation of `T` makes every
//! entry for `T` stale at once, with no reverse index, and a load that raced with the
//! invalidation (asked the store before, finished after) is recognised as stale too.

use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire};
use std::time::Duration;

use tenantry_core::TenantId;

/// How long an invalidation mark outlives the longest entry time to live: a load that started
/// before an invalidation and finishes within this margin after its entry's TTL is still seen
/// as stale.
const MARK_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Epochs {
    clock: AtomicU64,
    /// The epoch of the latest invalidation of any tenant: entries loaded at or after it are
    /// current without looking at `marks` (the hot path).
    latest: AtomicU64,
    /// Entries loaded before this epoch are stale (the whole first level was dropped).
    floor: AtomicU64,
    /// Tenant -> epoch of its latest invalidation. Kept longer than any entry lives.
    marks: moka::sync::Cache<TenantId, u64>,
}

impl Epochs {
    pub(crate) fn new(longest_ttl: Duration) -> Self {
        Self {
            clock: AtomicU64::new(0),
            latest: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            marks: moka::sync::Cache::builder()
                .time_to_live(longest_ttl.saturating_add(MARK_GRACE))
                .build(),
        }
    }

    /// The epoch a load starting now is stamped with.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.load(Acquire)
    }

    /// Whether an entry loaded at `epoch`, naming `tenant` (if any), is still current.
    #[inline]
    pub(crate) fn is_current(&self, epoch: u64, tenant: Option<TenantId>) -> bool {
        if epoch >= self.latest.load(Acquire) {
            return true;
        }
        if epoch < self.floor.load(Acquire) {
            return false;
        }
        tenant.is_none_or(|id| self.marks.get(&id).is_none_or(|mark| epoch >= mark))
    }

    /// Makes every entry for `tenant` loaded before now stale.
    pub(crate) fn invalidate(&self, tenant: TenantId) {
        let e = self.clock.fetch_add(1, AcqRel) + 1;
        // Concurrent invalidations of one tenant: keep the larger mark.
        self.marks
            .entry(tenant)
            .and_upsert_with(|old| old.map_or(e, |o| (*o.value()).max(e)));
        self.latest.fetch_max(e, AcqRel);
    }

    /// Makes every entry loaded before now stale.
    pub(crate) fn invalidate_all(&self) {
        let e = self.clock.fetch_add(1, AcqRel) + 1;
        self.floor.fetch_max(e, AcqRel);
        self.latest.fetch_max(e, AcqRel);
    }
}
