//! Test helpers: a store that counts its queries, and tenant builders.
#![allow(dead_code, unreachable_pub)]

pub mod pg;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantry_core::{
    ApiKeyHash, InMemoryStore, Plan, Slug, StoreError, StoreErrorKind, Tenant, TenantId,
    TenantStatus, TenantStore,
};

/// An [`InMemoryStore`] that counts the queries it answers, can answer late (the answer is read
/// first, then delivered after `delay`, like a slow network) and can fail on demand.
#[derive(Clone, Default)]
pub struct CountingStore {
    pub inner: InMemoryStore,
    queries: Arc<AtomicU64>,
    delay: Arc<Mutex<Duration>>,
    fail: Arc<AtomicBool>,
}

impl CountingStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store sharing `inner`'s records with its own counter.
    pub fn over(inner: &InMemoryStore) -> Self {
        Self {
            inner: inner.clone(),
            ..Self::default()
        }
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    async fn answer(&self, read: Option<Arc<Tenant>>) -> Result<Option<Arc<Tenant>>, StoreError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                std::io::Error::other("database down"),
            ));
        }
        Ok(read)
    }
}

impl TenantStore for CountingStore {
    async fn by_id(&self, id: TenantId) -> Result<Option<Arc<Tenant>>, StoreError> {
        let read = self.inner.by_id(id).await?;
        self.answer(read).await
    }

    async fn by_slug(&self, slug: &Slug) -> Result<Option<Arc<Tenant>>, StoreError> {
        let read = self.inner.by_slug(slug).await?;
        self.answer(read).await
    }

    async fn by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<Arc<Tenant>>, StoreError> {
        let read = self.inner.by_api_key(hash).await?;
        self.answer(read).await
    }
}

pub fn slug(s: &str) -> Slug {
    Slug::new(s).unwrap()
}

/// A unique, valid slug (tests share nothing).
pub fn unique_slug(base: &str) -> Slug {
    let n = uuid::Uuid::new_v4().simple().to_string();
    Slug::new(&format!("{base}-{}", &n[..12])).unwrap()
}

pub fn tenant(id: TenantId, slug: &Slug, status: TenantStatus) -> Tenant {
    Tenant::builder(id, slug.clone(), Plan::pro())
        .status(status)
        .build()
}

/// Inserts an active tenant with one API key; returns (id, slug, key hash).
pub fn add_tenant(store: &InMemoryStore, base: &str) -> (TenantId, Slug, ApiKeyHash) {
    let id = TenantId::new_v4();
    let s = unique_slug(base);
    store.insert(tenant(id, &s, TenantStatus::Active));
    let key = ApiKeyHash::of(&format!("tk_{}", uuid::Uuid::new_v4().simple()));
    store.insert_api_key(key, id);
    (id, s, key)
}
