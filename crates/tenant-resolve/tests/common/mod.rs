//! Shared fixtures for the integration tests: tenants, a store that counts and can fail,
//! token minting and a one-call helper.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use tenantry_core::{
    ApiKeyHash, InMemoryStore, Plan, Slug, StoreError, StoreErrorKind, Tenant, TenantId,
    TenantStatus, TenantStore,
};
use tenantry_resolve::{CredentialKind, Principal, Rejection};

pub const SECRET: &[u8] = b"test-secret-for-tenantry-resolve-0123456789";
pub const ISS: &str = "https://auth.tenantry.test";
pub const AUD: &str = "tenantry-test";

pub const RSA_PRIVATE: &[u8] = include_bytes!("../keys/rsa_private.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../keys/rsa_public.pem");
pub const RSA2_PRIVATE: &[u8] = include_bytes!("../keys/rsa2_private.pem");
pub const RSA2_PUBLIC: &[u8] = include_bytes!("../keys/rsa2_public.pem");
pub const EC_PRIVATE: &[u8] = include_bytes!("../keys/ec_private.pem");
pub const EC_PUBLIC: &[u8] = include_bytes!("../keys/ec_public.pem");
pub const ED_PRIVATE: &[u8] = include_bytes!("../keys/ed_private.pem");
pub const ED_PUBLIC: &[u8] = include_bytes!("../keys/ed_public.pem");

/// A store over `InMemoryStore` that counts lookups, can be made to fail, to answer every
/// lookup with one fixed (wrong) record, and to answer only after yielding once (as a store
/// behind a network does), where the in-memory store answers at once.
#[derive(Clone, Default, Debug)]
pub struct TestStore {
    pub inner: InMemoryStore,
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    liar: Arc<Mutex<Option<Arc<Tenant>>>>,
    later: Arc<AtomicBool>,
}

impl TestStore {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
    pub fn always_answer(&self, t: Arc<Tenant>) {
        *self.liar.lock().unwrap() = Some(t);
    }
    pub fn answer_later(&self) {
        self.later.store(true, Ordering::SeqCst);
    }
    async fn before(&self) -> Result<Option<Arc<Tenant>>, StoreError> {
        if self.later.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                std::io::Error::other("connection refused"),
            ));
        }
        Ok(self.liar.lock().unwrap().clone())
    }
}

impl TenantStore for TestStore {
    async fn by_id(&self, id: TenantId) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.before().await? {
            return Ok(Some(t));
        }
        self.inner.by_id(id).await
    }
    async fn by_slug(&self, slug: &Slug) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.before().await? {
            return Ok(Some(t));
        }
        self.inner.by_slug(slug).await
    }
    async fn by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.before().await? {
            return Ok(Some(t));
        }
        self.inner.by_api_key(hash).await
    }
}

/// Tenants: acme and globex active, plus one suspended, one pending, one deleted; each has the
/// API key `key_for(slug)`.
pub struct World {
    pub store: TestStore,
    pub acme: TenantId,
    pub globex: TenantId,
    pub suspended: TenantId,
    pub pending: TenantId,
    pub deleted: TenantId,
}

pub fn key_for(slug: &str) -> String {
    format!("tk_{slug}_0123456789abcdef")
}

impl World {
    pub fn new() -> Self {
        let store = TestStore::default();
        let add = |slug: &str, status: TenantStatus| {
            let t = Tenant::builder(TenantId::new_v4(), Slug::new(slug).unwrap(), Plan::pro())
                .status(status)
                .build();
            let id = t.id();
            store.inner.insert(t);
            store
                .inner
                .insert_api_key(ApiKeyHash::of(&key_for(slug)), id);
            id
        };
        let acme = add("acme", TenantStatus::Active);
        let globex = add("globex", TenantStatus::Active);
        let suspended = add("suspended", TenantStatus::Suspended);
        let pending = add("pending", TenantStatus::Pending);
        let deleted = add("deleted", TenantStatus::Deleted);
        Self {
            store,
            acme,
            globex,
            suspended,
            pending,
            deleted,
        }
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Valid claims for `tenant` (an id or a slug).
pub fn claims(tenant: impl std::fmt::Display) -> Value {
    json!({
        "sub": "user-1",
        "tenant_id": tenant.to_string(),
        "iss": ISS,
        "aud": AUD,
        "exp": now() + 300,
        "roles": ["editor", "admin"],
    })
}

pub fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

pub fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

/// `token` with its signature changed: the first base64url character of the signature
/// segment replaced. All six bits of that character are data (the last character of a
/// segment may carry padding bits only), so the decoded signature always differs.
pub fn tampered_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("a JWS has three segments");
    let mut chars = signature.chars();
    let first = chars.next().expect("a non-empty signature");
    let replacement = if first == 'A' { 'B' } else { 'A' };
    format!("{signed}.{replacement}{}", chars.as_str())
}

/// base64url without padding, for hand-made tokens.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token from raw header and claims JSON and a raw signature.
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// The handler behind the layer: echoes what the layer put in the extensions.
pub async fn echo(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ext = req.extensions();
    let tenant = ext.get::<Arc<Tenant>>().expect("tenant in extensions");
    let kind = ext.get::<CredentialKind>().expect("credential kind");
    let principal = ext.get::<Principal>();
    let body = json!({
        "tenant": tenant.slug().as_str(),
        "kind": format!("{kind:?}"),
        "sub": principal.and_then(|p| p.subject()),
        "roles": principal.map(|p| p.roles().to_vec()),
    });
    Ok(Response::new(Full::new(Bytes::from(body.to_string()))))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub rejection: Option<Rejection>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
    pub fn tenant(&self) -> String {
        self.json()["tenant"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub async fn send<S>(svc: &S, req: Request<Full<Bytes>>) -> Reply
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>> + Clone,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    let res = svc.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let rejection = res.extensions().get::<Rejection>().cloned();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        rejection,
        body,
    }
}

pub fn req() -> http::request::Builder {
    Request::builder().uri("/")
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
