//! The JWT credential: verification with keys pinned to one algorithm each.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{ConfigError, ConfigErrorKind};
use crate::TenantRef;

/// Verifies bearer JWTs and reads the tenant they name.
///
/// Every key is pinned to exactly one algorithm, chosen with the key (`hs256`, `rs256_pem`,
/// `es256_pem`, `eddsa_pem`) or read from a JWKS document, so a token cannot pick its own:
/// `alg: none`, an HMAC token "signed" with a public key, or an RS256 token presented to an
/// ES256 key are all rejected. Symmetric and public keys cannot be mixed in one verifier.
///
/// Tokens must carry `exp`, `iss` and `aud`, all valid; `nbf` is checked when present; the
/// leeway is small and bounded. A token's `kid` only selects among the configured keys; it is
/// never used to fetch anything, and `jku`, `x5u`, `x5c` and embedded `jwk` headers are ignored.
///
/// ```
/// use tenantry_resolve::JwtVerifier;
///
/// let verifier = JwtVerifier::builder()
///     .hs256(b"an example secret of at least 32 bytes")
///     .issuer("https://auth.example.com")
///     .audience("documents-api")
///     .build()?;
/// # let _ = verifier;
/// # Ok::<(), tenantry_resolve::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Vec<Key>,
    tenant_claim: Box<str>,
    roles_claim: Box<str>,
    leeway: u64,
    cache: Option<moka::sync::Cache<Box<str>, Arc<Verified>, foldhash::fast::RandomState>>,
}

/// A token that passed every check, remembered by its exact text.
struct Verified {
    tenant: TenantRef,
    principal: Principal,
    exp: u64,
    nbf: Option<u64>,
}

impl Verified {
    /// Whether the time claims still hold, by the rules `jsonwebtoken` applies (same clock,
    /// same leeway): expired once `exp < now - leeway`, immature while `nbf > now + leeway`.
    fn in_time(&self, now: u64, leeway: u64) -> bool {
        self.exp.saturating_add(leeway) >= now
            && self.nbf.is_none_or(|nbf| nbf <= now.saturating_add(leeway))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A numeric date claim as whole seconds, the way `jsonwebtoken` reads it (fractions dropped).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    let v = claims.get(name)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

struct Key {
    kid: Option<Box<str>>,
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material is never printed.
        let keys: Vec<_> = self
            .inner
            .keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.alg))
            .collect();
        f.debug_struct("JwtVerifier")
            .field("keys", &keys)
            .field("tenant_claim", &self.inner.tenant_claim)
            .field("roles_claim", &self.inner.roles_claim)
            .field(
                "cached_tokens",
                &self
                    .inner
                    .cache
                    .as_ref()
                    .map(moka::sync::Cache::entry_count),
            )
            .finish_non_exhaustive()
    }
}

/// The verified subject of a JWT, put in the request extensions next to the tenant.
///
/// ```
/// # use tenantry_resolve::Principal;
/// fn handler(principal: &Principal) -> bool {
///     principal.subject() == Some("user-1") && principal.has_role("admin")
/// }
/// # let _ = handler;
/// ```
#[derive(Clone)]
pub struct Principal {
    inner: Arc<PrincipalInner>,
}

struct PrincipalInner {
    subject: Option<String>,
    roles: Vec<String>,
    claims: Map<String, Value>,
}

impl Principal {
    /// The `sub` claim, if the token had one.
    pub fn subject(&self) -> Option<&str> {
        self.inner.subject.as_deref()
    }

    /// The roles claim (name configurable, default `roles`): a JSON array of strings or one
    /// space-separated string.
    pub fn roles(&self) -> &[String] {
        &self.inner.roles
    }

    /// Whether the principal has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.roles.iter().any(|r| r == role)
    }

    /// All verified claims of the token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.claims
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.inner.subject)
            .field("roles", &self.inner.roles)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused. Kept for logs and for [`Rejection::reason`](crate::Rejection);
/// the response body says only that the credential is invalid.
pub(crate) type Refusal = &'static str;

impl JwtVerifier {
    /// The largest leeway accepted for `exp` and `nbf`.
    pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
    /// The default leeway.
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    /// The longest token accepted; longer ones are refused before any parsing.
    pub const MAX_TOKEN_LEN: usize = 8 * 1024;
    /// The longest `kid` accepted.
    pub const MAX_KID_LEN: usize = 128;
    /// The shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
    pub const MIN_HMAC_SECRET_LEN: usize = 32;

    /// Starts building a verifier.
    pub fn builder() -> JwtVerifierBuilder {
        JwtVerifierBuilder {
            keys: Vec::new(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Self::DEFAULT_LEEWAY,
            tenant_claim: "tenant_id".into(),
            roles_claim: "roles".into(),
            cache: None,
            error: None,
        }
    }

    /// Verifies a token: signature, algorithm, `exp`, `nbf`, `iss`, `aud`, then reads the
    /// tenant claim. Pure CPU work: nothing is looked up. With
    /// [`cache_verified_tokens`](JwtVerifierBuilder::cache_verified_tokens), a token that
    /// verified before is answered from memory after its time claims are checked again.
    pub(crate) fn verify(&self, token: &str) -> Result<(TenantRef, Principal), Refusal> {
        // Before anything else, the cache lookup (which hashes the token) included.
        if token.len() > Self::MAX_TOKEN_LEN {
            return Err("token too large");
        }
        let Some(cache) = &self.inner.cache else {
            return self.verify_uncached(token).map(|v| (v.tenant, v.principal));
        };
        if let Some(hit) = cache.get(token) {
            if hit.in_time(unix_now(), self.inner.leeway) {
                return Ok((hit.tenant.clone(), hit.principal.clone()));
            }
            // Expired since: forget it, and let full verification say why it is refused.
            cache.invalidate(token);
        }
        let verified = self.verify_uncached(token)?;
        let answer = (verified.tenant.clone(), verified.principal.clone());
        cache.insert(token.into(), Arc::new(verified));
        Ok(answer)
    }

    /// Number of verified tokens remembered (0 without a cache). Applies the cache's pending
    /// insertions and evictions first, so call it for diagnostics, not per request.
    pub fn cached_tokens(&self) -> u64 {
        self.inner.cache.as_ref().map_or(0, |cache| {
            cache.run_pending_tasks();
            cache.entry_count()
        })
    }

    /// Forgets every remembered token: the next request with any token verifies it in full.
    pub fn clear_cached_tokens(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate_all();
        }
    }

    /// Full verification; `verify` has already refused an oversized token.
    fn verify_uncached(&self, token: &str) -> Result<Verified, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: unknown critical extensions must be rejected; we know none.
            return Err("unsupported critical header");
        }
        let key = match header.kid.as_deref() {
            Some(kid) => {
                if kid.is_empty()
                    || kid.len() > Self::MAX_KID_LEN
                    || !kid.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err("hostile kid");
                }
                self.inner
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or("unknown kid")?
            }
            None => match self.inner.keys.as_slice() {
                [only] => only,
                _ => return Err("missing kid"),
            },
        };
        if header.alg != key.alg {
            return Err("algorithm not allowed for this key");
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::MissingRequiredClaim(_) => "missing or malformed required claim",
                ErrorKind::InvalidClaimFormat(_) => "malformed claim",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm not allowed for this key",
                _ => "invalid token",
            })?;
        let claims = data.claims;
        // jsonwebtoken accepts an array `iss` if any member matches; RFC 7519 says one string.
        if !claims.get("iss").is_some_and(Value::is_string) {
            return Err("malformed claim");
        }
        let tenant = claims
            .get(&*self.inner.tenant_claim)
            .and_then(Value::as_str)
            .and_then(TenantRef::parse)
            .ok_or("missing or invalid tenant claim")?;
        let subject = match claims.get("sub") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("malformed claim"),
        };
        let roles = match claims.get(&*self.inner.roles_claim) {
            None => Vec::new(),
            Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("malformed roles claim")?,
            Some(_) => return Err("malformed roles claim"),
        };
        // `exp` is required and was validated, so it is a number here.
        let exp = numeric_date(&claims, "exp").ok_or("missing or malformed required claim")?;
        let nbf = numeric_date(&claims, "nbf");
        Ok(Verified {
            tenant,
            principal: Principal {
                inner: Arc::new(PrincipalInner {
                    subject,
                    roles,
                    claims,
                }),
            },
            exp,
            nbf,
        })
    }
}

/// Builds a [`JwtVerifier`]; see [`JwtVerifier::builder`].
#[derive(Debug)]
pub struct JwtVerifierBuilder {
    keys: Vec<PendingKey>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    tenant_claim: Box<str>,
    roles_claim: Box<str>,
    cache: Option<(u64, Duration)>,
    error: Option<ConfigError>,
}

struct PendingKey {
    kid: Option<Box<str>>,
    alg: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn key_error(message: impl Into<std::borrow::Cow<'static, str>>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidKey, message)
}

impl JwtVerifierBuilder {
    fn push(
        mut self,
        kid: Option<&str>,
        alg: Algorithm,
        key: Result<DecodingKey, ConfigError>,
    ) -> Self {
        match key {
            Ok(key) => self.keys.push(PendingKey {
                kid: kid.map(Into::into),
                alg,
                key,
            }),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    fn hmac(secret: &[u8]) -> Result<DecodingKey, ConfigError> {
        if secret.len() < JwtVerifier::MIN_HMAC_SECRET_LEN {
            return Err(key_error("HS256 secret shorter than 32 bytes"));
        }
        Ok(DecodingKey::from_secret(secret))
    }

    /// Adds an HS256 shared secret (at least 32 bytes) without a `kid`.
    pub fn hs256(self, secret: impl AsRef<[u8]>) -> Self {
        let key = Self::hmac(secret.as_ref());
        self.push(None, Algorithm::HS256, key)
    }

    /// Adds an HS256 shared secret selected by `kid`.
    pub fn hs256_with_kid(self, kid: &str, secret: impl AsRef<[u8]>) -> Self {
        let key = Self::hmac(secret.as_ref());
        self.push(Some(kid), Algorithm::HS256, key)
    }

    /// Adds an RSA public key (PEM, PKCS#1 or SPKI) for RS256, optionally selected by `kid`.
    pub fn rs256_pem(self, kid: Option<&str>, pem: impl AsRef<[u8]>) -> Self {
        let key = DecodingKey::from_rsa_pem(pem.as_ref())
            .map_err(|e| key_error("invalid RSA public key PEM").with_source(e));
        self.push(kid, Algorithm::RS256, key)
    }

    /// Adds a P-256 public key (PEM) for ES256, optionally selected by `kid`.
    pub fn es256_pem(self, kid: Option<&str>, pem: impl AsRef<[u8]>) -> Self {
        let key = DecodingKey::from_ec_pem(pem.as_ref())
            .map_err(|e| key_error("invalid EC public key PEM").with_source(e));
        self.push(kid, Algorithm::ES256, key)
    }

    /// Adds an Ed25519 public key (PEM) for EdDSA, optionally selected by `kid`.
    pub fn eddsa_pem(self, kid: Option<&str>, pem: impl AsRef<[u8]>) -> Self {
        let key = DecodingKey::from_ed_pem(pem.as_ref())
            .map_err(|e| key_error("invalid Ed25519 public key PEM").with_source(e));
        self.push(kid, Algorithm::EdDSA, key)
    }

    /// Adds every signing key of a JWKS document (RFC 7517). Each key needs a `kid`; its
    /// algorithm is its `alg` member or, when absent, the one its type implies (RSA → RS256,
    /// P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA). Symmetric (`oct`) keys and keys whose
    /// `use` is not `sig` are refused.
    pub fn jwks_json(mut self, document: &str) -> Self {
        let set: JwkSet = match serde_json::from_str(document) {
            Ok(set) => set,
            Err(e) => {
                self.error.get_or_insert(
                    ConfigError::new(ConfigErrorKind::InvalidJwks, "JWKS is not valid JSON")
                        .with_source(e),
                );
                return self;
            }
        };
        for jwk in &set.keys {
            let result = jwk_key(jwk);
            match result {
                Ok((kid, alg, key)) => self = self.push(Some(kid), alg, Ok(key)),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        self
    }

    /// Reads a JWKS document from a file; see [`jwks_json`](Self::jwks_json).
    pub fn jwks_file(mut self, path: impl AsRef<Path>) -> Self {
        match std::fs::read_to_string(path.as_ref()) {
            Ok(doc) => self.jwks_json(&doc),
            Err(e) => {
                self.error.get_or_insert(
                    ConfigError::new(
                        ConfigErrorKind::InvalidJwks,
                        format!("cannot read JWKS file {}", path.as_ref().display()),
                    )
                    .with_source(e),
                );
                self
            }
        }
    }

    /// Adds an accepted issuer (`iss`). At least one is required.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Adds an accepted audience (`aud`). At least one is required.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock-skew leeway for `exp` and `nbf` (default 30 s, at most
    /// [`MAX_LEEWAY`](JwtVerifier::MAX_LEEWAY)). Whole seconds; fractions are dropped.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The claim that names the tenant (default `tenant_id`), holding its id or slug.
    pub fn tenant_claim(mut self, name: &str) -> Self {
        self.tenant_claim = name.into();
        self
    }

    /// The claim that holds the principal's roles (default `roles`).
    pub fn roles_claim(mut self, name: &str) -> Self {
        self.roles_claim = name.into();
        self
    }

    /// Remembers up to `max_tokens` tokens that passed verification, each for at most
    /// `time_to_live`, so that a client sending the same token again skips the signature
    /// check and the JSON parsing (a hit costs a hash lookup instead of a full verification;
    /// see the crate's `resolve` benchmark). Off by default.
    ///
    /// What stays true with the cache on:
    /// - Only tokens that passed every check are remembered, keyed by their exact text: a
    ///   token that differs in any byte (another signature, header or claim) is verified in
    ///   full, so the cache cannot be filled by a client without valid tokens.
    /// - `exp` and `nbf` are checked again on every hit, with the same clock and leeway; a
    ///   token that expired while remembered is refused exactly as it would be without it.
    /// - The keys of a verifier never change; a new key set means a new verifier, with an
    ///   empty cache. [`JwtVerifier::clear_cached_tokens`] forgets everything at once.
    ///
    /// What changes: a token is not re-verified for up to `time_to_live`, so if the issuer
    /// revokes tokens by some means other than `exp` (a deny list checked elsewhere), keep the
    /// time to live short. Memory is bounded by `max_tokens` (each entry holds the token text
    /// and its claims, typically under 2 KiB).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tenantry_resolve::JwtVerifier;
    ///
    /// let verifier = JwtVerifier::builder()
    ///     .hs256(b"an example secret of at least 32 bytes")
    ///     .issuer("https://auth.example.com")
    ///     .audience("documents-api")
    ///     .cache_verified_tokens(10_000, Duration::from_secs(60))
    ///     .build()?;
    /// assert_eq!(verifier.cached_tokens(), 0);
    /// # Ok::<(), tenantry_resolve::ConfigError>(())
    /// ```
    pub fn cache_verified_tokens(mut self, max_tokens: u64, time_to_live: Duration) -> Self {
        self.cache = Some((max_tokens, time_to_live));
        self
    }

    /// Builds the verifier, checking that the configuration is complete and consistent.
    pub fn build(self) -> Result<JwtVerifier, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.keys.is_empty() {
            return Err(key_error("no verification key configured"));
        }
        let hmac = self
            .keys
            .iter()
            .filter(|k| k.alg == Algorithm::HS256)
            .count();
        if hmac != 0 && hmac != self.keys.len() {
            return Err(key_error(
                "HMAC secrets and public keys cannot be mixed in one verifier",
            ));
        }
        if self.keys.len() > 1 {
            for (i, k) in self.keys.iter().enumerate() {
                let Some(kid) = &k.kid else {
                    return Err(key_error("with several keys, every key needs a kid"));
                };
                if self.keys[..i].iter().any(|o| o.kid.as_ref() == Some(kid)) {
                    return Err(key_error(format!("duplicate kid {kid:?}")));
                }
            }
        }
        if self.issuers.is_empty() || self.audiences.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::MissingIssuerOrAudience,
                "JWT issuer and audience must both be configured",
            ));
        }
        if self.leeway > JwtVerifier::MAX_LEEWAY {
            return Err(ConfigError::new(
                ConfigErrorKind::LeewayTooLarge,
                "JWT leeway above 300 seconds",
            ));
        }
        for name in [&self.tenant_claim, &self.roles_claim] {
            if name.is_empty() {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidName,
                    "claim names cannot be empty",
                ));
            }
        }
        let keys = self
            .keys
            .into_iter()
            .map(|k| {
                let mut validation = Validation::new(k.alg);
                // Presence is not implied by setting an expected value: require it.
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.validate_aud = true;
                validation.leeway = self.leeway.as_secs();
                validation.set_issuer(&self.issuers);
                validation.set_audience(&self.audiences);
                Key {
                    kid: k.kid,
                    alg: k.alg,
                    key: k.key,
                    validation,
                }
            })
            .collect();
        let cache = match self.cache {
            None => None,
            Some((0, _)) => {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidCache,
                    "a verified-token cache needs room for at least one token",
                ))
            }
            Some((_, ttl)) if ttl.is_zero() => {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidCache,
                    "a verified-token cache needs a time to live above zero",
                ))
            }
            Some((max, ttl)) => Some(
                moka::sync::Cache::builder()
                    .max_capacity(max)
                    .time_to_live(ttl)
                    // The key is a whole token, a few hundred bytes hashed on every request:
                    // SipHash costs about 1k instructions there, foldhash a fraction. Only
                    // verified tokens are inserted, so a client cannot fill the map with
                    // colliding keys; the seed is random per process.
                    .build_with_hasher(foldhash::fast::RandomState::default()),
            ),
        };
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                keys,
                tenant_claim: self.tenant_claim,
                roles_claim: self.roles_claim,
                leeway: self.leeway.as_secs(),
                cache,
            }),
        })
    }
}

fn jwk_key(jwk: &Jwk) -> Result<(&str, Algorithm, DecodingKey), ConfigError> {
    let kid = jwk
        .common
        .key_id
        .as_deref()
        .ok_or_else(|| key_error("every JWKS key needs a kid"))?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err(key_error(format!("JWKS key {kid:?} is not a signing key")));
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err(key_error(format!("JWKS key {kid:?}: unsupported curve"))),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => {
            return Err(key_error(format!(
                "JWKS key {kid:?}: only RSA, EC and Ed25519 public keys are accepted"
            )))
        }
    };
    let alg = match jwk.common.key_algorithm {
        None => implied,
        Some(declared) => {
            let alg = match declared {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => {
                    return Err(key_error(format!(
                        "JWKS key {kid:?}: algorithm not accepted"
                    )))
                }
            };
            // An EC key's curve fixes its algorithm; an RSA key may declare RS* or PS*.
            if alg.family() != implied.family()
                || (implied.family() == jsonwebtoken::AlgorithmFamily::Ec && alg != implied)
            {
                return Err(key_error(format!(
                    "JWKS key {kid:?}: alg does not match the key type"
                )));
            }
            alg
        }
    };
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| key_error(format!("JWKS key {kid:?} is invalid")).with_source(e))?;
    Ok((kid, alg, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unit-test-secret-that-is-long-enough-for-hs256";

    fn token(exp: u64) -> String {
        let claims = serde_json::json!({
            "sub": "user-1", "tenant_id": "acme", "iss": "iss", "aud": "aud", "exp": exp,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn verifier(cache: bool) -> JwtVerifier {
        let b = JwtVerifier::builder()
            .hs256(SECRET)
            .issuer("iss")
            .audience("aud");
        let b = if cache {
            b.cache_verified_tokens(100, Duration::from_secs(60))
        } else {
            b
        };
        b.build().unwrap()
    }

    #[test]
    fn a_hit_returns_the_remembered_principal_without_verifying_again() {
        let v = verifier(true);
        let t = token(unix_now() + 300);
        let (_, first) = v.verify(&t).unwrap();
        let (tenant, second) = v.verify(&t).unwrap();
        // The very same allocation: the second answer came from the cache.
        assert!(Arc::ptr_eq(&first.inner, &second.inner));
        assert_eq!(tenant, TenantRef::parse("acme").unwrap());
        assert_eq!(v.cached_tokens(), 1);

        // Without a cache every call verifies and builds a new principal.
        let plain = verifier(false);
        let (_, a) = plain.verify(&t).unwrap();
        let (_, b) = plain.verify(&t).unwrap();
        assert!(!Arc::ptr_eq(&a.inner, &b.inner));
        assert_eq!(plain.cached_tokens(), 0);
    }

    #[test]
    fn time_claims_are_checked_like_jsonwebtoken_does() {
        let v = Verified {
            tenant: TenantRef::parse("acme").unwrap(),
            principal: verifier(false).verify(&token(unix_now() + 300)).unwrap().1,
            exp: 1_000,
            nbf: Some(900),
        };
        assert!(v.in_time(1_000, 0));
        assert!(!v.in_time(1_001, 0));
        assert!(v.in_time(1_030, 30));
        assert!(!v.in_time(1_031, 30));
        assert!(!v.in_time(899, 0));
        assert!(v.in_time(870, 30));
        assert!(!v.in_time(869, 30));
    }

    #[test]
    fn numeric_dates_are_read_as_whole_seconds() {
        let claims: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"a": 5, "b": 5.9, "c": "5", "d": -1}))
                .unwrap();
        assert_eq!(numeric_date(&claims, "a"), Some(5));
        assert_eq!(numeric_date(&claims, "b"), Some(5));
        assert_eq!(numeric_date(&claims, "c"), None);
        assert_eq!(numeric_date(&claims, "d"), None);
        assert_eq!(numeric_date(&claims, "e"), None);
    }
}
