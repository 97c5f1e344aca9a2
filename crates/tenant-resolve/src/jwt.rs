//! The JWT credential: verification with keys pinned to one algorithm each.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
            error: None,
        }
    }

    /// Verifies a token: signature, algorithm, `exp`, `nbf`, `iss`, `aud`, then reads the
    /// tenant claim. Pure CPU work: nothing is looked up.
    pub(crate) fn verify(&self, token: &str) -> Result<(TenantRef, Principal), Refusal> {
        if token.len() > Self::MAX_TOKEN_LEN {
            return Err("token too large");
        }
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
        Ok((
            tenant,
            Principal {
                inner: Arc::new(PrincipalInner {
                    subject,
                    roles,
                    claims,
                }),
            },
        ))
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
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                keys,
                tenant_claim: self.tenant_claim,
                roles_claim: self.roles_claim,
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
