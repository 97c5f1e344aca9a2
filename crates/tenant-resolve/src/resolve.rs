//! The binding rules: read the sources, verify the credential, make them agree, look up.
//!
//! Resolution runs in two phases. [`Shared::prepare`] is synchronous and does no I/O: it reads
//! the selectors, verifies a JWT or checks an API key's shape, and refuses anything that can
//! be refused without the store. Only then does [`Shared::lookup`] ask the store, once.

use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderValue, Request};
use tenantry_core::{ApiKeyHash, Tenant, TenantStore};

use crate::{HostRules, JwtVerifier, Principal, Rejection, RejectionKind, TenantRef};

/// Configuration and store shared by every clone of the layer and its services.
#[derive(Debug)]
pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) hosts: Option<HostRules>,
    pub(crate) tenant_header: Option<HeaderName>,
    pub(crate) jwt: Option<JwtVerifier>,
    pub(crate) api_key_header: Option<HeaderName>,
    pub(crate) bearer_api_keys: bool,
    pub(crate) trusted_proxy: bool,
    pub(crate) trust_bare_selector: bool,
}

/// How the tenant of a request was established. Put in the request extensions next to the
/// tenant.
///
/// ```
/// # use tenantry_resolve::CredentialKind;
/// fn audit(kind: CredentialKind) -> &'static str {
///     match kind {
///         CredentialKind::Jwt => "user token",
///         CredentialKind::ApiKey => "api key",
///         _ => "trusted gateway",
///     }
/// }
/// # let _ = audit;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// A verified JWT; a [`Principal`] is in the extensions too.
    Jwt,
    /// An API key found in the store.
    ApiKey,
    /// No credential: a bare selector trusted because of
    /// [`dangerously_trust_bare_selector`](crate::TenantResolveBuilder::dangerously_trust_bare_selector).
    TrustedSelector,
}

/// Which selector named a tenant; for logs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SelectorSource {
    Host,
    Header,
}

impl SelectorSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Host => "subdomain",
            Self::Header => "tenant header",
        }
    }
}

pub(crate) enum Credential {
    Jwt {
        tenant: TenantRef,
        principal: Principal,
    },
    ApiKey(ApiKeyHash),
    None,
}

/// What `prepare` found: everything the lookup needs, nothing borrowed from the request.
pub(crate) struct Prepared {
    credential: Credential,
    selectors: [Option<(SelectorSource, TenantRef)>; 2],
}

/// The outcome of a successful resolution.
pub(crate) struct Resolved {
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) principal: Option<Principal>,
    pub(crate) kind: CredentialKind,
}

fn invalid_selector(reason: &'static str) -> Rejection {
    Rejection::new(RejectionKind::InvalidSelector, reason)
}

fn invalid_credentials(reason: &'static str) -> Rejection {
    Rejection::new(RejectionKind::InvalidCredentials, reason)
}

fn mismatch(a: &str, a_names: &TenantRef, b: &str, b_names: &TenantRef) -> Rejection {
    // A security event: someone holds one tenant's credential and asks for another tenant.
    // Both refs are validated ids or LDH slugs, safe to log.
    tracing::warn!(
        target: "tenantry::resolve",
        first_source = a,
        first_tenant = %a_names,
        second_source = b,
        second_tenant = %b_names,
        "tenant mismatch: request sources name different tenants"
    );
    Rejection::new(
        RejectionKind::TenantMismatch,
        "sources name different tenants",
    )
}

/// At most one value of `name`, readable as visible ASCII.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    err: fn(&'static str) -> Rejection,
    several: &'static str,
    unreadable: &'static str,
) -> Result<Option<&'a str>, Rejection> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(err(several));
    }
    first.to_str().map(Some).map_err(|_| err(unreadable))
}

impl<St> Shared<St> {
    /// Phase one: everything that needs no store. See the module docs.
    pub(crate) fn prepare<B>(&self, req: &Request<B>) -> Result<Prepared, Rejection> {
        let headers = req.headers();
        let host = self.host_selector(req)?;
        let header = self.header_selector(headers)?;
        let credential = self.credential(headers)?;

        if let (Some(h), Some(x)) = (&host, &header) {
            if h.agrees_with(x) == Some(false) {
                return Err(mismatch("subdomain", h, "tenant header", x));
            }
        }
        let selectors = [
            host.map(|t| (SelectorSource::Host, t)),
            header.map(|t| (SelectorSource::Header, t)),
        ];
        match &credential {
            Credential::Jwt { tenant, .. } => {
                for (source, sel) in selectors.iter().flatten() {
                    if tenant.agrees_with(sel) == Some(false) {
                        return Err(mismatch("token", tenant, source.as_str(), sel));
                    }
                }
            }
            Credential::ApiKey(_) => {}
            Credential::None => {
                if !self.trust_bare_selector || selectors.iter().all(Option::is_none) {
                    return Err(Rejection::new(
                        RejectionKind::TenantRequired,
                        "no credential presented",
                    ));
                }
            }
        }
        Ok(Prepared {
            credential,
            selectors,
        })
    }

    fn host_selector<B>(&self, req: &Request<B>) -> Result<Option<TenantRef>, Rejection> {
        let Some(rules) = &self.hosts else {
            return Ok(None);
        };
        let forwarded = if self.trusted_proxy {
            forwarded_host(req.headers())?
        } else {
            None
        };
        let host = match forwarded {
            Some(h) => Some(h),
            None => request_host(req)?,
        };
        Ok(host.and_then(|h| rules.tenant_slug(h)).map(TenantRef::Slug))
    }

    fn header_selector(&self, headers: &HeaderMap) -> Result<Option<TenantRef>, Rejection> {
        let Some(name) = &self.tenant_header else {
            return Ok(None);
        };
        let Some(value) = single(
            headers,
            name,
            invalid_selector,
            "several tenant header values",
            "unreadable tenant header",
        )?
        else {
            return Ok(None);
        };
        TenantRef::parse(value.trim_matches([' ', '\t']))
            .map(Some)
            .ok_or_else(|| invalid_selector("the tenant header is neither a tenant id nor a slug"))
    }

    fn credential(&self, headers: &HeaderMap) -> Result<Credential, Rejection> {
        let bearer = match single(
            headers,
            &AUTHORIZATION,
            invalid_credentials,
            "several Authorization headers",
            "unreadable Authorization header",
        )? {
            Some(value) => bearer_token(value)?,
            None => None,
        };
        let api_key = match &self.api_key_header {
            Some(name) => single(
                headers,
                name,
                invalid_credentials,
                "several API key headers",
                "unreadable API key header",
            )?,
            None => None,
        };
        match (bearer, api_key) {
            (Some(_), Some(_)) => Err(invalid_credentials("more than one credential")),
            (Some(token), None) => match &self.jwt {
                Some(jwt) if looks_like_jwt(token) => {
                    let (tenant, principal) = jwt.verify(token).map_err(invalid_credentials)?;
                    Ok(Credential::Jwt { tenant, principal })
                }
                _ if self.bearer_api_keys => api_key_credential(token),
                _ => Err(invalid_credentials("bearer token not accepted")),
            },
            (None, Some(key)) => api_key_credential(key),
            (None, None) => Ok(Credential::None),
        }
    }
}

impl<St: TenantStore> Shared<St> {
    /// Phase two: one store lookup, then every selector is checked against the record.
    pub(crate) async fn lookup(self: Arc<Self>, prepared: Prepared) -> Result<Resolved, Rejection> {
        let Prepared {
            credential,
            selectors,
        } = prepared;
        let (tenant, principal, kind) = match credential {
            Credential::Jwt { tenant, principal } => {
                let found = self.by_ref(&tenant).await?;
                (found, Some(principal), CredentialKind::Jwt)
            }
            Credential::ApiKey(hash) => {
                let found = self
                    .store
                    .by_api_key(&hash)
                    .await
                    .map_err(Rejection::store)?
                    .ok_or_else(|| invalid_credentials("unknown API key"))?;
                (found, None, CredentialKind::ApiKey)
            }
            Credential::None => {
                // Only reachable with `dangerously_trust_bare_selector`: `prepare` refuses
                // a request without a credential otherwise.
                let Some((_, first)) = selectors.iter().flatten().next() else {
                    return Err(Rejection::new(
                        RejectionKind::TenantRequired,
                        "no credential presented",
                    ));
                };
                let found = self.by_ref(first).await?;
                (found, None, CredentialKind::TrustedSelector)
            }
        };
        for (source, sel) in selectors.iter().flatten() {
            if !sel.names(&tenant) {
                let credential = TenantRef::Id(tenant.id());
                return Err(mismatch("credential", &credential, source.as_str(), sel));
            }
        }
        if !tenant.is_active() {
            return Err(unavailable());
        }
        Ok(Resolved {
            tenant,
            principal,
            kind,
        })
    }

    async fn by_ref(&self, r: &TenantRef) -> Result<Arc<Tenant>, Rejection> {
        let found = match r {
            TenantRef::Id(id) => self.store.by_id(*id).await,
            TenantRef::Slug(slug) => self.store.by_slug(slug).await,
        }
        .map_err(Rejection::store)?
        .ok_or_else(unavailable)?;
        // A record is checked on read: a store (or a cache in front of it) that answers with
        // another tenant's record must not put that tenant in the request.
        if !r.names(&found) {
            return Err(Rejection::new(
                RejectionKind::StoreUnavailable,
                "tenant store answered with another tenant's record",
            ));
        }
        Ok(found)
    }
}

/// Unknown, suspended, pending and deleted tenants get exactly this.
fn unavailable() -> Rejection {
    Rejection::new(RejectionKind::TenantUnavailable, "tenant unavailable")
}

/// `Some(token)` for `Bearer <token>`; `None` for another scheme, which is left alone.
fn bearer_token(value: &str) -> Result<Option<&str>, Rejection> {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    // memchr scans a vector at a time: a token is hundreds of bytes, and byte loops here and
    // in `looks_like_jwt` cost about 4,000 instructions per request (callgrind).
    if token.is_empty() || memchr::memchr2(b' ', b'\t', token.as_bytes()).is_some() {
        return Err(invalid_credentials("malformed bearer credential"));
    }
    Ok(Some(token))
}

fn looks_like_jwt(token: &str) -> bool {
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    dots.next().is_some() && dots.next().is_some() && dots.next().is_none()
}

/// The bounds an API key must fit before it is hashed and looked up.
pub(crate) const API_KEY_LEN: std::ops::RangeInclusive<usize> = 16..=512;

fn api_key_credential(key: &str) -> Result<Credential, Rejection> {
    if !API_KEY_LEN.contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid_credentials("malformed API key"));
    }
    Ok(Credential::ApiKey(ApiKeyHash::of(key)))
}

/// The authority the client addressed: the `Host` header and/or the URI authority (absolute
/// form, or HTTP/2 `:authority`), which must agree.
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, Rejection> {
    let header = single(
        req.headers(),
        &HOST,
        invalid_selector,
        "several Host values",
        "unreadable Host header",
    )?;
    let target = req.uri().authority().map(|a| a.as_str());
    if target.is_some_and(|a| a.contains('@')) {
        return Err(invalid_selector("userinfo in the request target"));
    }
    match (header, target) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => Err(invalid_selector(
            "the Host header disagrees with the request target",
        )),
        (Some(h), _) => Ok(Some(h)),
        (None, a) => Ok(a),
    }
}

static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The host added by the nearest (trusted) proxy: the `host` of the last `Forwarded` element,
/// else the last `X-Forwarded-Host` value. Earlier values may come from the client.
fn forwarded_host(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    fn last<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Rejection> {
        headers
            .get_all(name)
            .iter()
            .next_back()
            .map(HeaderValue::to_str)
            .transpose()
            .map_err(|_| invalid_selector("unreadable forwarding header"))
    }
    if let Some(value) = last(headers, &http::header::FORWARDED)? {
        // RFC 7239: elements are separated by commas and pairs by semicolons, neither of
        // which counts inside a quoted string.
        let element = split_unquoted(value, b',').pop().unwrap_or_default();
        let host = split_unquoted(element, b';').into_iter().find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim().eq_ignore_ascii_case("host").then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        });
        if host.is_some() {
            return Ok(host);
        }
    }
    Ok(last(headers, &X_FORWARDED_HOST)?.and_then(|v| v.rsplit(',').next().map(str::trim)))
}

/// Splits `s` at the ASCII byte `sep` wherever it is outside a quoted string (`"…"`, with `\`
/// escaping the next character inside one).
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            // `sep` is ASCII, so `i` and `i + 1` are character boundaries.
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn token_scans_agree_with_plain_byte_loops(
            token in "[A-Za-z0-9._ \t-]{0,40}",
            scheme in "(Bearer|bearer|BEARER|Basic)",
        ) {
            proptest::prop_assert_eq!(
                looks_like_jwt(&token),
                token.bytes().filter(|&b| b == b'.').count() == 2
            );
            // The same steps as `bearer_token`, with a plain byte loop for the scan.
            let header = format!("{scheme} {token}");
            let value = header.trim_matches([' ', '\t']);
            let (s, rest) = value.split_once(' ').unwrap_or((value, ""));
            let t = rest.trim_start_matches(' ');
            let expected = if !s.eq_ignore_ascii_case("bearer") {
                Some(None)
            } else if t.is_empty() || t.bytes().any(|b| b == b' ' || b == b'\t') {
                None
            } else {
                Some(Some(t.to_owned()))
            };
            let got = bearer_token(&header).ok().map(|t| t.map(str::to_owned));
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn separators_inside_quoted_strings_do_not_split() {
        assert_eq!(split_unquoted("a,b", b','), ["a", "b"]);
        assert_eq!(
            split_unquoted(r#"for="x,y";host=h"#, b','),
            [r#"for="x,y";host=h"#]
        );
        assert_eq!(
            split_unquoted(r#"for="a;b";host=h"#, b';'),
            [r#"for="a;b""#, "host=h"]
        );
        // An escaped quote does not end the quoted string.
        assert_eq!(
            split_unquoted(r#"a="x\",y",b"#, b','),
            [r#"a="x\",y""#, "b"]
        );
        assert_eq!(split_unquoted("", b','), [""]);
        assert_eq!(split_unquoted(",", b','), ["", ""]);
    }

    fn forwarded(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::FORWARDED,
            HeaderValue::from_str(value).unwrap(),
        );
        forwarded_host(&headers).unwrap().map(str::to_owned)
    }

    #[test]
    fn the_host_of_the_last_forwarded_element_is_read_whatever_is_quoted() {
        assert_eq!(
            forwarded("host=a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            forwarded(r#"host=a.example.com;note="x,y""#).as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            forwarded(r#"for="a;host=b.example.com";host=c.example.com"#).as_deref(),
            Some("c.example.com")
        );
        assert_eq!(
            forwarded(r#"host=a.example.com, for="1,2";host="d.example.com""#).as_deref(),
            Some("d.example.com")
        );
        assert_eq!(forwarded("for=1.2.3.4"), None);
    }
}
