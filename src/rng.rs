//! Named RNG streams. Every random draw of the lab comes from a ChaCha stream of a seed, named
//! here once, so that adding a consumer never shifts another's numbers and a run is a function of
//! (config, seed) on any device and thread count.

use icl_tasks::{Prompts, Task, TaskRng};
use rand::SeedableRng;

/// A run's training prompts (stream of `seed`).
pub const DATA_STREAM: u64 = 0;
/// A run's initial weights.
pub const INIT_STREAM: u64 = 1;
/// Seed of the prompts the GD/GD++ hyperparameters are fitted on (never the evaluation set).
pub const REFERENCE_FIT_SEED: u64 = 77;

/// Training step s of a GPT-style run draws its prompts from stream `GPT_BATCH_STREAM_BASE + s`,
/// so a run resumed from a checkpoint sees the prompts an uninterrupted one would.
pub const GPT_BATCH_STREAM_BASE: u64 = 1 << 32;

/// The prompts of training step `step` of a GPT-style run.
pub fn gpt_batch_rng(seed: u64, step: usize) -> TaskRng {
    seeded_rng(seed, GPT_BATCH_STREAM_BASE + step as u64)
}

/// The RNG of `stream` under `seed`.
pub fn seeded_rng(seed: u64, stream: u64) -> TaskRng {
    let mut rng = TaskRng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// `count` prompts of the task's own length from stream 0 of `seed`: how every fixed evaluation
/// set (`eval.seed`) and every out-of-distribution set is drawn.
pub fn prompts(task: &dyn Task, count: usize, seed: u64) -> Prompts {
    task.sample(&mut seeded_rng(seed, 0), count)
}
