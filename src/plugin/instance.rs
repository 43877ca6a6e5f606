//! A loaded plugin: compiled once, pre-instantiated, with a pool of
//! initialised instances. Each call gets an epoch deadline and runs under the
//! instance's memory cap; an instance that traps is thrown away.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use super::bindings::{Plugin, PluginPre};
use super::engine::{EPOCH_TICK, PluginEngine};
use super::host::HostState;
use super::{PluginError, context_to_wit, interests_from_wit, verdict_from_wit};
use crate::mcp::MessageContext;
use crate::policy::catalog::Catalog;
use crate::policy::verdict::{CallError, Evaluate, Interests, Verdict};

/// Default time a plugin has per message: its own CPU time (see
/// [`Budget`]), thousands of times what a no-op call costs (the README's
/// plugin host table), with a wall-clock ceiling of
/// [`HARD_DEADLINE_FACTOR`] times it.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(10);
/// Time a plugin has per MiB of message, on top of its base deadline: a
/// deadline that refused every clean message near the size limit would be
/// a denial of service on the business. 50 ms/MiB is several times what
/// the standard plugins take (see the README's benchmark section).
pub const DEFAULT_DEADLINE_PER_MIB: Duration = Duration::from_millis(50);
/// While a plugin runs, it gives its thread back to the other calls every
/// this many epoch ticks: a long call cannot starve unrelated ones.
const YIELD_EVERY_TICKS: u64 = 1;
/// However the plugin's own time is counted, a call ends after this many
/// times its deadline on the wall clock.
const HARD_DEADLINE_FACTOR: u32 = 10;
/// A tool definition the plugin fetches from the host (`tool-definition`)
/// earns the call its base deadline again, for at most this many
/// definitions per call. Compiling a definition the instance has not seen
/// is work no message size accounts for: in schema-guard, jsonschema
/// builds the meta-schema's validator for every schema it compiles on
/// wasm, 3.4 ms per definition on a quiet host, so a new instance's first
/// call of a tool overran 10 ms on a loaded one and was refused (fail
/// closed) though nothing was wrong with it.
pub const MAX_DEFINITION_GRANTS: u32 = 4;
/// Time a plugin has for `init`.
pub const INIT_DEADLINE: Duration = Duration::from_secs(2);
/// Default linear-memory cap per instance.
pub const DEFAULT_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Idle initialised instances kept per plugin.
pub const MAX_IDLE_INSTANCES: usize = 16;
/// Core instances one plugin instance may create: a Rust plugin makes 1–3,
/// a componentize-py (CPython) component one per core module it links
/// (libc, libpython, the WASI adapter, its own code: 14 today).
pub const MAX_CORE_INSTANCES_PER_PLUGIN: usize = 32;
/// Wall-clock bound on instantiation and `init`, however they spend it: the
/// epoch deadline only fires while guest code runs, not while it waits in
/// a host call (a WASI sleep or poll).
pub const INIT_WALL_DEADLINE: Duration = Duration::from_secs(4);

/// Per-plugin limits.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// The plugin's CPU time per message, plus `deadline_per_mib` per MiB
    /// of it (and at most [`HARD_DEADLINE_FACTOR`] times that on the wall
    /// clock).
    pub deadline: Duration,
    pub deadline_per_mib: Duration,
    pub memory_bytes: usize,
}

impl PluginLimits {
    /// The deadline for a message of `len` bytes.
    pub fn deadline_for(&self, len: usize) -> Duration {
        self.deadline
            + self
                .deadline_per_mib
                .mul_f64(len as f64 / (1024.0 * 1024.0))
    }
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline: DEFAULT_DEADLINE,
            deadline_per_mib: DEFAULT_DEADLINE_PER_MIB,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

struct Slot {
    store: Store<HostState>,
    plugin: Plugin,
}

/// A plugin ready to handle messages.
pub struct LoadedPlugin {
    /// Name in the policy file.
    pub name: String,
    /// SHA-256 of the component's bytes, hex.
    pub digest: String,
    /// What the plugin asked to see.
    pub interests: Interests,
    engine: PluginEngine,
    pre: PluginPre<HostState>,
    config: String,
    limits: PluginLimits,
    catalog: Arc<Catalog>,
    name_arc: Arc<str>,
    pool: Mutex<Vec<Slot>>,
    instantiations: std::sync::atomic::AtomicU64,
    /// Whether the component can ask for tool definitions at all
    /// ([`reads_definitions`]).
    reads_definitions: bool,
}

/// True when a core module inside the component imports the host's
/// `tool-definition` or `tool-revision`: linkers keep only the imports
/// code calls, so a component without them never reads the catalog, and
/// the gateway need not walk a server's listing for it
/// (`src/gateway/listing.rs`). Bytes that do not parse count as reading
/// (the safe side: the walk is only extra work).
pub fn reads_definitions(bytes: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::ImportSection(imports)) => {
                for import in imports.into_imports() {
                    let Ok(import) = import else { return true };
                    if import.module.starts_with("portcullis:policy/host")
                        && matches!(import.name, "tool-definition" | "tool-revision")
                    {
                        return true;
                    }
                }
            }
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    false
}

fn ticks(d: Duration) -> u64 {
    (d.as_micros() / EPOCH_TICK.as_micros().max(1)).max(1) as u64 + 1
}

/// Why a call into an instance failed. `memory_refused` is the store
/// limiter's note ([`Limiter::memory_refused`](super::host::Limiter::memory_refused)):
/// a refused growth traps at
/// once, so when it is set the memory cap ended the call, whatever the
/// error says.
fn classify(err: &wasmtime::Error, deadline: Duration, memory_refused: bool) -> CallError {
    if memory_refused {
        return CallError::Memory;
    }
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return CallError::Deadline(deadline);
    }
    let text = format!("{err:#}");
    CallError::Trap(
        text.lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect(),
    )
}

/// CPU time of the calling thread, when the platform tells it.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// A call's time budget, counted in the CPU time of the threads that ran
/// the plugin. The stretch from the call's start to the first tick is
/// charged a whole tick (reading the clock on every call would cost more
/// than a no-op plugin does); every later stretch, from the moment the
/// plugin resumed after a yield to the next tick, is charged the CPU time
/// its thread spent. Without a thread clock every stretch is a tick.
struct Budget {
    left: Duration,
    /// What each definition fetched adds, and how many more may.
    per_definition: Duration,
    grants_left: u32,
    /// The thread's CPU time when the plugin last resumed (nanoseconds, 0:
    /// not read), written by the yield's future on the resuming thread.
    resumed: Arc<std::sync::atomic::AtomicU64>,
}

impl Budget {
    fn new(deadline: Duration, per_definition: Duration) -> Budget {
        Budget {
            left: deadline,
            per_definition,
            grants_left: MAX_DEFINITION_GRANTS,
            resumed: Arc::default(),
        }
    }

    /// Credits `fetched` definitions (up to what is left of
    /// [`MAX_DEFINITION_GRANTS`]); returns the time added.
    fn grant(&mut self, fetched: u32) -> Duration {
        let n = fetched.min(self.grants_left);
        self.grants_left -= n;
        let extra = self.per_definition * n;
        self.left += extra;
        extra
    }

    /// Charges the stretch that ends at this tick; true when the budget is
    /// spent.
    fn charge(&mut self) -> bool {
        let resumed = self.resumed.swap(0, std::sync::atomic::Ordering::Relaxed);
        let stretch = match (resumed, thread_cpu_time()) {
            (0, _) | (_, None) => EPOCH_TICK,
            (at, Some(now)) => now.saturating_sub(Duration::from_nanos(at)),
        };
        self.left = self.left.saturating_sub(stretch);
        self.left.is_zero()
    }

    /// The yield between two stretches: back to the runtime once, then the
    /// resuming thread's CPU time is noted.
    fn resume(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let resumed = self.resumed.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            if let Some(now) = thread_cpu_time() {
                let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX).max(1);
                resumed.store(nanos, std::sync::atomic::Ordering::Relaxed);
            }
        })
    }
}

impl LoadedPlugin {
    /// Compiles and links `bytes`, then creates one instance and calls
    /// `init` with `config` (JSON text): a plugin that refuses its
    /// configuration fails here, at load time.
    pub async fn load(
        engine: &PluginEngine,
        name: &str,
        bytes: &[u8],
        config: String,
        limits: PluginLimits,
        catalog: Arc<Catalog>,
    ) -> Result<LoadedPlugin, PluginError> {
        let component = engine.compile(name, bytes)?;
        let mut linker: Linker<HostState> = Linker::new(engine.engine());
        let link_err = |e: wasmtime::Error| PluginError::Instantiate {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        };
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        Plugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s).map_err(link_err)?;
        let pre = PluginPre::new(linker.instantiate_pre(&component).map_err(link_err)?)
            .map_err(link_err)?;
        let mut plugin = LoadedPlugin {
            name: name.to_owned(),
            digest: hex::encode(Sha256::digest(bytes)),
            interests: Interests::default(),
            engine: engine.clone(),
            pre,
            config,
            limits,
            catalog,
            name_arc: Arc::from(name),
            pool: Mutex::new(Vec::new()),
            instantiations: std::sync::atomic::AtomicU64::new(0),
            reads_definitions: reads_definitions(bytes),
        };
        let (slot, interests) = plugin.instantiate().await.map_err(|e| match e {
            InitFailure::Refused(reason) => PluginError::Init {
                name: name.to_owned(),
                reason,
            },
            InitFailure::Call(e) => PluginError::Instantiate {
                name: name.to_owned(),
                reason: e.to_string(),
            },
        })?;
        plugin.interests = interests;
        plugin.lock().push(slot);
        Ok(plugin)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Instances created so far (the first at load, then one per trap or
    /// when every pooled instance is busy).
    pub fn instantiations(&self) -> u64 {
        self.instantiations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn instantiate(&self) -> Result<(Slot, Interests), InitFailure> {
        tokio::time::timeout(INIT_WALL_DEADLINE, self.instantiate_within())
            .await
            .unwrap_or(Err(InitFailure::Call(CallError::Deadline(
                INIT_WALL_DEADLINE,
            ))))
    }

    async fn instantiate_within(&self) -> Result<(Slot, Interests), InitFailure> {
        self.instantiations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(MAX_CORE_INSTANCES_PER_PLUGIN)
            .tables(8)
            .memories(4)
            .build();
        let state = HostState::new(self.name_arc.clone(), limits, self.catalog.clone());
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(INIT_DEADLINE));
        let plugin = match self.pre.instantiate_async(&mut store).await {
            Ok(p) => p,
            // A memory whose initial size is over the cap.
            Err(_) if store.data().limiter.memory_refused() => {
                return Err(InitFailure::Call(CallError::Memory));
            }
            Err(e) => {
                return Err(InitFailure::Call(CallError::Instantiate(format!("{e:#}"))));
            }
        };
        let interests = match plugin
            .portcullis_policy_policy()
            .call_init(&mut store, &self.config)
            .await
        {
            Ok(i) => i.map_err(InitFailure::Refused)?,
            Err(e) => {
                let memory = store.data().limiter.memory_refused();
                return Err(InitFailure::Call(classify(&e, INIT_DEADLINE, memory)));
            }
        };
        Ok((Slot { store, plugin }, interests_from_wit(interests)))
    }

    /// Runs the plugin on one message.
    pub async fn call(&self, ctx: &MessageContext, message: &str) -> Result<Verdict, CallError> {
        let pooled = self.lock().pop();
        let mut slot = match pooled {
            Some(s) => s,
            None => match self.instantiate().await {
                Ok((s, _)) => s,
                Err(InitFailure::Call(e)) => return Err(e),
                Err(InitFailure::Refused(r)) => return Err(CallError::Instantiate(r)),
            },
        };
        // Every tick the call yields to the runtime (other calls run). The
        // deadline is the plugin's own CPU time: what the thread running it
        // spent between the point it resumed and the next tick, so waiting
        // for a core (behind other calls, or descheduled on a busy host)
        // is not charged to the plugin. A wall-clock bound of
        // HARD_DEADLINE_FACTOR times the deadline caps the whole.
        // Each definition the plugin fetches adds to both (MAX_DEFINITION_GRANTS).
        let deadline = self.limits.deadline_for(message.len());
        let mut hard = Instant::now() + deadline * HARD_DEADLINE_FACTOR;
        let mut budget = Budget::new(deadline, self.limits.deadline);
        slot.store.data_mut().take_definitions_fetched();
        slot.store.epoch_deadline_callback(move |mut store| {
            hard +=
                budget.grant(store.data_mut().take_definitions_fetched()) * HARD_DEADLINE_FACTOR;
            Ok(if budget.charge() || Instant::now() >= hard {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::YieldCustom(YIELD_EVERY_TICKS, budget.resume())
            })
        });
        slot.store.set_epoch_deadline(YIELD_EVERY_TICKS);
        let groups: Vec<&str> = ctx.principal.groups.iter().map(String::as_str).collect();
        let claims = ctx.principal.claims_json();
        // The epoch callback runs only while guest code does: a call waiting
        // in a host call (a WASI sleep or poll) is bounded here instead, by
        // the largest wall-clock bound the callback could have reached.
        let wall = (deadline + self.limits.deadline * MAX_DEFINITION_GRANTS) * HARD_DEADLINE_FACTOR;
        let handle = slot.plugin.portcullis_policy_policy().call_handle(
            &mut slot.store,
            context_to_wit(ctx, &groups, &claims),
            message,
        );
        let Ok(result) = tokio::time::timeout(wall, handle).await else {
            // The call was dropped mid-way: so is the instance.
            return Err(CallError::Deadline(deadline));
        };
        match result {
            Ok(v) => {
                let mut pool = self.lock();
                if pool.len() < MAX_IDLE_INSTANCES {
                    pool.push(slot);
                }
                Ok(verdict_from_wit(v))
            }
            // The instance may be corrupt after a trap: it is dropped here
            // and the next call gets a fresh one.
            Err(e) => Err(classify(
                &e,
                deadline,
                slot.store.data().limiter.memory_refused(),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Evaluate for LoadedPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn digest(&self) -> &str {
        &self.digest
    }

    fn interests(&self) -> &Interests {
        &self.interests
    }

    async fn evaluate(&self, ctx: &MessageContext, message: &str) -> Result<Verdict, CallError> {
        self.call(ctx, message).await
    }

    fn reads_definitions(&self) -> bool {
        self.reads_definitions
    }
}

enum InitFailure {
    Refused(String),
    Call(CallError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins until this thread has spent `d` of CPU time.
    fn spend(d: Duration) {
        let start = thread_cpu_time().unwrap();
        while thread_cpu_time().unwrap() - start < d {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_for_a_core_is_not_charged_to_the_plugin() {
        let mut b = Budget::new(Duration::from_millis(20), Duration::ZERO);
        // The first stretch, before any clock was read, costs one tick.
        assert!(!b.charge());
        assert_eq!(b.left, Duration::from_millis(20) - EPOCH_TICK);
        // A stretch in which the thread waited 50 ms on the wall clock
        // (off the CPU, as behind other threads on a busy host) costs
        // next to nothing.
        b.resume().await;
        std::thread::sleep(Duration::from_millis(50));
        assert!(!b.charge());
        assert!(b.left > Duration::from_millis(18), "{:?}", b.left);
        // Work is charged as it is done...
        b.resume().await;
        spend(Duration::from_millis(8));
        assert!(!b.charge());
        assert!(b.left <= Duration::from_millis(11), "{:?}", b.left);
        // ...until the budget is spent.
        b.resume().await;
        spend(Duration::from_millis(12));
        assert!(b.charge());
    }

    #[test]
    fn each_definition_fetched_adds_the_base_deadline_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut b = Budget::new(ms(12), ms(10));
        assert_eq!(b.grant(0), Duration::ZERO);
        assert_eq!(b.grant(1), ms(10));
        assert_eq!(b.left, ms(22));
        // Past MAX_DEFINITION_GRANTS, fetching more earns nothing.
        assert_eq!(b.grant(100), ms(10) * (MAX_DEFINITION_GRANTS - 1));
        assert_eq!(b.grant(1), Duration::ZERO);
        assert_eq!(b.left, ms(12) + ms(10) * MAX_DEFINITION_GRANTS);
    }

    #[test]
    fn the_memory_cap_is_told_by_the_limiter_not_by_the_error_text() {
        let d = Duration::from_millis(5);
        // Words like wasmtime's own do not make a memory trap...
        let worded = wasmtime::format_err!("forcing trap when growing memory past the limit");
        assert!(matches!(classify(&worded, d, false), CallError::Trap(_)));
        // ...and the limiter's note does, whatever the error says.
        let abort = wasmtime::Error::new(Trap::UnreachableCodeReached);
        assert_eq!(classify(&abort, d, true), CallError::Memory);
        let interrupt = wasmtime::Error::new(Trap::Interrupt);
        assert_eq!(classify(&interrupt, d, false), CallError::Deadline(d));
        assert!(matches!(classify(&abort, d, false), CallError::Trap(_)));
    }
}
