//! Bulk work: the CPU-heavy steps on large messages (parsing one of
//! [`crate::limits::OFFLOAD_PARSE_BYTES`] or more, a plugin reading it),
//! run on threads of their own at a lower OS priority.
//!
//! The runtime's workers carry every call's I/O. A 1 MiB key-flooded
//! message costs tens of milliseconds of CPU per step; on a worker, even
//! cut into ticks, it puts every unrelated task behind each tick. On a
//! thread of its own it is preempted by the kernel instead, and at nice
//! [`BULK_NICE`] a worker that wakes (a `ping` arrived) gets a core ahead
//! of it. Large messages get the CPU that is left, small ones are not held
//! up by them.

use std::future::Future;
use std::sync::OnceLock;

/// The bulk threads' nice value (0 is the default; higher yields more).
pub const BULK_NICE: i32 = 10;

/// The bulk runtime, made on first use; none if the OS refused threads
/// (the work then runs where it was asked for).
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static BULK: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    BULK.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("portcullis-bulk")
            .on_thread_start(lower_priority)
            .enable_time()
            .build()
            .inspect_err(|e| tracing::warn!(error = %e, "no bulk threads; large messages are handled on the workers"))
            .ok()
    })
    .as_ref()
}

/// Lowers the calling thread's priority to [`BULK_NICE`] (Linux: the nice
/// value is per thread). A refusal leaves it as it was.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take plain integers and touch no
        // memory of ours.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BULK_NICE)
        };
        if rc != 0 {
            tracing::debug!("bulk thread priority unchanged");
        }
    }
}

/// Cancels the task when the caller goes away.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `f` (synchronous CPU work) on a bulk thread. `None` if the task was
/// lost (it panicked or the runtime is gone).
pub async fn compute<F, T>(f: F) -> Option<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match runtime() {
        Some(rt) => rt.spawn_blocking(f).await.ok(),
        None => Some(f()),
    }
}

/// Runs `fut` (async work that computes in ticks, e.g. a plugin call) on
/// the bulk threads; it is cancelled if the caller goes away. `None` if the
/// task was lost.
pub async fn run<F>(fut: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime() {
        Some(rt) => {
            let task = rt.spawn(fut);
            let _cancel = AbortOnDrop(task.abort_handle());
            task.await.ok()
        }
        None => Some(fut.await),
    }
}
