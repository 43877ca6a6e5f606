//! What a detected value is replaced with.

use std::borrow::Cow;
use std::fmt::Write;
use std::net::Ipv6Addr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Action, Detector};
use crate::detect::Kind;

/// The canonical form of a value, so that spelling variants hash (and match
/// `allow_values`) alike: e-mail lowercased; card, SSN and phone digits only
/// (a leading `1` dropped from 11-digit phone numbers); IBAN uppercase
/// without spaces; IP addresses in standard notation. Other kinds as found
/// (after NFKC and invisible-character removal).
pub fn canonical(kind: Option<Kind>, v: &str) -> Cow<'_, str> {
    let digits = || -> String { v.chars().filter(char::is_ascii_digit).collect() };
    match kind {
        Some(Kind::Email) => Cow::Owned(v.to_ascii_lowercase()),
        Some(Kind::Card | Kind::Ssn) => Cow::Owned(digits()),
        Some(Kind::Phone) => {
            let d = digits();
            match d.strip_prefix('1') {
                Some(rest) if d.len() == 11 => Cow::Owned(rest.to_string()),
                _ => Cow::Owned(d),
            }
        }
        Some(Kind::Iban) => Cow::Owned(
            v.chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        ),
        Some(Kind::Ipv4) => {
            let octets: Vec<u32> = v.split('.').filter_map(|o| o.parse().ok()).collect();
            match octets.as_slice() {
                [a, b, c, d] => Cow::Owned(format!("{a}.{b}.{c}.{d}")),
                _ => Cow::Borrowed(v),
            }
        }
        Some(Kind::Ipv6) => match v.parse::<Ipv6Addr>() {
            Ok(a) => Cow::Owned(a.to_string()),
            Err(_) => Cow::Borrowed(v),
        },
        _ => Cow::Borrowed(v),
    }
}

/// The replacement for `value` found by `det` (whose action is not `block`
/// or `off`).
pub fn render(det: &Detector, value: &str, hmac: Option<&Hmac<Sha256>>) -> String {
    let name = &det.name;
    match det.action {
        Action::Hash => match hmac {
            Some(key) => format!("[{name}:{}]", token(key, name, &canonical(det.kind, value))),
            // Unreachable: init refuses `hash` without a key.
            None => mask(name),
        },
        Action::Partial => match det.kind {
            Some(_) => partial(det.kind, name, value),
            None => partial_custom(name, value),
        }
        .unwrap_or_else(|| mask(name)),
        _ => mask(name),
    }
}

fn mask(name: &str) -> String {
    format!("[REDACTED:{name}]")
}

/// The first 48 bits of HMAC-SHA256(key, name NUL canonical value), as hex.
pub fn token(key: &Hmac<Sha256>, name: &str, canonical: &str) -> String {
    let mut mac = key.clone();
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(canonical.as_bytes());
    let out = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(12);
    for b in out.iter().take(6) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// `partial`: what is kept of each kind. `None` means mask instead.
fn partial(kind: Option<Kind>, name: &str, v: &str) -> Option<String> {
    let last4 = |s: &str| -> Option<String> {
        let chars: Vec<char> = s.chars().collect();
        let start = chars.len().checked_sub(4)?;
        Some(chars.get(start..)?.iter().collect())
    };
    let digits: String = v.chars().filter(char::is_ascii_digit).collect();
    Some(match kind? {
        Kind::Email => {
            let (_, domain) = v.rsplit_once('@')?;
            // A domain with numeric labels may carry an address: mask.
            if domain
                .split('.')
                .any(|l| l.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            format!("[email:***@{}]", domain.to_ascii_lowercase())
        }
        Kind::Card => format!("[card:****{}]", last4(&digits)?),
        Kind::Phone => format!("[phone:****{}]", last4(&digits)?),
        Kind::Ssn => format!("[ssn:***-**-{}]", last4(&digits)?),
        Kind::Iban => {
            let c = canonical(Some(Kind::Iban), v);
            format!("[iban:{}****{}]", c.get(..2)?, last4(&c)?)
        }
        Kind::Ipv4 => {
            let c = canonical(Some(Kind::Ipv4), v);
            let (net, _) = c.rsplit_once('.')?;
            format!("[ipv4:{net}.*]")
        }
        Kind::Ipv6 => {
            let s = v.parse::<Ipv6Addr>().ok()?.segments();
            format!("[ipv6:{:x}:{:x}:{:x}:*]", s[0], s[1], s[2])
        }
        Kind::AwsAccessKey | Kind::GoogleApiKey => format!("[{name}:{}****]", v.get(..4)?),
        Kind::SlackToken => format!("[{name}:{}****]", v.get(..5)?),
        Kind::GithubToken => {
            let prefix = if v.starts_with("github_pat_") {
                "github_pat_"
            } else {
                v.get(..4)?
            };
            format!("[{name}:{prefix}****]")
        }
        Kind::Jwt | Kind::PrivateKey | Kind::Secret | Kind::AwsSecretKey => return None,
    })
}

/// `partial` for a custom pattern: the last four characters when the value
/// has at least eight.
fn partial_custom(name: &str, v: &str) -> Option<String> {
    let chars: Vec<char> = v.chars().collect();
    if chars.len() < 8 {
        return None;
    }
    let tail: String = chars.get(chars.len() - 4..)?.iter().collect();
    Some(format!("[{name}:****{tail}]"))
}
