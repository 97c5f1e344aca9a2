//! Stable stand-in for the cargo-fuzz target: the same check (`tests/harness`) over many
//! arbitrary and structured inputs, bounded so it stays fast in CI.

mod harness;

use proptest::prelude::*;

thread_local! {
    static HARNESS: harness::Harness = harness::Harness::new();
}

fn check(data: &[u8]) -> usize {
    HARNESS.with(|h| h.check(data))
}

/// `TENANTRY_STRESS_CASES` raises the bound for a long local run.
fn cases() -> u32 {
    std::env::var("TENANTRY_STRESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn the_harness_reaches_served_and_refused_requests() {
    // Guards the properties below against a harness whose invariants are never exercised.
    assert_eq!(check(b"acme.example.com\xffacme\xffBearer $T"), 2);
    assert_eq!(check(b"\xff\xff\xff$K"), 2);
    assert_eq!(
        check(b"acme.example.org\xff\xff\xff"),
        1,
        "trusting layer only"
    );
    assert_eq!(check(b"globex.example.com\xff\xffBearer $T"), 0);
    assert_eq!(check(b"\xffgone"), 0);
}

/// Field contents that reach deep paths: real hosts, selectors and credential shapes.
fn field() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(b"acme.example.com".to_vec()),
        Just(b"ACME.example.org.:443".to_vec()),
        Just(b"globex.example.com".to_vec()),
        Just(b"acme".to_vec()),
        Just(b"globex".to_vec()),
        Just(b"gone".to_vec()),
        Just(b"Bearer $T".to_vec()),
        Just(b"bearer $T".to_vec()),
        Just(b"Bearer $T.x".to_vec()),
        Just(b"Bearer tk_acme_0123456789abcdef".to_vec()),
        Just(b"$K".to_vec()),
        Just(b"host=globex.example.com".to_vec()),
        Just(b"for=1.2.3.4;host=\"acme.example.com\"".to_vec()),
        "[ -~]{0,30}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_break_the_binding_rules(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = check(&data);
    }

    #[test]
    fn structured_inputs_never_panic_or_break_the_binding_rules(fields in proptest::collection::vec(field(), 0..6)) {
        let _ = check(&fields.join(&0xFF));
    }
}
