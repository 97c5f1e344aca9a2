//! The Redis second level and pub/sub invalidation.
//!
//! # Keys (all under the configured prefix `P`)
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `P:{<tenant id>}:rec` | `<gen>\|<tenant as JSON>` or `<gen>\|-` (no such tenant) | ttl / negative ttl |
//! | `P:{<tenant id>}:inv` | the `gen` of the tenant's latest invalidation | longest ttl + grace |
//! | `P:slug:{<slug>}` | `<gen>\|<tenant id>` or `<gen>\|-` | ttl / negative ttl |
//! | `P:key:{<key hash, hex>}` | `<gen>\|<tenant id>` or `<gen>\|-` | ttl / negative ttl |
//! | `P:gen` | a counter, advanced by every invalidation | none |
//!
//! Keys are hash-tagged by tenant (or by the slug or key hash being resolved), so the two keys
//! read together (`rec` and `inv` of one tenant) share one Redis Cluster slot.
//!
//! # Why entries stay correct
//!
//! A load reads `gen` *before* asking the store, and stamps what it writes with it.
//! Invalidating tenant `T` advances `gen`, stores the new value as `T`'s `inv`, deletes `T`'s
//! record and announces `t:<id>` on the channel. An entry is used only if its stamp is at
//! least `inv` of the tenant it names: so an invalidation makes every entry for `T` stale at
//! once, whichever slug or key it was cached under, and a load that raced with the
//! invalidation (read `gen` before, wrote after) is ignored too. Each record also carries its
//! tenant id (inside the JSON), checked against the key it was read under.
//!
//! Negative entries under a slug or key name no tenant and simply expire (negative TTL);
//! [`CachedStore::invalidate_slug`](crate::CachedStore::invalidate_slug) and
//! [`invalidate_api_key`](crate::CachedStore::invalidate_api_key) delete them early.
//!
//! # Redis unavailable
//!
//! Every command is sent once (`max_attempts = 1`), fails fast while the connection is down,
//! and has a per-command timeout (fred has none by default). A failure is counted
//! (`redis_errors`), logged at `warn`, and the lookup goes to the store. While the listener is
//! disconnected, invalidations from other instances are missed: entries still expire by TTL,
//! and on reconnection the listener resubscribes and drops this instance's whole first level.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use fred::clients::{SubscriberClient, WithOptions};
use fred::prelude::*;
use tenantry_core::{ApiKeyHash, Slug, StoreError, StoreErrorKind, Tenant, TenantId, TenantStore};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::cached::Shared;
use crate::stats::Counters;
use crate::{ConfigError, ConfigErrorKind};

/// A write is dropped if its load read `gen` longer ago than this (an `inv` mark it should be
/// checked against may have expired since). Also how long `inv` marks outlive entries.
const GRACE: Duration = Duration::from_secs(30);

/// The Redis second level of a [`CachedStore`](crate::CachedStore): configuration.
///
/// Give it an initialised [`Client`] (with a reconnect policy, so it comes back after an
/// outage), and, to hear other instances' invalidations, an initialised [`SubscriberClient`]
/// built from the same configuration
/// ([`Builder::build_subscriber_client`](fred::types::Builder::build_subscriber_client)).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use fred::prelude::*;
/// use tenantry_cache::{CachedStore, RedisLevel};
/// use tenantry_core::InMemoryStore;
///
/// let mut builder = Builder::from_config(Config::from_url("redis://127.0.0.1:6379")?);
/// builder.set_policy(ReconnectPolicy::new_constant(0, 500));
/// let client = builder.build()?;
/// let subscriber = builder.build_subscriber_client()?;
/// client.init().await?;
/// subscriber.init().await?;
///
/// let cache = CachedStore::builder(InMemoryStore::new())
///     .redis(
///         RedisLevel::new(client, "myapp:tenants")
///             .subscriber(subscriber)
///             .command_timeout(Duration::from_millis(50)),
///     )
///     .build()?;
/// # let _ = cache; Ok(()) }
/// ```
pub struct RedisLevel {
    client: Client,
    subscriber: Option<SubscriberClient>,
    prefix: String,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
}

impl fmt::Debug for RedisLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLevel")
            .field("prefix", &self.prefix)
            .field("subscriber", &self.subscriber.is_some())
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLevel {
    /// A second level on `client`, with every key under `prefix` and invalidations on the
    /// channel `<prefix>:invalidations`. Defaults: TTL 300 s, negative TTL 5 s, command
    /// timeout 100 ms, no subscriber.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            subscriber: None,
            prefix: prefix.into(),
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
            timeout: Duration::from_millis(100),
        }
    }

    /// Listens for invalidations with this client (and resubscribes when it reconnects).
    pub fn subscriber(mut self, subscriber: SubscriberClient) -> Self {
        self.subscriber = Some(subscriber);
        self
    }

    /// How long a tenant stays in Redis (default 300 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long "no such tenant" stays in Redis (default 5 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The timeout of each Redis command (default 100 ms). Each command is sent once.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn into_parts(self) -> Result<(RedisShared, Option<SubscriberClient>), ConfigError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(ConfigError::new(ConfigErrorKind::InvalidPrefix));
        }
        if self.ttl.is_zero() || self.negative_ttl.is_zero() {
            return Err(ConfigError::new(ConfigErrorKind::ZeroTtl));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(ConfigErrorKind::ZeroTimeout));
        }
        if self.subscriber.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::new(ConfigErrorKind::NoRuntime));
        }
        let options = Options {
            timeout: Some(self.timeout),
            max_attempts: Some(1),
            fail_fast: true,
            ..Default::default()
        };
        let shared = RedisShared {
            client: self.client.with_options(&options),
            channel: format!("{}:invalidations", self.prefix),
            prefix: self.prefix,
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            subscribed: OnceLock::new(),
            listener: OnceLock::new(),
            down: AtomicBool::new(false),
        };
        Ok((shared, self.subscriber))
    }
}

/// Announces tenant changes to every instance's cache, from a process that serves no lookups
/// itself: an admin CLI, a billing webhook, a migration job.
///
/// It speaks the same protocol as [`CachedStore::invalidate`](crate::CachedStore::invalidate)
/// and friends (the generation bump that keeps racing writes out, the deleted Redis entries,
/// the message on `<prefix>:invalidations`), without a first level or a store to wrap. Build
/// it from the same [`RedisLevel`] settings (client and prefix) the servers use.
///
/// ```no_run
/// # async fn demo(client: fred::prelude::Client, tenant: tenantry_core::TenantId)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use tenantry_cache::RedisLevel;
///
/// let invalidator = RedisLevel::new(client, "tenantry:cache").invalidator()?;
/// // ... after changing the tenant's plan in the database:
/// invalidator.invalidate(tenant).await?;
/// # Ok(()) }
/// ```
pub struct Invalidator {
    shared: RedisShared,
    counters: Counters,
}

impl fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidator")
            .field("channel", &self.shared.channel)
            .finish_non_exhaustive()
    }
}

impl RedisLevel {
    /// An [`Invalidator`] with these settings (prefix, command timeout). A subscriber set on
    /// this level is not used: an invalidator only announces.
    pub fn invalidator(self) -> Result<Invalidator, ConfigError> {
        let (shared, _subscriber) = Self {
            subscriber: None,
            ..self
        }
        .into_parts()?;
        Ok(Invalidator {
            shared,
            counters: Counters::default(),
        })
    }
}

impl Invalidator {
    /// Tells every instance to forget `tenant` under its id, its slug and its API keys (as
    /// [`CachedStore::invalidate`](crate::CachedStore::invalidate) does) and deletes its
    /// Redis entries.
    pub async fn invalidate(&self, tenant: TenantId) -> Result<(), StoreError> {
        self.shared.invalidate_tenant(tenant, &self.counters).await
    }

    /// Tells every instance to forget what it cached under `slug`.
    pub async fn invalidate_slug(&self, slug: &Slug) -> Result<(), StoreError> {
        self.shared.invalidate_slug(slug, &self.counters).await
    }

    /// Tells every instance to forget what it cached under an API-key hash.
    pub async fn invalidate_api_key(&self, hash: &ApiKeyHash) -> Result<(), StoreError> {
        self.shared.invalidate_key(hash, &self.counters).await
    }
}

/// The outcome of a second-level lookup.
pub(crate) enum Lookup {
    /// Found: a tenant, or "no such tenant".
    Hit(Option<Arc<Tenant>>),
    /// Not found; the `gen` to stamp the store's answer with (`None`: Redis failed, do not
    /// write).
    Miss(Option<Gen>),
}

#[derive(Clone, Copy)]
pub(crate) struct Gen {
    value: u64,
    read_at: Instant,
}

pub(crate) struct RedisShared {
    client: WithOptions<Client>,
    prefix: String,
    channel: String,
    ttl: Duration,
    negative_ttl: Duration,
    subscribed: OnceLock<watch::Receiver<bool>>,
    listener: OnceLock<AbortHandle>,
    /// Whether the last command failed (for logging transitions only).
    down: AtomicBool,
}

impl Drop for RedisShared {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

fn store_error(e: Error) -> StoreError {
    let kind = match e.kind() {
        ErrorKind::Timeout => StoreErrorKind::Timeout,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::new(kind, e)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Splits `<gen>|<body>`.
fn split(value: &str) -> Option<(u64, &str)> {
    let (gen, body) = value.split_once('|')?;
    Some((gen.parse().ok()?, body))
}

impl RedisShared {
    fn rec_key(&self, id: TenantId) -> String {
        format!("{}:{{{id}}}:rec", self.prefix)
    }

    fn inv_key(&self, id: TenantId) -> String {
        format!("{}:{{{id}}}:inv", self.prefix)
    }

    fn gen_key(&self) -> String {
        format!("{}:gen", self.prefix)
    }

    fn slug_key(&self, slug: &Slug) -> String {
        format!("{}:slug:{{{slug}}}", self.prefix)
    }

    fn api_key_key(&self, hash: &ApiKeyHash) -> String {
        format!("{}:key:{{{}}}", self.prefix, hash.to_hex())
    }

    /// Counts a failed command; logs at `warn` when Redis goes from working to failing (and
    /// at `debug` after that, so an outage does not flood the logs).
    fn failed(&self, counters: &Counters, what: &str, e: &Error) {
        counters.redis_error();
        if self.down.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, prefix = %self.prefix, "tenant cache: Redis {what} failed; using the store");
        } else {
            tracing::warn!(error = %e, prefix = %self.prefix, "tenant cache: Redis unavailable ({what} failed); lookups go to the store until it answers again");
        }
    }

    /// Notes a command that worked; logs once when Redis is back.
    fn worked(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(prefix = %self.prefix, "tenant cache: Redis available again");
        }
    }

    async fn read_gen(&self, counters: &Counters) -> Option<Gen> {
        let read_at = Instant::now();
        match self.client.get::<Option<u64>, _>(self.gen_key()).await {
            Ok(value) => Some(Gen {
                value: value.unwrap_or(0),
                read_at,
            }),
            Err(e) => {
                self.failed(counters, "read", &e);
                None
            }
        }
    }

    /// Reads tenant `id`'s record, and checks it against its invalidation mark and, when the
    /// lookup came through a slug or key mapping, against that mapping's stamp.
    async fn read_record(
        &self,
        id: TenantId,
        mapping_gen: Option<u64>,
        counters: &Counters,
    ) -> Result<Option<Option<Arc<Tenant>>>, ()> {
        let values: Vec<Option<String>> = match self
            .client
            .mget(vec![self.rec_key(id), self.inv_key(id)])
            .await
        {
            Ok(v) => {
                self.worked();
                v
            }
            Err(e) => {
                self.failed(counters, "read", &e);
                return Err(());
            }
        };
        let mut values = values.into_iter();
        let (rec, inv) = (values.next().flatten(), values.next().flatten());
        let inv: u64 = inv.and_then(|v| v.parse().ok()).unwrap_or(0);
        if mapping_gen.is_some_and(|g| g < inv) {
            return Ok(None);
        }
        let Some((gen, body)) = rec.as_deref().and_then(split) else {
            return Ok(None);
        };
        if gen < inv {
            return Ok(None);
        }
        if body == "-" {
            return Ok(Some(None));
        }
        match serde_json::from_str::<Tenant>(body) {
            Ok(t) if t.id() == id => Ok(Some(Some(Arc::new(t)))),
            Ok(t) => {
                tracing::warn!(key = %id, found = %t.id(), "tenant cache: Redis record names another tenant; ignored");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(key = %id, error = %e, "tenant cache: unreadable Redis record; ignored");
                Ok(None)
            }
        }
    }

    pub(crate) async fn by_id(&self, id: TenantId, counters: &Counters) -> Lookup {
        match self.read_record(id, None, counters).await {
            Ok(Some(hit)) => {
                counters.redis_hit();
                Lookup::Hit(hit)
            }
            Ok(None) => Lookup::Miss(self.read_gen(counters).await),
            Err(()) => Lookup::Miss(None),
        }
    }

    /// A lookup through a mapping key (slug or API-key hash) to a tenant record.
    async fn by_mapping(
        &self,
        key: String,
        check: impl FnOnce(&Tenant) -> bool,
        counters: &Counters,
    ) -> Lookup {
        let mapping = match self.client.get::<Option<String>, _>(key).await {
            Ok(m) => {
                self.worked();
                m
            }
            Err(e) => {
                self.failed(counters, "read", &e);
                return Lookup::Miss(None);
            }
        };
        if let Some((gen, body)) = mapping.as_deref().and_then(split) {
            if body == "-" {
                counters.redis_hit();
                return Lookup::Hit(None);
            }
            if let Ok(id) = body.parse::<TenantId>() {
                match self.read_record(id, Some(gen), counters).await {
                    Ok(Some(Some(t))) if check(&t) => {
                        counters.redis_hit();
                        return Lookup::Hit(Some(t));
                    }
                    Ok(_) => {}
                    Err(()) => return Lookup::Miss(None),
                }
            }
        }
        Lookup::Miss(self.read_gen(counters).await)
    }

    pub(crate) async fn by_slug(&self, slug: &Slug, counters: &Counters) -> Lookup {
        self.by_mapping(self.slug_key(slug), |t| t.slug() == slug, counters)
            .await
    }

    pub(crate) async fn by_key(&self, hash: &ApiKeyHash, counters: &Counters) -> Lookup {
        self.by_mapping(self.api_key_key(hash), |_| true, counters)
            .await
    }

    async fn set(&self, key: String, value: String, ttl: Duration, counters: &Counters) {
        if let Err(e) = self
            .client
            .set::<(), _, _>(key, value, Some(Expiration::PX(millis(ttl))), None, false)
            .await
        {
            self.failed(counters, "write", &e);
        }
    }

    async fn put_record(&self, id: TenantId, tenant: Option<&Tenant>, gen: Gen, c: &Counters) {
        let (body, ttl) = match tenant {
            Some(t) => match serde_json::to_string(t) {
                Ok(json) => (json, self.ttl),
                Err(_) => return,
            },
            None => ("-".to_owned(), self.negative_ttl),
        };
        self.set(self.rec_key(id), format!("{}|{body}", gen.value), ttl, c)
            .await;
    }

    pub(crate) async fn put_by_id(
        &self,
        id: TenantId,
        tenant: Option<&Tenant>,
        gen: Gen,
        c: &Counters,
    ) {
        if gen.read_at.elapsed() < GRACE {
            self.put_record(id, tenant, gen, c).await;
        }
    }

    async fn put_mapping(&self, key: String, tenant: Option<&Tenant>, gen: Gen, c: &Counters) {
        if gen.read_at.elapsed() >= GRACE {
            return;
        }
        match tenant {
            Some(t) => {
                self.put_record(t.id(), Some(t), gen, c).await;
                self.set(key, format!("{}|{}", gen.value, t.id()), self.ttl, c)
                    .await;
            }
            None => {
                self.set(key, format!("{}|-", gen.value), self.negative_ttl, c)
                    .await;
            }
        }
    }

    pub(crate) async fn put_by_slug(
        &self,
        slug: &Slug,
        tenant: Option<&Tenant>,
        gen: Gen,
        c: &Counters,
    ) {
        self.put_mapping(self.slug_key(slug), tenant, gen, c).await;
    }

    pub(crate) async fn put_by_key(
        &self,
        hash: &ApiKeyHash,
        tenant: Option<&Tenant>,
        gen: Gen,
        c: &Counters,
    ) {
        self.put_mapping(self.api_key_key(hash), tenant, gen, c)
            .await;
    }

    async fn publish(&self, message: String, c: &Counters) -> Result<(), StoreError> {
        self.client
            .publish::<(), _, _>(self.channel.as_str(), message)
            .await
            .map_err(|e| {
                self.failed(c, "publish", &e);
                store_error(e)
            })
    }

    pub(crate) async fn invalidate_tenant(
        &self,
        id: TenantId,
        c: &Counters,
    ) -> Result<(), StoreError> {
        let result: Result<(), Error> = async {
            let gen: u64 = self.client.incr(self.gen_key()).await?;
            let mark_ttl = self.ttl.max(self.negative_ttl).saturating_add(GRACE);
            self.client
                .set::<(), _, _>(
                    self.inv_key(id),
                    gen,
                    Some(Expiration::PX(millis(mark_ttl))),
                    None,
                    false,
                )
                .await?;
            self.client.del::<(), _>(self.rec_key(id)).await
        }
        .await;
        if let Err(e) = result {
            self.failed(c, "invalidation", &e);
            return Err(store_error(e));
        }
        self.publish(format!("t:{id}"), c).await
    }

    pub(crate) async fn invalidate_slug(
        &self,
        slug: &Slug,
        c: &Counters,
    ) -> Result<(), StoreError> {
        if let Err(e) = self.client.del::<(), _>(self.slug_key(slug)).await {
            self.failed(c, "invalidation", &e);
            return Err(store_error(e));
        }
        self.publish(format!("s:{slug}"), c).await
    }

    pub(crate) async fn invalidate_key(
        &self,
        hash: &ApiKeyHash,
        c: &Counters,
    ) -> Result<(), StoreError> {
        if let Err(e) = self.client.del::<(), _>(self.api_key_key(hash)).await {
            self.failed(c, "invalidation", &e);
            return Err(store_error(e));
        }
        self.publish(format!("k:{}", hash.to_hex()), c).await
    }

    pub(crate) fn is_subscribed(&self) -> bool {
        self.subscribed.get().is_some_and(|rx| *rx.borrow())
    }

    pub(crate) async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let Some(rx) = self.subscribed.get() else {
            return false;
        };
        let mut rx = rx.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(crate) fn start_listener<S: TenantStore>(
        &self,
        subscriber: SubscriberClient,
        shared: Weak<Shared<S>>,
    ) -> Result<(), ConfigError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError::new(ConfigErrorKind::NoRuntime))?;
        let (tx, rx) = watch::channel(false);
        let _ = self.subscribed.set(rx);
        let task = runtime.spawn(listen(subscriber, self.channel.clone(), shared, tx));
        let _ = self.listener.set(task.abort_handle());
        Ok(())
    }
}

async fn subscribe_until_done(subscriber: &SubscriberClient, channel: &str, again: bool) {
    loop {
        let result = if again {
            subscriber.resubscribe_all().await
        } else {
            subscriber.subscribe(channel).await
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, channel, "tenant cache: cannot subscribe to invalidations; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn listen<S: TenantStore>(
    subscriber: SubscriberClient,
    channel: String,
    shared: Weak<Shared<S>>,
    ready: watch::Sender<bool>,
) {
    // Receivers first, so nothing published after the subscription is missed.
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    subscribe_until_done(&subscriber, &channel, false).await;
    ready.send_replace(true);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    if &*message.channel != channel.as_str() {
                        continue;
                    }
                    let Some(shared) = shared.upgrade() else { return };
                    if let Some(text) = message.value.as_str() {
                        apply(&shared, &text).await;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let Some(shared) = shared.upgrade() else { return };
                    tracing::warn!(missed, "tenant cache: invalidation messages lost; dropping the first level");
                    shared.clear_local();
                }
                Err(RecvError::Closed) => return,
            },
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    ready.send_replace(false);
                    subscribe_until_done(&subscriber, &channel, true).await;
                    let Some(shared) = shared.upgrade() else { return };
                    // Invalidations published while disconnected were missed.
                    tracing::info!("tenant cache: resubscribed to invalidations; dropping the first level");
                    shared.clear_local();
                    ready.send_replace(true);
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

async fn apply<S: TenantStore>(shared: &Shared<S>, text: &str) {
    let Some((kind, arg)) = text.split_once(':') else {
        return;
    };
    match kind {
        "t" => {
            if let Ok(id) = arg.parse::<TenantId>() {
                shared.counters.remote_invalidation();
                shared.invalidate_local(id).await;
            }
        }
        "s" => {
            if let Ok(slug) = Slug::new(arg) {
                shared.counters.remote_invalidation();
                shared.invalidate_local_slug(&slug).await;
            }
        }
        "k" => {
            let mut bytes = [0u8; 32];
            if hex::decode_to_slice(arg, &mut bytes).is_ok() {
                shared.counters.remote_invalidation();
                shared
                    .invalidate_local_key(&ApiKeyHash::from_bytes(bytes))
                    .await;
            }
        }
        _ => {}
    }
}
