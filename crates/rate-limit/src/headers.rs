//! The response headers: draft-ietf-httpapi-ratelimit-headers-10 `RateLimit-Policy` and
//! `RateLimit`, `Retry-After` on 429, and the legacy `X-RateLimit-*` trio as an opt-in.
//!
//! ```text
//! RateLimit-Policy: "pro";q=1000;w=60
//! RateLimit: "pro";r=997;t=1
//! ```
//! `q` is the sustained quota per window `w` (60 s); `r` the whole requests left right now;
//! `t` the seconds until the key is fully replenished, rounded up.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::HeaderMap;

use crate::key::Decision;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit` (legacy, opt-in).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (legacy, opt-in).
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (legacy, opt-in; seconds from now).
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up: a positive wait never becomes 0.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Appends `name` as an RFC 9651 sf-string: printable ASCII only, `"` and `\` escaped. Other
/// characters become `_`, so any plan name yields a valid header.
fn push_sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
}

/// Appends `n` in decimal (`itoa`: `write!` costs about ten times as much, and these headers go
/// on every response).
fn push_int(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// The header value of `s`, taking its buffer rather than copying it.
fn value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// `Retry-After` for a denied decision: seconds, rounded up, at least 1.
pub(crate) fn retry_after(decision: &Decision) -> Option<HeaderValue> {
    let wait = decision.retry_after()?;
    Some(HeaderValue::from(ceil_secs(wait).max(1)))
}

/// Appends the RateLimit headers of `decision` under policy `name`.
pub(crate) fn append(headers: &mut HeaderMap, name: &str, decision: &Decision, legacy: bool) {
    let quota = decision.quota();
    let remaining = decision.remaining();
    let reset = ceil_secs(decision.reset_after());
    // Room for the escaped name (at most twice its bytes, quoted) and the parameters (one
    // number of up to 10 digits in `policy`, two of up to 20 in `state`): neither grows.
    let capacity = 2 * name.len() + 2 + 32;
    let mut policy = String::with_capacity(capacity);
    push_sf_string(&mut policy, name);
    let mut state = String::with_capacity(capacity + 16);
    state.push_str(&policy);
    policy.push_str(";q=");
    push_int(&mut policy, quota.requests_per_minute());
    policy.push_str(";w=60");
    state.push_str(";r=");
    push_int(&mut state, remaining);
    state.push_str(";t=");
    push_int(&mut state, reset);
    if let Some(v) = value(policy) {
        headers.append(RATELIMIT_POLICY.clone(), v);
    }
    if let Some(v) = value(state) {
        headers.append(RATELIMIT.clone(), v);
    }
    if legacy {
        headers.insert(
            X_RATELIMIT_LIMIT.clone(),
            HeaderValue::from(quota.requests_per_minute()),
        );
        headers.insert(X_RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
        headers.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(reset));
    }
}

/// Adds `Retry-After` when the decision is a denial.
pub(crate) fn insert_retry_after(headers: &mut HeaderMap, decision: &Decision) {
    if let Some(v) = retry_after(decision) {
        headers.insert(RETRY_AFTER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_waits_round_up_to_at_least_one_second() {
        assert_eq!(ceil_secs(Duration::from_micros(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn policy_names_are_escaped_to_valid_sf_strings() {
        let mut s = String::new();
        push_sf_string(&mut s, "a\"b\\c\u{e9}\n");
        assert_eq!(s, r#""a\"b\\c__""#);
    }
}
