//! The wasmtime engine shared by every plugin.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::cache::CacheDir;

/// How often the epoch advances: the granularity of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Instances the pooling allocator keeps room for, across all plugins.
pub const MAX_INSTANCES: u32 = 512;
/// Largest linear memory any instance may grow to; per-plugin caps are
/// enforced below this by the store limiter.
pub const MAX_MEMORY_BYTES: usize = 256 * 1024 * 1024;

/// Where compiled plugins are cached: `$PORTCULLIS_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/portcullis/plugins`, else `~/.cache/portcullis/plugins`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PORTCULLIS_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("portcullis").join("plugins"))
}

/// The engine and its epoch ticker.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    /// Components compiled by this engine, by digest of their bytes: a
    /// policy reload that changes only configuration compiles nothing.
    compiled: Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Component>>>>,
    /// Whether a refused cache directory was logged: once per engine, not
    /// once per plugin.
    refusal_logged: Arc<AtomicBool>,
}

impl PluginEngine {
    /// An engine with the pooling allocator and epoch interruption, and a
    /// thread advancing the epoch every [`EPOCH_TICK`]. Compiled components
    /// are cached under `cache_dir` (keyed by the digest of the bytes and
    /// the engine's compatibility hash) when one is given.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<PluginEngine, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 2)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 2)
            .max_memory_size(MAX_MEMORY_BYTES);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        Ok(PluginEngine {
            engine,
            cache_dir,
            compiled: Arc::default(),
            refusal_logged: Arc::default(),
        })
    }

    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes`, or loads the cached artifact of an earlier run
    /// (when the cache and the artifact pass the checks in
    /// [`cache`](super::cache); otherwise it compiles in memory).
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Arc<Component>, PluginError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let lock = || self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = lock().get(&digest) {
            return Ok(c.clone());
        }
        let component = self.compile_uncached(name, bytes)?;
        lock().insert(digest, component.clone());
        Ok(component)
    }

    fn compile_uncached(&self, name: &str, bytes: &[u8]) -> Result<Arc<Component>, PluginError> {
        let compile_err = |reason: String| PluginError::Compile {
            name: name.to_owned(),
            reason,
        };
        let compile = || {
            Component::new(&self.engine, bytes)
                .map(Arc::new)
                .map_err(|e| compile_err(format!("{e:#}")))
        };
        let Some(dir) = &self.cache_dir else {
            return compile();
        };
        let cache = match CacheDir::open(dir) {
            Ok(c) => c,
            Err(refusal) => {
                if !self.refusal_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        dir = %dir.display(),
                        %refusal,
                        "plugin cache not used: plugins are compiled in memory"
                    );
                }
                return compile();
            }
        };
        let key = self.cache_key(bytes);
        match cache.read(&key) {
            Ok(Some(artifact)) => {
                // SAFETY: the artifact was read from a regular file owned by
                // this user and writable by no one else, in a directory of
                // the same kind (`cache` checked both, the file through the
                // descriptor it was read from). Only this user can have
                // written it, and this program writes artifacts with
                // `Component::serialize` of an engine with the same
                // compatibility hash (it is in the key); wasmtime still
                // checks the header and refuses a mismatched artifact.
                if let Ok(c) = unsafe { Component::deserialize(&self.engine, &artifact) } {
                    return Ok(Arc::new(c));
                }
            }
            Ok(None) => {}
            Err(refusal) => tracing::warn!(
                plugin = name,
                dir = %dir.display(),
                %refusal,
                "cached plugin artifact not used: compiling it again"
            ),
        }
        let component = compile()?;
        if let Ok(serialized) = component.serialize()
            && let Err(e) = cache.write(&key, &serialized)
        {
            tracing::debug!(plugin = name, dir = %dir.display(), error = %e, "plugin artifact not cached");
        }
        Ok(component)
    }

    /// The artifact name of `bytes` compiled by this engine: the digest of
    /// the bytes and the engine's compatibility hash.
    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(bytes);
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut HashWriter(&mut h),
        );
        hex::encode(h.finalize())
    }
}

/// Feeds `Hash` output into a SHA-256.
struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::plugin::{LoadedPlugin, PluginLimits, builtin};

    const DENY_TOOLS_METHODS: [&str; 2] = ["tools/call", "tools/list"];

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pc-engine-{}", crate::secret::random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The methods deny-tools asks for when loaded through `engine`: its
    /// own two, or everything (none listed) if the noop artifact was
    /// deserialized in its place.
    async fn deny_tools_methods(engine: &PluginEngine) -> Vec<String> {
        LoadedPlugin::load(
            engine,
            "deny-tools",
            builtin("deny-tools").unwrap(),
            r#"{"deny": ["x"]}"#.into(),
            PluginLimits::default(),
            Arc::default(),
        )
        .await
        .unwrap()
        .interests
        .methods
    }

    /// Plants, under deny-tools' artifact name in `dir`, the compiled noop
    /// plugin: loading deny-tools from it would load noop. Returns the
    /// planted file.
    fn plant_noop(engine: &PluginEngine, dir: &Path) -> PathBuf {
        let noop = std::fs::read(concat!(env!("PORTCULLIS_PLUGIN_DIR"), "/noop.wasm")).unwrap();
        let noop = Component::new(engine.engine(), noop).unwrap();
        let key = engine.cache_key(builtin("deny-tools").unwrap());
        let path = dir.join(format!("{key}.cwasm"));
        std::fs::write(&path, noop.serialize().unwrap()).unwrap();
        chmod(&path, 0o600);
        path
    }

    #[tokio::test]
    async fn a_planted_artifact_is_deserialized_only_from_a_trusted_cache() {
        // Trusted directory and file: the planted artifact is what loads
        // (so the cases below would see it if they used it).
        let dir = scratch();
        chmod(&dir, 0o700);
        let engine = PluginEngine::new(Some(dir.clone())).unwrap();
        plant_noop(&engine, &dir);
        assert!(deny_tools_methods(&engine).await.is_empty());

        // A group- or other-writable directory: never read, never written.
        for mode in [0o770, 0o777] {
            let dir = scratch();
            let engine = PluginEngine::new(Some(dir.clone())).unwrap();
            let planted = plant_noop(&engine, &dir);
            let before = std::fs::read(&planted).unwrap();
            chmod(&dir, mode);
            assert_eq!(deny_tools_methods(&engine).await, DENY_TOOLS_METHODS);
            assert_eq!(std::fs::read(&planted).unwrap(), before);
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        }

        // A writable artifact in a trusted directory: not read, and
        // replaced by a private one of this engine's.
        let dir = scratch();
        chmod(&dir, 0o700);
        let engine = PluginEngine::new(Some(dir.clone())).unwrap();
        let planted = plant_noop(&engine, &dir);
        chmod(&planted, 0o666);
        assert_eq!(deny_tools_methods(&engine).await, DENY_TOOLS_METHODS);
        assert_eq!(
            std::fs::metadata(&planted).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let fresh = PluginEngine::new(Some(dir.clone())).unwrap();
        assert_eq!(deny_tools_methods(&fresh).await, DENY_TOOLS_METHODS);

        // A symlink to a trusted artifact elsewhere: not followed.
        let dir = scratch();
        chmod(&dir, 0o700);
        let elsewhere = scratch();
        chmod(&elsewhere, 0o700);
        let engine = PluginEngine::new(Some(dir.clone())).unwrap();
        let target = plant_noop(&engine, &elsewhere);
        std::os::unix::fs::symlink(&target, dir.join(target.file_name().unwrap())).unwrap();
        assert_eq!(deny_tools_methods(&engine).await, DENY_TOOLS_METHODS);
    }
}
