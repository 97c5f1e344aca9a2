//! Shared helpers of the `api_*` tests: a documents-api server started in process against a
//! `TestDb` (and optionally a `TestRedis`), tenants with both credential kinds, requests with
//! every selector, and the problem+json assertions every rejection must pass.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use documents_api::{admin, server, Running, Settings};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tenantry_core::TenantId;
use tenantry_testkit::{TestDb, TestRedis};

/// The HS256 secret of every test server (32+ bytes).
pub const SECRET: &str = "api-tests-secret-that-is-long-enough-0123456789";
/// The base domain of the subdomain selector.
pub const BASE_DOMAIN: &str = "example.test";
/// Issuer and audience the servers expect.
pub const ISSUER: &str = "tenantry-dev";
pub const AUDIENCE: &str = "documents-api";

/// Settings for a server on `db` (and `redis`, with its per-test prefix), on a free port.
pub fn settings(db: &TestDb, redis: Option<&TestRedis>) -> Settings {
    Settings {
        database_url: Some(db.app_url()),
        database_admin_url: Some(db.admin_url()),
        redis_url: redis.map(|r| r.url().to_owned()),
        redis_prefix: redis.map_or_else(
            || format!("api-test-{}", uuid::Uuid::new_v4().simple()),
            |r| r.prefix().to_owned(),
        ),
        jwt_secret: Some(SECRET.to_owned()),
        jwt_public_key_file: None,
        jwt_algorithm: None,
        jwt_cache_seconds: 60,
        jwt_issuer: ISSUER.to_owned(),
        jwt_audience: AUDIENCE.to_owned(),
        base_domain: Some(BASE_DOMAIN.to_owned()),
        db_pool_size: 8,
        bind: "127.0.0.1:0".parse().expect("address"),
    }
}

/// A server running in this process, and a client for it.
pub struct Server {
    pub running: Running,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    pub async fn start(settings: Settings) -> Self {
        let running = tokio::time::timeout(Duration::from_secs(30), server::start(settings, false))
            .await
            .expect("server start timed out")
            .expect("server starts");
        let base = format!("http://{}", running.addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self {
            running,
            base,
            http,
        }
    }

    /// A request to `path` (starting with `/`), no credential.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A request as `tenant` with `cred`, selecting it (or another tenant) with `sel`.
    pub fn as_tenant(
        &self,
        method: Method,
        path: &str,
        tenant: &ApiTenant,
        cred: Cred,
        sel: &Sel,
    ) -> RequestBuilder {
        let rb = tenant.credential(self.request(method, path), cred);
        sel.apply(rb)
    }

    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.running.stop())
            .await
            .expect("server stop timed out")
            .expect("server stops cleanly");
    }
}

/// How a request proves who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cred {
    /// `Authorization: Bearer <JWT>`.
    Jwt,
    /// `Authorization: Bearer <API key>`.
    ApiKeyBearer,
    /// `X-API-Key: <API key>`.
    ApiKeyHeader,
}

pub const CREDS: [Cred; 3] = [Cred::Jwt, Cred::ApiKeyBearer, Cred::ApiKeyHeader];

/// Which tenant a request says it means, besides its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sel {
    None,
    /// `Host: <slug>.example.test`.
    Subdomain(String),
    /// `X-Tenant-ID: <id or slug>`.
    Header(String),
    /// Both.
    Both(String, String),
}

impl Sel {
    pub fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Sel::None => rb,
            Sel::Subdomain(slug) => rb.header("host", format!("{slug}.{BASE_DOMAIN}")),
            Sel::Header(v) => rb.header("x-tenant-id", v),
            Sel::Both(slug, v) => rb
                .header("host", format!("{slug}.{BASE_DOMAIN}"))
                .header("x-tenant-id", v),
        }
    }

    /// Every way of selecting `t` itself: none, subdomain, header by slug and by id, both.
    pub fn all_for(t: &ApiTenant) -> Vec<Sel> {
        vec![
            Sel::None,
            Sel::Subdomain(t.slug.clone()),
            Sel::Header(t.slug.clone()),
            Sel::Header(t.id.to_string()),
            Sel::Both(t.slug.clone(), t.id.to_string()),
        ]
    }
}

/// A tenant with a JWT and an API key.
#[derive(Debug, Clone)]
pub struct ApiTenant {
    pub id: TenantId,
    pub slug: String,
    pub token: String,
    pub api_key: String,
}

impl ApiTenant {
    pub fn credential(&self, rb: RequestBuilder, cred: Cred) -> RequestBuilder {
        match cred {
            Cred::Jwt => rb.bearer_auth(&self.token),
            Cred::ApiKeyBearer => rb.bearer_auth(&self.api_key),
            Cred::ApiKeyHeader => rb.header("x-api-key", &self.api_key),
        }
    }
}

/// A unique slug starting with `name`.
pub fn slug(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Creates a tenant (through the admin functions), a JWT and an API key for it.
pub async fn tenant(db: &TestDb, name: &str, plan: &str, features: &[&str]) -> ApiTenant {
    let slug = slug(name);
    let features: Vec<String> = features.iter().map(|f| (*f).to_owned()).collect();
    let row = admin::create_tenant(db.admin(), &slug, plan, &features)
        .await
        .expect("create tenant");
    let mut admin_client = db.connect_admin().await;
    let (_, api_key) = admin::create_api_key(&mut admin_client, &slug)
        .await
        .expect("create api key");
    ApiTenant {
        id: row.id,
        slug,
        token: token_for(row.id),
        api_key,
    }
}

/// A valid JWT for `id`, signed with the servers' secret.
pub fn token_for(id: TenantId) -> String {
    admin::sign_token(
        SECRET,
        ISSUER,
        AUDIENCE,
        id,
        "api-test-user",
        Duration::from_secs(3600),
    )
    .expect("sign token")
}

/// Gives `id` a quota of `n` requests per minute with a burst of `n`.
pub async fn set_quota(db: &TestDb, id: TenantId, n: u32) {
    let overrides = serde_json::json!({ "requests_per_minute": n, "burst": n });
    db.admin()
        .execute(
            "UPDATE tenants SET limit_overrides = $2 WHERE id = $1",
            &[id.as_uuid(), &overrides],
        )
        .await
        .expect("set quota");
}

/// Sends and reads the body as JSON (Null when empty).
pub async fn send(rb: RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let res = rb.send().await.expect("request sent");
    read(res).await
}

pub async fn read(res: Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "status {status}: body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            )
        })
    };
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "500: {body}");
    (status, headers, body)
}

/// Asserts a problem+json answer with `status` and `code`; returns the body.
pub fn assert_problem(
    what: &str,
    got: &(StatusCode, reqwest::header::HeaderMap, Value),
    status: u16,
    code: &str,
) -> Value {
    let (s, _, body) = got;
    assert_eq!(s.as_u16(), status, "{what}: status; body {body}");
    assert_problem_shape(what, got);
    assert_eq!(body["code"], code, "{what}: code; body {body}");
    body.clone()
}

/// Asserts a 4xx problem+json answer (any 4xx, any code).
pub fn assert_problem_shape(what: &str, got: &(StatusCode, reqwest::header::HeaderMap, Value)) {
    let (s, headers, body) = got;
    assert!(
        s.is_client_error(),
        "{what}: expected a 4xx, got {s}: {body}"
    );
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "{what}: content-type {ct:?}, body {body}"
    );
    assert!(
        body["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: no `code` in {body}"
    );
    assert_eq!(
        body["status"].as_u64(),
        Some(u64::from(s.as_u16())),
        "{what}: {body}"
    );
}

/// Everything a request could write: documents, revisions and webhooks, as one text.
pub async fn snapshot(db: &TestDb) -> String {
    let row = db
        .admin()
        .query_one(
            "SELECT \
             (SELECT coalesce(string_agg(concat_ws('|', tenant_id, id, title, md5(content), \
                 created_at, updated_at), ',' ORDER BY id), '') FROM documents), \
             (SELECT coalesce(string_agg(concat_ws('|', tenant_id, document_id, title, \
                 md5(content)), ',' ORDER BY document_id, title, content), '') \
                 FROM document_revisions), \
             (SELECT count(*) FROM document_revisions)::text, \
             (SELECT coalesce(string_agg(concat_ws('|', tenant_id, id, url, events), ',' \
                 ORDER BY id), '') FROM webhooks)",
            &[],
        )
        .await
        .expect("snapshot");
    format!(
        "documents: {}\nrevisions: {} ({})\nwebhooks: {}",
        row.get::<_, String>(0),
        row.get::<_, String>(1),
        row.get::<_, String>(2),
        row.get::<_, String>(3)
    )
}

/// Base64url without padding (JWT segments).
pub fn b64url_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (val(*c) << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The claims of a JWT (unverified).
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&b64url_decode(payload)).expect("JSON claims")
}

/// `token` with its claims replaced, keeping its header and signature (a forgery).
pub fn jwt_with_claims(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let _ = parts.next();
    let sig = parts.next().unwrap();
    format!(
        "{header}.{}.{sig}",
        b64url_encode(serde_json::to_string(claims).unwrap().as_bytes())
    )
}

/// Asserts a problem+json answer of any status (4xx or 5xx other than 500) with a `code`.
pub fn assert_problem_shape_any(what: &str, got: &(StatusCode, reqwest::header::HeaderMap, Value)) {
    let (s, headers, body) = got;
    assert_ne!(*s, StatusCode::INTERNAL_SERVER_ERROR, "{what}: {body}");
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "{what}: content-type {ct:?}, body {body}"
    );
    assert!(
        body["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: no `code` in {body}"
    );
}
