//! Config files (TOML) for `portcullis relay` and `portcullis gateway`.
//!
//! Each file is read into raw serde types (`deny_unknown_fields`, so a typo is
//! an error, not a silently ignored setting), then validated into the
//! settings the relay and gateway run with, which cannot hold bad values.
//!
//! - [`relay`]: listeners, TLS, tunnels and agent keys.
//! - [`gateway`]: relays to dial, the tunnel credential, limits, servers.

pub mod gateway;
pub mod relay;
pub mod upstream;

/// The documented example `relay.toml` (`portcullis example relay`).
pub const EXAMPLE_RELAY: &str = include_str!("examples/relay.toml");
/// The documented example `gateway.toml` (`portcullis example gateway`).
pub const EXAMPLE_GATEWAY: &str = include_str!("examples/gateway.toml");

use std::path::{Path, PathBuf};

/// Why a config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl ConfigError {
    /// `field` of the config at `path` is wrong: `message` says how.
    pub(crate) fn invalid(path: &Path, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: path.display().to_string(),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Reads and parses a TOML file into `T`.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Paths in config files resolve against the file's directory, as in
/// policy files: one rule, kept with the policy layer below this one.
pub use crate::policy::file::relative_to;

/// A secret given inline is refused: configs get committed. Secrets come from
/// an environment variable or a file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing whitespace trimmed).
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// Reads the secret.
    pub fn read(&self, config: &Path, field: &str) -> Result<String, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: config.display().to_string(),
            field: field.to_owned(),
            message,
        };
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| invalid(format!("environment variable {var} is not set"))),
            (None, Some(file)) => {
                let p = relative_to(config, file);
                std::fs::read_to_string(&p)
                    .map(|s| s.trim_end().to_owned())
                    .map_err(|e| invalid(format!("cannot read {}: {e}", p.display())))
            }
            _ => Err(invalid("give exactly one of env or file".into())),
        }
    }
}

/// True for names usable in URLs and config keys: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
