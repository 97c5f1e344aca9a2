use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A tenant's primary key: a UUID.
///
/// Parsing is strict: only the hyphenated, simple, braced or URN forms that [`uuid`] accepts,
/// and never the nil UUID. A bad id is a typed error, never a panic.
///
/// ```
/// use tenantry_core::TenantId;
///
/// let id: TenantId = "0d5e1f7a-3b8c-4d2e-9f10-a1b2c3d4e5f6".parse()?;
/// assert_eq!(id.to_string(), "0d5e1f7a-3b8c-4d2e-9f10-a1b2c3d4e5f6");
/// assert!("not-a-uuid".parse::<TenantId>().is_err());
/// assert!("00000000-0000-0000-0000-000000000000".parse::<TenantId>().is_err());
/// # Ok::<(), tenantry_core::ParseTenantIdError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Uuid);

impl TenantId {
    /// A new random (version 4) tenant id.
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps a UUID. Returns an error for the nil UUID, which never names a tenant.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, ParseTenantIdError> {
        if uuid.is_nil() {
            return Err(ParseTenantIdError { _priv: () });
        }
        Ok(Self(uuid))
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The canonical lowercase hyphenated form, without allocating.
    pub fn as_hyphenated_buf(&self) -> [u8; 36] {
        let mut buf = [0u8; 36];
        self.0.hyphenated().encode_lower(&mut buf);
        buf
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0.hyphenated())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for TenantId {
    type Err = ParseTenantIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uuid = Uuid::try_parse(s).map_err(|_| ParseTenantIdError { _priv: () })?;
        Self::from_uuid(uuid)
    }
}

impl From<TenantId> for Uuid {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let uuid = Uuid::deserialize(deserializer)?;
        Self::from_uuid(uuid).map_err(serde::de::Error::custom)
    }
}

/// The error returned when a string is not a valid, non-nil tenant id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTenantIdError {
    _priv: (),
}

impl fmt::Display for ParseTenantIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid tenant id: expected a non-nil UUID")
    }
}

impl std::error::Error for ParseTenantIdError {}

/// A tenant's slug: a DNS label used as its subdomain and human-readable name.
///
/// Lowercase ASCII letters, digits and inner hyphens, 1 to 63 characters, and never something
/// that reads as a UUID (so "id or slug" references are never ambiguous). Parsing never
/// case-folds: callers that accept user input (a `Host` header) fold case themselves, so that
/// a stored slug has exactly one spelling.
///
/// ```
/// use tenantry_core::Slug;
///
/// assert!(Slug::new("acme-corp").is_ok());
/// assert!(Slug::new("Acme").is_err());
/// assert!(Slug::new("-acme").is_err());
/// assert!(Slug::new("").is_err());
/// assert!(Slug::new("0d5e1f7a-3b8c-4d2e-9f10-a1b2c3d4e5f6").is_err()); // reads as a TenantId
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(Box<str>);

impl Slug {
    /// The longest slug: a DNS label holds at most 63 octets.
    pub const MAX_LEN: usize = 63;

    /// Validates and wraps a slug.
    pub fn new(s: &str) -> Result<Self, ParseSlugError> {
        if Self::is_valid(s) {
            Ok(Self(s.into()))
        } else {
            Err(ParseSlugError { _priv: () })
        }
    }

    /// Whether `s` is a valid slug, without allocating.
    pub fn is_valid(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= Self::MAX_LEN
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && Uuid::try_parse(s).is_err()
    }

    /// The slug as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slug({:?})", &*self.0)
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Slug {
    type Err = ParseSlugError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Slug {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Slug {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The error returned when a string is not a valid slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSlugError {
    _priv: (),
}

impl fmt::Display for ParseSlugError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid slug: expected 1 to 63 lowercase letters, digits or inner hyphens")
    }
}

impl std::error::Error for ParseSlugError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tenant_id_rejects_garbage_without_panicking() {
        for s in [
            "",
            "x",
            "1234",
            "g0000000-0000-4000-8000-000000000000",
            "💥",
            "' OR 1=1 --",
        ] {
            assert!(s.parse::<TenantId>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn tenant_id_rejects_nil() {
        assert!("00000000-0000-0000-0000-000000000000"
            .parse::<TenantId>()
            .is_err());
        assert!(TenantId::from_uuid(Uuid::nil()).is_err());
    }

    #[test]
    fn tenant_id_display_is_canonical_lowercase() {
        let id: TenantId = "0D5E1F7A-3B8C-4D2E-9F10-A1B2C3D4E5F6".parse().unwrap();
        assert_eq!(id.to_string(), "0d5e1f7a-3b8c-4d2e-9f10-a1b2c3d4e5f6");
        assert_eq!(&id.as_hyphenated_buf()[..], id.to_string().as_bytes());
    }

    #[test]
    fn tenant_id_serde_rejects_nil_and_garbage() {
        assert!(
            serde_json::from_str::<TenantId>("\"00000000-0000-0000-0000-000000000000\"").is_err()
        );
        assert!(serde_json::from_str::<TenantId>("\"nope\"").is_err());
        let id = TenantId::new_v4();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
    }

    #[test]
    fn slug_rules() {
        for ok in ["a", "acme", "a-b", "a1", "1a", &"a".repeat(63)] {
            assert!(Slug::new(ok).is_ok(), "{ok:?} rejected");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "a b",
            "ä",
            &"a".repeat(64),
            "a\0",
        ] {
            assert!(Slug::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slug_serde_validates() {
        assert!(serde_json::from_str::<Slug>("\"Bad\"").is_err());
        assert_eq!(
            serde_json::from_str::<Slug>("\"good\"").unwrap().as_str(),
            "good"
        );
    }

    proptest! {
        #[test]
        fn slug_accepts_exactly_the_ldh_lowercase_labels(s in "\\PC{0,70}") {
            let expected = !s.is_empty()
                && s.len() <= 63
                && !s.starts_with('-')
                && !s.ends_with('-')
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && Uuid::try_parse(&s).is_err();
            prop_assert_eq!(Slug::new(&s).is_ok(), expected);
        }

        #[test]
        fn tenant_id_parse_never_panics(s in "\\PC{0,64}") {
            let _ = s.parse::<TenantId>();
        }

        #[test]
        fn tenant_id_round_trips(bytes in any::<[u8; 16]>()) {
            if let Ok(id) = TenantId::from_uuid(Uuid::from_bytes(bytes)) {
                prop_assert_eq!(id.to_string().parse::<TenantId>().unwrap(), id);
            }
        }
    }
}
