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

/// How `c` appears inside an RFC 9651 sf-string: printable ASCII only, `"` and `\` escaped
/// (`true`: a `\` goes before it). Other characters become `_`, so any plan name yields a
/// valid header. Either way one ASCII byte, or two with the escape.
fn sf_char(c: char) -> (bool, char) {
    match c {
        '"' | '\\' => (true, c),
        ' '..='~' => (false, c),
        _ => (false, '_'),
    }
}

/// Appends `name` as an sf-string (see [`sf_char`]).
fn push_sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        let (escaped, shown) = sf_char(c);
        if escaped {
            out.push('\\');
        }
        out.push(shown);
    }
    out.push('"');
}

/// The length of `name` as [`push_sf_string`] writes it.
fn sf_string_len(name: &str) -> usize {
    2 + name
        .chars()
        .map(|c| 1 + usize::from(sf_char(c).0))
        .sum::<usize>()
}

/// The header value of `s`, taking its buffer rather than copying it. `s` should be exactly
/// as long as its capacity: `Bytes` then owns the buffer as it is, where a spare capacity
/// costs it one more allocation (its shared header).
fn value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// `Retry-After` for a denied decision: seconds, rounded up, at least 1.
pub(crate) fn retry_after(decision: &Decision) -> Option<HeaderValue> {
    let wait = decision.retry_after()?;
    Some(HeaderValue::from(ceil_secs(wait).max(1)))
}

/// The values of `RateLimit-Policy` and `RateLimit` for policy `name`, quota `q` per minute,
/// `r` requests left and `t` seconds to full. Each is built in a buffer of exactly its length
/// (`itoa` formats the numbers on the stack first), so [`value`] takes it as it is: one
/// allocation per header. These headers go on every response.
fn render(
    name: &str,
    q: impl itoa::Integer,
    r: impl itoa::Integer,
    t: impl itoa::Integer,
) -> (String, String) {
    let (mut qb, mut rb, mut tb) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    let (q, r, t) = (qb.format(q), rb.format(r), tb.format(t));
    let quoted = sf_string_len(name);
    let mut policy = String::with_capacity(quoted + ";q=".len() + q.len() + ";w=60".len());
    push_sf_string(&mut policy, name);
    let mut state = String::with_capacity(quoted + ";r=".len() + r.len() + ";t=".len() + t.len());
    state.push_str(&policy);
    policy.push_str(";q=");
    policy.push_str(q);
    policy.push_str(";w=60");
    state.push_str(";r=");
    state.push_str(r);
    state.push_str(";t=");
    state.push_str(t);
    (policy, state)
}

/// Appends the RateLimit headers of `decision` under policy `name`.
pub(crate) fn append(headers: &mut HeaderMap, name: &str, decision: &Decision, legacy: bool) {
    let quota = decision.quota();
    let remaining = decision.remaining();
    let reset = ceil_secs(decision.reset_after());
    let (policy, state) = render(name, quota.requests_per_minute(), remaining, reset);
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

    #[test]
    fn values_fill_their_buffers_exactly() {
        // A spare capacity would cost `Bytes` a second allocation per header.
        for name in [
            "pro",
            "",
            "a\"b\\c\u{e9}\n",
            "\u{1F600} plan",
            "free-tier_2",
        ] {
            for (q, r, t) in [
                (0u64, 0u64, 0u64),
                (100, 99, 1),
                (u64::MAX, u64::MAX, u64::MAX),
            ] {
                let (policy, state) = render(name, q, r, t);
                assert_eq!(policy.len(), policy.capacity(), "{policy}");
                assert_eq!(state.len(), state.capacity(), "{state}");
                assert_eq!(
                    policy.len(),
                    sf_string_len(name) + format!(";q={q};w=60").len()
                );
            }
        }
        let (policy, state) = render("pro", 1000u32, 997u64, 1u64);
        assert_eq!(
            (policy.as_str(), state.as_str()),
            (r#""pro";q=1000;w=60"#, r#""pro";r=997;t=1"#)
        );
    }
}
