//! The subdomain selector: which hosts name a tenant.

use tenantry_core::Slug;

use crate::config::{ConfigError, ConfigErrorKind};

/// The longest host name DNS allows (without the trailing dot).
const MAX_HOST_LEN: usize = 253;

/// Which hosts select a tenant: exactly `<label>.<base domain>` for the configured base domains.
///
/// The host is read the way a browser or proxy may send it: an optional port is stripped, ASCII
/// case is folded and one trailing dot is allowed. Anything else is *not a tenant host*: IP
/// literals, other domains, the base domain itself, extra labels (`a.b.example.com`), empty
/// labels, userinfo (`acme.example.com@evil.test`), labels that are not LDH and reserved labels
/// (`www` and `api` by default).
///
/// ```
/// use tenantry_resolve::HostRules;
///
/// let rules = HostRules::new(["example.com", "example.net"])?;
/// assert_eq!(rules.tenant_slug("acme.example.com").unwrap().as_str(), "acme");
/// assert_eq!(rules.tenant_slug("ACME.Example.NET.:8443").unwrap().as_str(), "acme");
/// assert!(rules.tenant_slug("www.example.com").is_none()); // reserved
/// assert!(rules.tenant_slug("a.b.example.com").is_none()); // extra label
/// assert!(rules.tenant_slug("127.0.0.1").is_none());
/// assert!(rules.tenant_slug("acme.example.com.evil.test").is_none());
/// # Ok::<(), tenantry_resolve::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HostRules {
    /// Each base domain, lowercase, with a leading dot (`.example.com`).
    suffixes: Vec<Box<str>>,
    reserved: Vec<Box<str>>,
}

impl HostRules {
    /// The labels reserved by default: they never name a tenant.
    pub const DEFAULT_RESERVED: &'static [&'static str] = &["www", "api"];

    /// Rules for one or more base domains, with the [default reserved
    /// labels](Self::DEFAULT_RESERVED).
    ///
    /// Fails if there is no base domain, if one is not a valid DNS name with a non-numeric
    /// top-level label, or if one base domain lies under another (the same host would then
    /// mean two different things).
    pub fn new<I, D>(base_domains: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<str>,
    {
        let mut suffixes: Vec<Box<str>> = Vec::new();
        for domain in base_domains {
            let d = domain.as_ref().to_ascii_lowercase();
            let d = d.strip_suffix('.').unwrap_or(&d);
            if !is_valid_base_domain(d) {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidBaseDomain,
                    format!("invalid base domain {d:?}"),
                ));
            }
            suffixes.push(format!(".{d}").into());
        }
        if suffixes.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidBaseDomain,
                "at least one base domain is required",
            ));
        }
        for a in &suffixes {
            for b in &suffixes {
                if !std::ptr::eq(a, b) && (a == b || a.ends_with(&**b)) {
                    return Err(ConfigError::new(
                        ConfigErrorKind::InvalidBaseDomain,
                        format!(
                            "base domain {:?} is the same as or under {:?}",
                            &a[1..],
                            &b[1..]
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            suffixes,
            reserved: Self::DEFAULT_RESERVED.iter().map(|&s| s.into()).collect(),
        })
    }

    /// Replaces the reserved labels. Labels are compared after case folding.
    ///
    /// ```
    /// use tenantry_resolve::HostRules;
    ///
    /// let rules = HostRules::new(["example.com"])?.reserved_labels(["admin"]);
    /// assert!(rules.tenant_slug("admin.example.com").is_none());
    /// assert!(rules.tenant_slug("www.example.com").is_some());
    /// # Ok::<(), tenantry_resolve::ConfigError>(())
    /// ```
    pub fn reserved_labels<I, L>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = L>,
        L: AsRef<str>,
    {
        self.reserved = labels
            .into_iter()
            .map(|l| l.as_ref().to_ascii_lowercase().into())
            .collect();
        self
    }

    /// The base domains, lowercase.
    pub fn base_domains(&self) -> impl Iterator<Item = &str> {
        self.suffixes.iter().map(|s| &s[1..])
    }

    /// The tenant slug a host (a `Host` header value or a URI authority) selects, if any.
    ///
    /// Never panics and never allocates more than the returned slug, whatever the input.
    pub fn tenant_slug(&self, host: &str) -> Option<Slug> {
        let name = host_name(host)?;
        // Case folding without allocating: compare suffixes ignoring ASCII case, then fold the
        // one label we keep.
        for suffix in &self.suffixes {
            let Some(split) = name.len().checked_sub(suffix.len()) else {
                continue;
            };
            if split == 0 || !name.is_char_boundary(split) {
                continue;
            }
            let (label, rest) = name.split_at(split);
            if !rest.eq_ignore_ascii_case(suffix) || label.contains('.') {
                continue;
            }
            if self.reserved.iter().any(|r| r.eq_ignore_ascii_case(label)) {
                return None;
            }
            return Slug::new(&label.to_ascii_lowercase()).ok();
        }
        None
    }
}

/// The host name of an authority: port stripped, one trailing dot removed, every label LDH.
/// `None` for IP-literals, userinfo, bad ports, empty labels and anything not LDH.
fn host_name(authority: &str) -> Option<&str> {
    let name = match authority.rsplit_once(':') {
        Some((name, port)) => {
            if port.is_empty()
                || port.len() > 5
                || !port.bytes().all(|b| b.is_ascii_digit())
                || port.parse::<u32>().ok()? > 65_535
            {
                return None;
            }
            name
        }
        None => authority,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return None;
    }
    // This also rejects `@` (userinfo), `[`/`]` (IPv6 literals), a second `:`, `%`, spaces and
    // every non-ASCII byte.
    if !name.split('.').all(is_ldh_label) {
        return None;
    }
    Some(name)
}

/// A DNS label of letters, digits and inner hyphens, 1 to 63 octets, in any case.
fn is_ldh_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= Slug::MAX_LEN
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn is_valid_base_domain(d: &str) -> bool {
    // A numeric last label would make IPv4 addresses look like names under it.
    d.len() <= MAX_HOST_LEN - 2
        && d.split('.').all(is_ldh_label)
        && d.rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> HostRules {
        HostRules::new(["example.com", "tenants.example.org"]).unwrap()
    }

    fn slug(host: &str) -> Option<String> {
        rules().tenant_slug(host).map(|s| s.as_str().to_owned())
    }

    #[test]
    fn label_under_each_base_domain_selects_the_tenant() {
        assert_eq!(slug("acme.example.com").as_deref(), Some("acme"));
        assert_eq!(slug("acme.tenants.example.org").as_deref(), Some("acme"));
        assert_eq!(slug("a-1.example.com").as_deref(), Some("a-1"));
    }

    #[test]
    fn port_is_stripped_case_is_folded_and_one_trailing_dot_is_allowed() {
        assert_eq!(slug("acme.example.com:8080").as_deref(), Some("acme"));
        assert_eq!(slug("AcMe.EXAMPLE.com").as_deref(), Some("acme"));
        assert_eq!(slug("acme.example.com.").as_deref(), Some("acme"));
        assert_eq!(slug("acme.example.com.:443").as_deref(), Some("acme"));
        assert_eq!(slug("acme.example.com.."), None);
    }

    #[test]
    fn bad_ports_are_not_tenant_hosts() {
        for h in [
            "acme.example.com:",
            "acme.example.com:99999",
            "acme.example.com:80a",
            "acme.example.com:+80",
            "acme.example.com:80:80",
            "acme.example.com:000000",
        ] {
            assert_eq!(slug(h), None, "{h:?}");
        }
    }

    #[test]
    fn ips_foreign_domains_and_the_base_itself_are_not_tenant_hosts() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:443",
            "10.example.com.10.0.0.1",
            "example.com",
            "tenants.example.org",
            "acme.example.net",
            "acme.notexample.com",
            "acmeexample.com",
            "acme.example.com.evil.test",
            "localhost",
            "",
            ".",
            ":80",
        ] {
            assert_eq!(slug(h), None, "{h:?}");
        }
    }

    #[test]
    fn extra_and_empty_labels_are_not_tenant_hosts() {
        for h in [
            "a.b.example.com",
            "www.acme.example.com",
            ".example.com",
            "..example.com",
            "acme..example.com",
            ".acme.example.com",
        ] {
            assert_eq!(slug(h), None, "{h:?}");
        }
    }

    #[test]
    fn userinfo_tricks_are_not_tenant_hosts() {
        for h in [
            "acme.example.com@evil.test",
            "evil.test@acme.example.com",
            "user:pass@acme.example.com",
            "acme.example.com%40evil.test",
        ] {
            assert_eq!(slug(h), None, "{h:?}");
        }
    }

    #[test]
    fn non_ldh_labels_are_not_tenant_hosts() {
        for h in [
            "ac_me.example.com",
            "-acme.example.com",
            "acme-.example.com",
            "ac me.example.com",
            "äcme.example.com",
            "xn--acme\u{0}.example.com",
            "acme\t.example.com",
            &format!("{}.example.com", "a".repeat(64)),
        ] {
            assert_eq!(slug(h), None, "{h:?}");
        }
        assert!(slug(&format!("{}.example.com", "a".repeat(63))).is_some());
    }

    #[test]
    fn reserved_labels_never_name_a_tenant_and_are_configurable() {
        assert_eq!(slug("www.example.com"), None);
        assert_eq!(slug("API.example.com"), None);
        let r = rules().reserved_labels(["Admin"]);
        assert!(r.tenant_slug("admin.example.com").is_none());
        assert_eq!(r.tenant_slug("www.example.com").unwrap().as_str(), "www");
    }

    #[test]
    fn invalid_or_nested_base_domains_are_config_errors() {
        assert!(HostRules::new(Vec::<&str>::new()).is_err());
        assert!(HostRules::new(["exa mple.com"]).is_err());
        assert!(HostRules::new(["0.0.1"]).is_err());
        assert!(HostRules::new([""]).is_err());
        assert!(HostRules::new(["example.com", "eu.example.com"]).is_err());
        assert!(HostRules::new(["example.com", "Example.com."]).is_err());
        assert!(HostRules::new(["localhost"]).is_ok());
        assert!(HostRules::new(["Example.COM."]).is_ok());
    }

    // --- property tests: the parser selects T exactly for T's label under a base domain ---

    const BASES: [&str; 2] = ["example.com", "tenants.example.org"];

    /// An independent oracle, written from the rule rather than from the parser.
    fn expected(host: &str) -> Option<String> {
        let lower = host.to_ascii_lowercase();
        let mut h = lower.as_str();
        if let Some(i) = h.rfind(':') {
            let port = &h[i + 1..];
            if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            if port.parse::<u32>().unwrap() > 65_535 {
                return None;
            }
            h = &h[..i];
        }
        let h = h.strip_suffix('.').unwrap_or(h);
        BASES.iter().find_map(|base| {
            let label = h.strip_suffix(&format!(".{base}"))?;
            (Slug::is_valid(label) && label != "www" && label != "api").then(|| label.to_owned())
        })
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("acme".to_owned()),
            Just("GloBex".to_owned()),
            Just("a1".to_owned()),
            Just("x-y".to_owned()),
            Just("www".to_owned()),
            Just("Api".to_owned()),
            Just("weird".to_owned()),
            Just("example".to_owned()),
            Just("com".to_owned()),
            Just("tenants".to_owned()),
            Just("org".to_owned()),
            Just("".to_owned()),
            Just("127".to_owned()),
            Just("-x".to_owned()),
            Just("a_b".to_owned()),
            "[a-zA-Z0-9@:\\[\\]%_-]{0,6}",
        ]
    }

    /// A base domain, a case variant of one, or a near miss.
    fn base() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("example.com".to_owned()),
            Just("EXAMPLE.Com".to_owned()),
            Just("tenants.example.org".to_owned()),
            Just("Tenants.Example.ORG".to_owned()),
            Just("example.org".to_owned()),
            Just("example.co".to_owned()),
            Just("xample.com".to_owned()),
            Just("example.com.evil".to_owned()),
            Just("example.com@evil.test".to_owned()),
        ]
    }

    fn host() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            // Anything made of label-ish pieces.
            1 => proptest::collection::vec(piece(), 1..6).prop_map(|l| l.join(".")),
            // One piece directly in front of a (near-)base domain.
            3 => (piece(), base()).prop_map(|(l, b)| format!("{l}.{b}")),
            // Several pieces in front of one.
            1 => (proptest::collection::vec(piece(), 1..3), base())
                .prop_map(|(l, b)| format!("{}.{b}", l.join("."))),
        ];
        (
            name,
            prop_oneof![
                4 => Just(String::new()),
                1 => Just(".".to_owned()),
                1 => Just("..".to_owned())
            ],
            prop_oneof![
                4 => Just(String::new()),
                1 => Just(":443".to_owned()),
                1 => Just(":8080".to_owned()),
                1 => Just(":".to_owned()),
                1 => Just(":70000".to_owned()),
                1 => "[:0-9a-z]{0,7}",
            ],
        )
            .prop_map(|(name, dot, port)| format!("{name}{dot}{port}"))
    }

    #[test]
    fn the_host_generator_reaches_both_outcomes() {
        // Guards the property below against a generator that never selects a tenant.
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let rules = HostRules::new(BASES).unwrap();
        let selected = (0..2000)
            .filter(|_| {
                let h = host().new_tree(&mut runner).unwrap().current();
                rules.tenant_slug(&h).is_some()
            })
            .count();
        assert!(
            selected > 100 && selected < 1900,
            "selected {selected} of 2000"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn host_selects_tenant_exactly_when_it_is_that_tenants_label_under_a_base(h in host()) {
            let rules = HostRules::new(BASES).unwrap();
            let got = rules.tenant_slug(&h).map(|s| s.as_str().to_owned());
            prop_assert_eq!(got, expected(&h), "host {:?}", h);
        }

        #[test]
        fn host_parser_never_panics_on_arbitrary_text(h in "\\PC{0,80}") {
            let rules = HostRules::new(BASES).unwrap();
            if let Some(slug) = rules.tenant_slug(&h) {
                // Whatever it selects is a valid slug directly under a base domain.
                let lower = h.to_ascii_lowercase();
                let under_a_base = BASES.iter().any(|b| lower.contains(&format!("{slug}.{b}")));
                prop_assert!(under_a_base);
            }
        }
    }
}
