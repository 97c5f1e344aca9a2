//! One check shared by the stable stress test (`tests/parse_stress.rs`) and the cargo-fuzz
//! target (`fuzz/fuzz_targets/resolve_inputs.rs`): arbitrary bytes become a host, a tenant
//! header, an Authorization value, an API key and a Forwarded value; the parsers and the whole
//! layer must never panic, never answer 5xx with a healthy store, and never serve a tenant the
//! credential does not name or a selector contradicts.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use jsonwebtoken::{EncodingKey, Header};
use tenantry_core::{ApiKeyHash, InMemoryStore, Plan, Slug, Tenant, TenantId, TenantStatus};
use tenantry_resolve::{HostRules, JwtVerifier, TenantRef, TenantResolveLayer};
use tower::{Layer, ServiceExt};

const SECRET: &[u8] = b"fuzz-secret-for-tenantry-resolve-0123456789";
pub const API_KEY: &str = "tk_acme_0123456789abcdef";

type Inner = tower::util::BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

pub struct Harness {
    svc: tenantry_resolve::TenantResolve<Inner, InMemoryStore>,
    trusting: tenantry_resolve::TenantResolve<Inner, InMemoryStore>,
    rules: HostRules,
    acme: TenantId,
    token: String,
}

impl Harness {
    pub fn new() -> Self {
        let store = InMemoryStore::new();
        let acme =
            Tenant::builder(TenantId::new_v4(), Slug::new("acme").unwrap(), Plan::pro()).build();
        let acme_id = acme.id();
        store.insert_api_key(ApiKeyHash::of(API_KEY), acme_id);
        store.insert(acme);
        store.insert(
            Tenant::builder(
                TenantId::new_v4(),
                Slug::new("globex").unwrap(),
                Plan::pro(),
            )
            .build(),
        );
        store.insert(
            Tenant::builder(TenantId::new_v4(), Slug::new("gone").unwrap(), Plan::pro())
                .status(TenantStatus::Deleted)
                .build(),
        );
        let rules = HostRules::new(["example.com", "example.org"]).unwrap();
        let verifier = JwtVerifier::builder()
            .hs256(SECRET)
            .issuer("iss")
            .audience("aud")
            .build()
            .unwrap();
        let inner: Inner = tower::util::BoxCloneService::new(tower::service_fn(
            |req: Request<Full<Bytes>>| async move {
                let mut res = Response::new(Full::default());
                if let Some(t) = req.extensions().get::<Arc<Tenant>>() {
                    res.extensions_mut().insert(t.clone());
                }
                Ok::<_, Infallible>(res)
            },
        ));
        let build = |trust: bool| {
            let mut b = TenantResolveLayer::builder(store.clone())
                .subdomains(rules.clone())
                .jwt(verifier.clone())
                .api_keys()
                .trusted_proxy_forwarded_host();
            if trust {
                b = b.dangerously_trust_bare_selector();
            }
            b.build().unwrap().layer(inner.clone())
        };
        let claims = serde_json::json!({
            "tenant_id": acme_id.to_string(), "iss": "iss", "aud": "aud",
            "exp": jsonwebtoken::get_current_timestamp() + 3600,
        });
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        Self {
            svc: build(false),
            trusting: build(true),
            rules,
            acme: acme_id,
            token,
        }
    }

    /// Runs every parser and the layer on `data`; panics if an invariant breaks. Returns how
    /// many of the two layers (strict, trusting) served the request.
    pub fn check(&self, data: &[u8]) -> usize {
        let mut fields = data.split(|&b| b == 0xFF);
        let mut next = || fields.next().unwrap_or_default();
        let (host, selector, auth, key, forwarded) = (next(), next(), next(), next(), next());

        // The parsers on their own.
        let host_text = String::from_utf8_lossy(host);
        if let Some(slug) = self.rules.tenant_slug(&host_text) {
            let lower = host_text.to_ascii_lowercase();
            assert!(
                lower.contains(&format!("{slug}.example.com"))
                    || lower.contains(&format!("{slug}.example.org")),
                "{host_text:?} selected {slug}"
            );
        }
        let _ = TenantRef::parse(&String::from_utf8_lossy(selector));

        // The layer, with `$T` standing for a valid token and `$K` for a valid API key.
        let auth = substitute(auth, b"$T", self.token.as_bytes());
        let key = substitute(key, b"$K", API_KEY.as_bytes());
        let mut req = Request::builder().uri("/");
        for (name, value) in [
            ("host", host),
            ("x-tenant-id", selector),
            ("authorization", &auth[..]),
            ("x-api-key", &key[..]),
            ("forwarded", forwarded),
        ] {
            if value.is_empty() {
                continue;
            }
            if let Ok(v) = HeaderValue::from_bytes(value) {
                req = req.header(name, v);
            }
        }
        let Ok(req) = req.body(Full::<Bytes>::default()) else {
            return 0;
        };
        let mut served = 0;
        for (svc, trusting) in [(&self.svc, false), (&self.trusting, true)] {
            let mut copy = Request::new(Full::<Bytes>::default());
            *copy.headers_mut() = req.headers().clone();
            let res = svc
                .clone()
                .oneshot(copy)
                .now_or_never()
                .expect("no I/O: completes at once")
                .unwrap();
            let status = res.status().as_u16();
            assert!(matches!(status, 200 | 400 | 401 | 403), "status {status}");
            if status == 200 {
                served += 1;
                let tenant = res
                    .extensions()
                    .get::<Arc<Tenant>>()
                    .expect("served with a tenant");
                assert!(tenant.is_active());
                let credential = !auth.is_empty() || !key.is_empty();
                if !trusting {
                    assert!(credential, "served without a credential");
                }
                if credential && !trusting {
                    // The only credentials that exist name acme.
                    assert_eq!(tenant.id(), self.acme);
                }
                if let Some(sel) = req
                    .headers()
                    .get("x-tenant-id")
                    .and_then(|v| v.to_str().ok())
                {
                    let parsed = TenantRef::parse(sel.trim_matches([' ', '\t']))
                        .expect("served with a bad selector");
                    assert!(
                        parsed.names(tenant),
                        "selector {sel:?} contradicts {tenant:?}"
                    );
                }
            }
        }
        served
    }
}

fn substitute(field: &[u8], marker: &[u8], with: &[u8]) -> Vec<u8> {
    match field.windows(marker.len()).position(|w| w == marker) {
        Some(i) => [&field[..i], with, &field[i + marker.len()..]].concat(),
        None => field.to_vec(),
    }
}
