//! `TenantResolveLayer` and its builder.

use std::sync::Arc;

use http::header::HeaderName;
use tenantry_core::TenantStore;
use tower_layer::Layer;

use crate::config::{ConfigError, ConfigErrorKind};
use crate::resolve::Shared;
use crate::{DefaultRejection, HostRules, JwtVerifier, TenantResolve};

/// Applies [`TenantResolve`] to a service. Built with [`TenantResolveLayer::builder`].
///
/// Clones share one configuration and one store (behind an `Arc`).
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tenantry_core::{ApiKeyHash, InMemoryStore, Plan, Slug, Tenant, TenantId};
/// use tenantry_resolve::{HostRules, TenantResolveLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStore::new();
/// let acme = Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::pro()).build();
/// store.insert_api_key(ApiKeyHash::of("tk_live_0123456789abcdef"), acme.id());
/// store.insert(acme);
///
/// let layer = TenantResolveLayer::builder(store)
///     .subdomains(HostRules::new(["example.com"])?)
///     .api_keys()
///     .build()?;
/// let svc = ServiceBuilder::new().layer(layer).service_fn(|req: Request<Full<Bytes>>| async move {
///     let tenant = req.extensions().get::<std::sync::Arc<Tenant>>().unwrap();
///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(tenant.slug().to_string()))))
/// });
///
/// // A selector alone is refused...
/// let req = Request::builder().header("host", "acme.example.com").body(Full::default())?;
/// assert_eq!(svc.clone().oneshot(req).await?.status(), 401);
/// // ...a credential bound to the same tenant is served.
/// let req = Request::builder()
///     .header("host", "acme.example.com")
///     .header("x-api-key", "tk_live_0123456789abcdef")
///     .body(Full::default())?;
/// assert_eq!(svc.oneshot(req).await?.status(), 200);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TenantResolveLayer<St, R = DefaultRejection> {
    shared: Arc<Shared<St>>,
    rejection: R,
}

impl<St, R: Clone> Clone for TenantResolveLayer<St, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            rejection: self.rejection.clone(),
        }
    }
}

impl<St: TenantStore> TenantResolveLayer<St> {
    /// Starts building a layer that looks tenants up in `store`.
    pub fn builder(store: St) -> TenantResolveBuilder<St> {
        TenantResolveBuilder {
            store,
            hosts: None,
            tenant_header: Some(HeaderName::from_static("x-tenant-id")),
            jwt: None,
            api_key_header: None,
            bearer_api_keys: false,
            trusted_proxy: false,
            trust_bare_selector: false,
            error: None,
        }
    }
}

impl<St, R> TenantResolveLayer<St, R> {
    /// Replaces the rejection response; see [`ResponseForRejection`](crate::ResponseForRejection).
    pub fn with_rejection<R2>(self, rejection: R2) -> TenantResolveLayer<St, R2> {
        TenantResolveLayer {
            shared: self.shared,
            rejection,
        }
    }
}

impl<S, St, R: Clone> Layer<S> for TenantResolveLayer<St, R> {
    type Service = TenantResolve<S, St, R>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantResolve::from_parts(inner, Arc::clone(&self.shared), self.rejection.clone())
    }
}

/// Builds a [`TenantResolveLayer`]; see [`TenantResolveLayer::builder`].
///
/// Sources: a JWT ([`jwt`](Self::jwt)) and/or API keys ([`api_keys`](Self::api_keys)) as
/// credentials; subdomains ([`subdomains`](Self::subdomains)) and the `X-Tenant-ID` header
/// (on by default) as selectors.
#[derive(Debug)]
pub struct TenantResolveBuilder<St> {
    store: St,
    hosts: Option<HostRules>,
    tenant_header: Option<HeaderName>,
    jwt: Option<JwtVerifier>,
    api_key_header: Option<HeaderName>,
    bearer_api_keys: bool,
    trusted_proxy: bool,
    trust_bare_selector: bool,
    error: Option<ConfigError>,
}

fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
        ConfigError::new(
            ConfigErrorKind::InvalidName,
            format!("invalid header name {name:?}"),
        )
        .with_source(e)
    })?;
    // These carry other meanings; reusing one as a selector or key header would be a mistake.
    for reserved in [
        http::header::HOST,
        http::header::AUTHORIZATION,
        http::header::COOKIE,
        http::header::FORWARDED,
    ] {
        if parsed == reserved {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidName,
                format!("header {name:?} cannot be used here"),
            ));
        }
    }
    Ok(parsed)
}

impl<St: TenantStore> TenantResolveBuilder<St> {
    /// Selects tenants by subdomain under these base domains.
    pub fn subdomains(mut self, rules: HostRules) -> Self {
        self.hosts = Some(rules);
        self
    }

    /// Renames the tenant selector header (default `X-Tenant-ID`).
    pub fn tenant_header(mut self, name: &str) -> Self {
        match header_name(name) {
            Ok(n) => self.tenant_header = Some(n),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Ignores the tenant selector header entirely.
    pub fn without_tenant_header(mut self) -> Self {
        self.tenant_header = None;
        self
    }

    /// Accepts bearer JWTs verified by `verifier`.
    pub fn jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// Accepts API keys, in `X-API-Key` or as `Authorization: Bearer <key>` (a bearer value
    /// shaped like a JWT, `a.b.c`, goes to the JWT verifier when one is configured). Keys
    /// are looked up by SHA-256 hash; see [`ApiKeyHash`](tenantry_core::ApiKeyHash). The raw
    /// key is never compared with anything: the store sees only its digest, and digests
    /// compare in constant time, so response timing says nothing about a stored key. Keys
    /// outside 16..=512 visible ASCII characters are refused before the lookup.
    pub fn api_keys(mut self) -> Self {
        self.bearer_api_keys = true;
        if self.api_key_header.is_none() {
            self.api_key_header = Some(HeaderName::from_static("x-api-key"));
        }
        self
    }

    /// Renames the API key header (default `X-API-Key`) and enables API keys.
    pub fn api_key_header(mut self, name: &str) -> Self {
        self.bearer_api_keys = true;
        match header_name(name) {
            Ok(n) => self.api_key_header = Some(n),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Reads the host from `Forwarded: host=` or `X-Forwarded-Host` (the value added by the
    /// nearest proxy) instead of `Host`. Only for deployments where every request passes a
    /// proxy that sets these headers; otherwise a client could pick its subdomain. A
    /// selector still never grants access without a credential.
    pub fn trusted_proxy_forwarded_host(mut self) -> Self {
        self.trusted_proxy = true;
        self
    }

    /// **Dangerous.** Serves requests that carry a selector (subdomain or tenant header) but
    /// no credential, trusting the selector alone.
    ///
    /// Only correct behind a gateway that authenticates every request and sets or strips the
    /// selector itself. Without one, anyone can act as any tenant. Credentials that *are*
    /// present are still verified and must agree with the selectors.
    pub fn dangerously_trust_bare_selector(mut self) -> Self {
        self.trust_bare_selector = true;
        self
    }

    /// Builds the layer.
    ///
    /// Fails on an invalid header name, or when no request could ever be served: no JWT
    /// verifier, no API keys and bare selectors not trusted.
    pub fn build(self) -> Result<TenantResolveLayer<St>, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.jwt.is_none() && self.api_key_header.is_none() && !self.trust_bare_selector {
            return Err(ConfigError::new(
                ConfigErrorKind::NoCredentialSource,
                "configure a JWT verifier or API keys",
            ));
        }
        if self.trust_bare_selector && self.hosts.is_none() && self.tenant_header.is_none() {
            return Err(ConfigError::new(
                ConfigErrorKind::NoCredentialSource,
                "trusting bare selectors needs a subdomain or header selector",
            ));
        }
        if let (Some(a), Some(b)) = (&self.tenant_header, &self.api_key_header) {
            if a == b {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidName,
                    "the tenant header and the API key header must differ",
                ));
            }
        }
        if self.trust_bare_selector {
            tracing::warn!(
                target: "tenantry::resolve",
                "TenantResolveLayer trusts bare selectors: every request must pass an authenticating gateway"
            );
        }
        Ok(TenantResolveLayer {
            shared: Arc::new(Shared {
                store: self.store,
                hosts: self.hosts,
                tenant_header: self.tenant_header,
                jwt: self.jwt,
                api_key_header: self.api_key_header,
                bearer_api_keys: self.bearer_api_keys,
                trusted_proxy: self.trusted_proxy,
                trust_bare_selector: self.trust_bare_selector,
            }),
            rejection: DefaultRejection,
        })
    }
}
