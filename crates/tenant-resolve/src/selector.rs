//! How a selector or a credential names a tenant: by id or by slug.

use std::fmt;

use tenantry_core::{Slug, Tenant, TenantId};

/// A tenant named by id (a UUID) or by slug, as found in `X-Tenant-ID`, a subdomain or a
/// JWT claim.
///
/// ```
/// use tenantry_resolve::TenantRef;
///
/// assert!(matches!(TenantRef::parse("acme"), Some(TenantRef::Slug(_))));
/// assert!(matches!(
///     TenantRef::parse("9f1c2d4e-8a7b-4c3d-9e2f-112233445566"),
///     Some(TenantRef::Id(_))
/// ));
/// assert!(TenantRef::parse("Acme Corp").is_none());
/// // The nil UUID is spelled like a slug but is neither.
/// assert!(TenantRef::parse("00000000-0000-0000-0000-000000000000").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum TenantRef {
    /// By primary key.
    Id(TenantId),
    /// By slug.
    Slug(Slug),
}

impl TenantRef {
    /// The longest value accepted; anything longer is rejected before parsing.
    pub const MAX_LEN: usize = 64;

    /// Parses an id (any form [`TenantId`] accepts) or, failing that, a slug.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > Self::MAX_LEN {
            return None;
        }
        if let Ok(id) = s.parse::<TenantId>() {
            return Some(Self::Id(id));
        }
        // The nil UUID is a valid slug by spelling but never a tenant: a UUID-shaped value
        // always means an id, so it cannot be read as a slug.
        if looks_like_uuid(s) {
            return None;
        }
        Slug::new(s).ok().map(Self::Slug)
    }

    /// Whether `tenant` is the tenant this names.
    pub fn names(&self, tenant: &Tenant) -> bool {
        match self {
            Self::Id(id) => tenant.id() == *id,
            Self::Slug(slug) => tenant.slug() == slug,
        }
    }

    /// `Some(true)` if both name the same tenant, `Some(false)` if they certainly name
    /// different ones, `None` if that needs the tenant record (an id against a slug).
    pub(crate) fn agrees_with(&self, other: &Self) -> Option<bool> {
        match (self, other) {
            (Self::Id(a), Self::Id(b)) => Some(a == b),
            (Self::Slug(a), Self::Slug(b)) => Some(a == b),
            _ => None,
        }
    }
}

/// The hyphenated (8-4-4-4-12) or simple (32 digits) hex spelling of a UUID.
fn looks_like_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        32 => b.iter().all(u8::is_ascii_hexdigit),
        36 => b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        }),
        _ => false,
    }
}

impl fmt::Debug for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => fmt::Debug::fmt(id, f),
            Self::Slug(slug) => fmt::Debug::fmt(slug, f),
        }
    }
}

impl fmt::Display for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => fmt::Display::fmt(id, f),
            Self::Slug(slug) => fmt::Display::fmt(slug, f),
        }
    }
}
