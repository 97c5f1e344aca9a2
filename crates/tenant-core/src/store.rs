use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Slug, Tenant, TenantId};

/// The SHA-256 of an API key. Stores keep only this, never the key itself.
///
/// Equality is constant-time, so comparing a presented key's hash with a stored one leaks
/// nothing through timing.
///
/// ```
/// use tenantry_core::ApiKeyHash;
///
/// let h = ApiKeyHash::of("tk_live_abc");
/// assert_eq!(h, ApiKeyHash::of("tk_live_abc"));
/// assert_ne!(h, ApiKeyHash::of("tk_live_abd"));
/// assert_eq!(h.to_hex().len(), 64);
/// ```
#[derive(Clone, Copy)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// Hashes a presented API key.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Wraps a stored digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for ApiKeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for ApiKeyHash {}

// Consistent with the constant-time `PartialEq`: equal digests hash equally.
impl std::hash::Hash for ApiKeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines; the full digest is not printed.
        write!(f, "ApiKeyHash({}…)", &hex::encode(&self.0[..4]))
    }
}

/// Where tenant records come from: a database, a cache in front of one, or memory.
///
/// Every method answers `Ok(None)` for "no such tenant" and `Err` only for a failure of the
/// store itself (layers turn that into 503, never into "unknown tenant"). Inactive tenants are
/// returned as they are; deciding what a suspended tenant gets is the caller's business.
///
/// ```
/// use std::sync::Arc;
/// use tenantry_core::{InMemoryStore, Plan, Slug, Tenant, TenantId, TenantStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStore::new();
/// let acme = Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::pro()).build();
/// store.insert(acme.clone());
/// let found = store.by_slug(&Slug::new("acme")?).await?;
/// assert_eq!(found.as_deref(), Some(&acme));
/// # Ok(()) }
/// ```
pub trait TenantStore: Send + Sync + 'static {
    /// Looks a tenant up by id.
    fn by_id(
        &self,
        id: TenantId,
    ) -> impl Future<Output = Result<Option<Arc<Tenant>>, StoreError>> + Send;

    /// Looks a tenant up by slug.
    fn by_slug(
        &self,
        slug: &Slug,
    ) -> impl Future<Output = Result<Option<Arc<Tenant>>, StoreError>> + Send;

    /// Looks up the tenant owning an (unrevoked, unexpired) API key.
    fn by_api_key(
        &self,
        hash: &ApiKeyHash,
    ) -> impl Future<Output = Result<Option<Arc<Tenant>>, StoreError>> + Send;
}

impl<T: TenantStore> TenantStore for Arc<T> {
    fn by_id(
        &self,
        id: TenantId,
    ) -> impl Future<Output = Result<Option<Arc<Tenant>>, StoreError>> + Send {
        (**self).by_id(id)
    }

    fn by_slug(
        &self,
        slug: &Slug,
    ) -> impl Future<Output = Result<Option<Arc<Tenant>>, StoreError>> + Send {
        (**self).by_slug(slug)
    }

    fn by_api_key(
        &self,
        hash: &ApiKeyHash,
    ) -> impl Future<Output = Result<Option<Arc<Tenant>>, StoreError>> + Send {
        (**self).by_api_key(hash)
    }
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend could not be reached or refused the request.
    Unavailable,
    /// The backend did not answer in time.
    Timeout,
    /// The backend answered with data that is not a valid tenant record.
    InvalidRecord,
}

/// A failure of a [`TenantStore`] backend. The backend's own error is kept as
/// [`source`](std::error::Error::source), not stringified.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl StoreError {
    /// A new error of `kind` caused by `source`.
    pub fn new(kind: StoreErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// A new error of `kind` with no underlying cause.
    pub fn from_kind(kind: StoreErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Unavailable => "tenant store unavailable",
            StoreErrorKind::Timeout => "tenant store timed out",
            StoreErrorKind::InvalidRecord => "tenant store returned an invalid record",
        })
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A [`TenantStore`] held in memory: for tests, benchmarks and small fixed deployments.
///
/// Clones share the same records.
#[derive(Debug, Clone, Default)]
pub struct InMemoryStore {
    inner: Arc<RwLock<Maps>>,
}

#[derive(Debug, Default)]
struct Maps {
    by_id: HashMap<TenantId, Arc<Tenant>>,
    by_slug: HashMap<Slug, TenantId>,
    by_key: HashMap<ApiKeyHash, TenantId>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a tenant.
    pub fn insert(&self, tenant: Tenant) {
        let mut maps = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = maps.by_id.get(&tenant.id()).cloned() {
            maps.by_slug.remove(old.slug());
        }
        maps.by_slug.insert(tenant.slug().clone(), tenant.id());
        maps.by_id.insert(tenant.id(), Arc::new(tenant));
    }

    /// Registers an API key (by hash) for a tenant.
    pub fn insert_api_key(&self, hash: ApiKeyHash, tenant: TenantId) {
        let mut maps = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        maps.by_key.insert(hash, tenant);
    }

    /// Removes a tenant and its API keys.
    pub fn remove(&self, id: TenantId) {
        let mut maps = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = maps.by_id.remove(&id) {
            maps.by_slug.remove(old.slug());
        }
        maps.by_key.retain(|_, t| *t != id);
    }

    fn read<R>(&self, f: impl FnOnce(&Maps) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl TenantStore for InMemoryStore {
    async fn by_id(&self, id: TenantId) -> Result<Option<Arc<Tenant>>, StoreError> {
        Ok(self.read(|m| m.by_id.get(&id).cloned()))
    }

    async fn by_slug(&self, slug: &Slug) -> Result<Option<Arc<Tenant>>, StoreError> {
        Ok(self.read(|m| m.by_slug.get(slug).and_then(|id| m.by_id.get(id)).cloned()))
    }

    async fn by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<Arc<Tenant>>, StoreError> {
        Ok(self.read(|m| m.by_key.get(hash).and_then(|id| m.by_id.get(id)).cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Plan;

    #[tokio::test]
    async fn in_memory_store_finds_by_every_key_and_forgets_on_remove() {
        let store = InMemoryStore::new();
        let t =
            Tenant::builder(TenantId::new_v4(), Slug::new("acme").unwrap(), Plan::free()).build();
        let id = t.id();
        store.insert(t);
        store.insert_api_key(ApiKeyHash::of("k"), id);
        assert_eq!(store.by_id(id).await.unwrap().unwrap().id(), id);
        assert_eq!(
            store
                .by_slug(&Slug::new("acme").unwrap())
                .await
                .unwrap()
                .unwrap()
                .id(),
            id
        );
        assert_eq!(
            store
                .by_api_key(&ApiKeyHash::of("k"))
                .await
                .unwrap()
                .unwrap()
                .id(),
            id
        );
        assert!(store
            .by_api_key(&ApiKeyHash::of("other"))
            .await
            .unwrap()
            .is_none());
        store.remove(id);
        assert!(store.by_id(id).await.unwrap().is_none());
        assert!(store
            .by_slug(&Slug::new("acme").unwrap())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .by_api_key(&ApiKeyHash::of("k"))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn renaming_a_tenant_frees_its_old_slug() {
        let store = InMemoryStore::new();
        let id = TenantId::new_v4();
        store.insert(Tenant::builder(id, Slug::new("old").unwrap(), Plan::free()).build());
        store.insert(Tenant::builder(id, Slug::new("new").unwrap(), Plan::free()).build());
        assert!(store
            .by_slug(&Slug::new("old").unwrap())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .by_slug(&Slug::new("new").unwrap())
            .await
            .unwrap()
            .is_some());
    }

    #[test]
    fn store_error_keeps_its_source() {
        let io = std::io::Error::other("connection refused");
        let e = StoreError::new(StoreErrorKind::Unavailable, io);
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        assert!(StdError::source(&e)
            .unwrap()
            .to_string()
            .contains("refused"));
    }

    #[test]
    fn api_key_hash_debug_does_not_print_the_digest() {
        let h = ApiKeyHash::of("secret");
        assert!(!format!("{h:?}").contains(&h.to_hex()));
    }
}
