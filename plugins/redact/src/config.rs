//! The configuration as written in the policy file, checked and compiled.

use std::collections::{BTreeMap, HashSet};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::detect::{Enabled, Kind};
use crate::normalize::normalize;
use crate::render::canonical;

/// What happens to a detected value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `[REDACTED:kind]`.
    Mask,
    /// Keep a harmless part (last digits, the e-mail domain, ...).
    Partial,
    /// `[kind:<12 hex>]`, a keyed HMAC-SHA256 of the normalized value.
    Hash,
    /// Refuse the whole message.
    Block,
    /// Do not detect.
    Off,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Mask => "mask",
            Action::Partial => "partial",
            Action::Hash => "hash",
            Action::Block => "block",
            Action::Off => "off",
        }
    }
}

/// What happens to an encoding layer (`decode = { base64 = "block" }`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Decode, detect, re-encode the redacted text (block when that is not
    /// lossless).
    #[default]
    Redact,
    /// Decode and detect; a finding inside refuses the whole message.
    Block,
    /// Do not decode (the encoded text is still scanned as it is).
    Off,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Redact => "redact",
            Layer::Block => "block",
            Layer::Off => "off",
        }
    }
}

/// Per encoding layer, what happens to it. Every layer defaults to
/// `redact`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decode {
    #[serde(default)]
    pub base64: Layer,
    #[serde(default)]
    pub percent: Layer,
    #[serde(default)]
    pub entities: Layer,
    #[serde(default)]
    pub json: Layer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    decode: Decode,
    #[serde(default)]
    detectors: BTreeMap<String, Action>,
    #[serde(default)]
    default_action: Option<Action>,
    #[serde(default)]
    custom: Vec<RawCustom>,
    #[serde(default)]
    hmac_key: Option<String>,
    #[serde(default)]
    scan_requests: bool,
    #[serde(default)]
    allow_values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustom {
    name: String,
    regex: String,
    #[serde(default)]
    action: Option<Action>,
}

/// One detector as configured: a built-in kind or a custom pattern.
#[derive(Debug)]
pub struct Detector {
    pub name: String,
    pub kind: Option<Kind>,
    pub action: Action,
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// Built-ins at [`Kind::index`], then custom patterns in order.
    pub detectors: Vec<Detector>,
    /// Built-ins with an action other than `off`.
    pub enabled: Enabled,
    /// Custom patterns that run: (detector index, regex).
    pub custom: Vec<(usize, regex::Regex)>,
    pub hmac: Option<Hmac<Sha256>>,
    pub scan_requests: bool,
    /// The encoding layers opened before detection.
    pub decode: Decode,
    /// Values never redacted: as written (normalized), and per kind in
    /// canonical form (see [`allow_key`]).
    pub allow: HashSet<String>,
}

pub const MIN_HMAC_KEY: usize = 16;
/// Compiled size and lazy-DFA cache per custom pattern (bounds memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parses and checks the configuration text given to `init`.
pub fn parse(text: &str) -> Result<Config, String> {
    let err = |e: String| format!("redact: invalid config: {e}");
    if !text.trim_start().starts_with('{') {
        return Err(err("expected a JSON object (a TOML table)".into()));
    }
    let raw: RawConfig = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;

    let default = raw.default_action.unwrap_or(Action::Mask);
    let mut detectors: Vec<Detector> = Kind::ALL
        .iter()
        .map(|&k| Detector {
            name: k.name().to_string(),
            kind: Some(k),
            action: default,
        })
        .collect();
    for (name, action) in &raw.detectors {
        let Some(kind) = Kind::from_name(name) else {
            let known: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
            return Err(err(format!(
                "detectors: unknown detector {name:?} (known: {}; custom patterns go in `custom`)",
                known.join(", ")
            )));
        };
        // `detectors` holds every built-in kind, at its index.
        if let Some(d) = detectors.get_mut(kind.index()) {
            d.action = *action;
        }
    }

    let mut custom = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    for (i, c) in raw.custom.into_iter().enumerate() {
        let at = format!("custom[{i}] ({:?})", c.name);
        let valid_name = !c.name.is_empty()
            && c.name.len() <= 32
            && c.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && c.name
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_lowercase);
        if !valid_name {
            return Err(err(format!(
                "{at}: name must be 1-32 characters of a-z, 0-9 and _, starting with a letter"
            )));
        }
        if Kind::from_name(&c.name).is_some() {
            return Err(err(format!(
                "{at}: name is a built-in detector; pick another"
            )));
        }
        if !names.insert(c.name.clone()) {
            return Err(err(format!("{at}: duplicate name")));
        }
        let re = regex::RegexBuilder::new(&c.regex)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| err(format!("{at}: invalid regex {:?}: {e}", c.regex)))?;
        if re.is_match("") {
            return Err(err(format!(
                "{at}: regex {:?} matches the empty string",
                c.regex
            )));
        }
        let action = c.action.unwrap_or(Action::Mask);
        if action != Action::Off {
            custom.push((detectors.len(), re));
        }
        detectors.push(Detector {
            name: c.name,
            kind: None,
            action,
        });
    }

    let mut enabled = Enabled::default();
    for d in &detectors {
        if let (Some(k), true) = (d.kind, d.action != Action::Off) {
            enabled.set(k);
        }
    }
    if !enabled.any() && custom.is_empty() {
        return Err(err(
            "every detector is off (remove the plugin from the chain instead)".into(),
        ));
    }

    let hashing: Vec<&str> = detectors
        .iter()
        .filter(|d| d.action == Action::Hash)
        .map(|d| d.name.as_str())
        .collect();
    let hmac = match raw.hmac_key {
        Some(key) if key.len() < MIN_HMAC_KEY => {
            return Err(err(format!(
                "hmac_key must be at least {MIN_HMAC_KEY} bytes (use a long random string)"
            )));
        }
        Some(key) => Some(
            Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .map_err(|e| err(format!("hmac_key: {e}")))?,
        ),
        None if !hashing.is_empty() => {
            return Err(err(format!(
                "action \"hash\" (used by {}) needs `hmac_key`",
                hashing.join(", ")
            )));
        }
        None => None,
    };

    let mut allow = HashSet::new();
    for (i, v) in raw.allow_values.iter().enumerate() {
        if v.trim().is_empty() {
            return Err(err(format!("allow_values[{i}] is empty")));
        }
        let v = normalize(v).into_owned();
        for k in Kind::ALL {
            let c = canonical(Some(k), &v);
            if !c.is_empty() {
                allow.insert(allow_key(k, &c));
            }
        }
        allow.insert(v);
    }

    Ok(Config {
        detectors,
        enabled,
        custom,
        hmac,
        scan_requests: raw.scan_requests,
        decode: raw.decode,
        allow,
    })
}

impl Config {
    /// One line for the log: which detectors run with which action.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for action in [Action::Mask, Action::Partial, Action::Hash, Action::Block] {
            let names: Vec<&str> = self
                .detectors
                .iter()
                .filter(|d| d.action == action)
                .map(|d| d.name.as_str())
                .collect();
            if !names.is_empty() {
                parts.push(format!("{}: {}", action.name(), names.join(" ")));
            }
        }
        let d = self.decode;
        let layers: Vec<String> = [
            ("base64", d.base64),
            ("percent", d.percent),
            ("entities", d.entities),
            ("json", d.json),
        ]
        .iter()
        .filter(|(_, l)| *l != Layer::Redact)
        .map(|(name, l)| format!("{name} {}", l.name()))
        .collect();
        if !layers.is_empty() {
            parts.push(format!("decode: {}", layers.join(", ")));
        }
        format!(
            "redact: {}; requests {}",
            parts.join("; "),
            if self.scan_requests {
                "scanned"
            } else {
                "not scanned"
            }
        )
    }
}

/// The allow-list entry for a canonical value of one kind.
pub fn allow_key(kind: Kind, canonical: &str) -> String {
    format!("{}\0{canonical}", kind.name())
}
