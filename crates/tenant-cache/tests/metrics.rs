//! The `metrics` feature: every counter also goes to the `metrics` facade.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{add_tenant, CountingStore};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tenantry_cache::CachedStore;
use tenantry_core::{TenantId, TenantStore};

#[derive(Default)]
struct Counters(
    Mutex<HashMap<String, Arc<AtomicU64>>>,
    Mutex<HashMap<String, u32>>,
);

impl Counters {
    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    fn registrations(&self) -> HashMap<String, u32> {
        self.1.lock().unwrap().clone()
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        *self
            .1
            .lock()
            .unwrap()
            .entry(key.name().to_owned())
            .or_default() += 1;
        let c = self
            .0
            .lock()
            .unwrap()
            .entry(key.name().to_owned())
            .or_default()
            .clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn hits_misses_negative_hits_store_queries_and_invalidations_reach_the_metrics_facade() {
    let recorder = Counters::default();
    let store = CountingStore::new();
    let (id, _, _) = add_tenant(&store.inner, "m");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let cache = CachedStore::new(store.clone());
            cache.by_id(id).await.unwrap();
            cache.by_id(id).await.unwrap();
            cache.by_id(id).await.unwrap();
            let ghost = TenantId::new_v4();
            cache.by_id(ghost).await.unwrap();
            cache.by_id(ghost).await.unwrap();
            cache.invalidate(id).await.unwrap();
        })
    });
    assert_eq!(recorder.get("tenantry_cache_hits_total"), 2);
    assert_eq!(recorder.get("tenantry_cache_misses_total"), 2);
    assert_eq!(recorder.get("tenantry_cache_negative_hits_total"), 1);
    assert_eq!(recorder.get("tenantry_cache_store_queries_total"), 2);
    assert_eq!(recorder.get("tenantry_cache_invalidations_total"), 1);
    // Each counter is registered once and its handle reused: registering per event is a
    // registry lookup and an allocation on every cache hit, that is on every request.
    let registrations = recorder.registrations();
    assert_eq!(registrations.len(), 5, "{registrations:?}");
    assert!(registrations.values().all(|&n| n == 1), "{registrations:?}");
}
