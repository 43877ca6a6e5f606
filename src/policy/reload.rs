//! Hot reload: the gateway reloads its policy when the file changes or on
//! SIGHUP. The new policy is loaded and every plugin initialised before it is
//! swapped in atomically; calls in flight finish on the policy they started
//! with; a broken policy is rejected and logged, and the old one keeps
//! serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::catalog::Catalog;
use super::{Policy, PolicyError};
use crate::plugin::PluginEngine;

/// How often the policy file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What serves a policy: the gateway. A trait so the policy layer does not
/// import the gateway that uses it.
pub trait Serving: Send + Sync {
    /// The tool catalog the policy's plugins read.
    fn catalog(&self) -> Arc<Catalog>;
    /// Swaps the policy serving; calls in flight keep theirs.
    fn set_policy(&self, policy: Option<Arc<Policy>>);
}

/// Reloads one gateway's policy from one file.
pub struct Reloader {
    gateway: Arc<dyn Serving>,
    path: PathBuf,
    engine: PluginEngine,
    /// Digest of the file text last seen (loaded or rejected).
    seen: Option<String>,
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reload {
    /// The file is unchanged.
    Unchanged,
    /// A new policy is serving; its digest.
    Swapped(String),
}

impl Reloader {
    /// A reloader for a gateway already serving the policy at `path`.
    pub fn new(gateway: Arc<dyn Serving>, path: PathBuf, engine: PluginEngine) -> Reloader {
        let seen = std::fs::read(&path)
            .ok()
            .map(|b| hex::encode(Sha256::digest(b)));
        Reloader {
            gateway,
            path,
            engine,
            seen,
        }
    }

    /// Reloads if the file changed (or always, with `force`). On error the
    /// serving policy is untouched.
    pub async fn check(&mut self, force: bool) -> Result<Reload, PolicyError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| PolicyError::Read {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        if !force && self.seen.as_deref() == Some(digest.as_str()) {
            return Ok(Reload::Unchanged);
        }
        self.seen = Some(digest);
        let policy =
            super::file::load_text(&text, &self.path, &self.engine, self.gateway.catalog()).await?;
        let digest = policy.digest.clone();
        self.gateway.set_policy(Some(Arc::new(policy)));
        Ok(Reload::Swapped(digest))
    }

    /// Polls the file and listens for SIGHUP until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let force = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            #[cfg(not(unix))]
            let force = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => false,
            };
            match self.check(force).await {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Swapped(digest)) => {
                    tracing::info!(policy = %self.path.display(), digest, "policy reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy reload rejected; the previous policy keeps serving");
                }
            }
        }
    }
}
