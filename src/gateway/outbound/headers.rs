//! The upstream response headers that may reach the agent: an allow-list,
//! each value validated against what the header may hold; anything else,
//! and any header sent twice, stays at the gateway.

use http::HeaderMap;

use crate::mcp::era::{PROTOCOL_VERSION_HEADER, SESSION_HEADER};

/// Whether a header value may leave.
type Validator = fn(&str) -> bool;

/// Builds the headers the agent sees from the upstream's: an allow-list,
/// each value validated; anything else is dropped. `Content-Type` is set by
/// the caller from what the gateway actually sends.
pub fn response_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let valid: [(&str, Validator); 5] = [
        (SESSION_HEADER, crate::session::valid_session_id),
        (PROTOCOL_VERSION_HEADER, valid_protocol_version),
        ("cache-control", valid_cache_control),
        ("retry-after", valid_retry_after),
        ("allow", valid_allow),
    ];
    for (name, ok) in valid {
        let mut values = from.get_all(name).iter();
        // One value each: a repeated header is ambiguous, so dropped.
        if let (Some(v), None) = (values.next(), values.next())
            && v.to_str().is_ok_and(ok)
        {
            out.insert(name, v.clone());
        }
    }
    out
}

fn valid_protocol_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Cache directives from a fixed vocabulary, with numeric arguments only.
fn valid_cache_control(v: &str) -> bool {
    const FLAGS: &[&str] = &[
        "no-cache",
        "no-store",
        "private",
        "public",
        "must-revalidate",
        "proxy-revalidate",
        "no-transform",
        "immutable",
    ];
    const NUMERIC: &[&str] = &[
        "max-age",
        "s-maxage",
        "stale-while-revalidate",
        "stale-if-error",
    ];
    v.len() <= 256
        && v.split(',')
            .map(str::trim)
            .all(|d| match d.split_once('=') {
                None => FLAGS.contains(&d.to_ascii_lowercase().as_str()),
                Some((k, n)) => {
                    NUMERIC.contains(&k.to_ascii_lowercase().as_str())
                        && !n.is_empty()
                        && n.len() <= 10
                        && n.bytes().all(|b| b.is_ascii_digit())
                }
            })
}

/// Delay seconds, or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn valid_retry_after(v: &str) -> bool {
    if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    const DAYS: &[&str] = &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: &[&str] = &[
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = v.split(' ').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match parts[..] {
        [day, dd, mon, yyyy, time, "GMT"] => {
            day.strip_suffix(',').is_some_and(|d| DAYS.contains(&d))
                && digits(dd, 2)
                && MONTHS.contains(&mon)
                && digits(yyyy, 4)
                && time.len() == 8
                && time
                    .split(':')
                    .collect::<Vec<_>>()
                    .iter()
                    .all(|t| digits(t, 2))
        }
        _ => false,
    }
}

fn valid_allow(v: &str) -> bool {
    v.split(',')
        .map(str::trim)
        .all(|m| matches!(m, "GET" | "POST" | "DELETE" | "OPTIONS" | "HEAD"))
}
