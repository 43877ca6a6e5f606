//! Sample statistics shared by `portcullis bench` and
//! `cargo bench --bench plugins` (which includes this file by path).

use std::time::Duration;

/// Warm-up calls before measuring in-process costs.
pub const WARMUP: usize = 200;

/// The `p` quantile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}
