//! The wasmtime engine shared by every plugin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;

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
        })
    }

    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes`, or loads the cached artifact of an earlier run.
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
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes)
                .map(Arc::new)
                .map_err(|e| compile_err(format!("{e:#}")));
        };
        let mut h = Sha256::new();
        h.update(bytes);
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut HashWriter(&mut h),
        );
        let key = hex::encode(h.finalize());
        let path = dir.join(format!("{key}.cwasm"));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the key), in
            // a directory only this program writes; wasmtime still checks
            // the header and refuses a mismatched artifact.
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, &path) } {
                return Ok(Arc::new(c));
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| compile_err(format!("{e:#}")))?;
        if let Ok(serialized) = component.serialize() {
            let _ = std::fs::create_dir_all(dir);
            let tmp = dir.join(format!("{key}.tmp-{}", std::process::id()));
            if std::fs::write(&tmp, serialized).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Ok(Arc::new(component))
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
