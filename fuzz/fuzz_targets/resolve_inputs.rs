//! Host, tenant-header and token parsing, alone and through the whole layer.
//!
//! `cargo +nightly fuzz run resolve_inputs` (from this directory). Input: up to five fields
//! separated by 0xFF: Host, X-Tenant-ID, Authorization, X-API-Key, Forwarded; `$T` in the
//! Authorization field stands for a valid token and `$K` in the key field for a valid key.
//! The check itself is shared with the stable stress test of tenantry-resolve.
#![no_main]

#[path = "../../crates/tenant-resolve/tests/harness/mod.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static HARNESS: harness::Harness = harness::Harness::new();
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| h.check(data));
});
