//! Synthetic in-context learning tasks for icl-lab.
//!
//! A [`Task`] samples a batch of prompts from a seeded RNG: N context pairs (x_i, y_i),
//! a query x_q and its target y_q. Tasks know nothing of tokens or models: the model crate lays
//! prompts out as tokens, and the probes crate runs reference learners on them.
//!
//! Adding a task (after Garg et al. 2022, `tasks.py`): write `src/<name>.rs` with a struct
//! implementing [`Task`], and add one line to [`registry::REGISTRY`].

pub mod linear;
pub mod registry;

use ndarray::{Array2, Array3};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use registry::{build, names, TaskConfig};

/// The RNG every task samples from; seeded with `rand::SeedableRng::seed_from_u64`.
pub type TaskRng = ChaCha8Rng;

/// A batch of prompts, in f64 so that reference learners can be exact.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompts {
    /// Context inputs, (B, N, d).
    pub xs: Array3<f64>,
    /// Context labels, (B, N, o).
    pub ys: Array3<f64>,
    /// Query inputs, (B, d).
    pub xq: Array2<f64>,
    /// Query targets, (B, o).
    pub yq: Array2<f64>,
}

impl Prompts {
    pub fn batch(&self) -> usize {
        self.xs.shape()[0]
    }
    pub fn context_len(&self) -> usize {
        self.xs.shape()[1]
    }
    pub fn x_dim(&self) -> usize {
        self.xs.shape()[2]
    }
    pub fn y_dim(&self) -> usize {
        self.ys.shape()[2]
    }
    /// ½·mean over prompts of ‖ŷ − y_q‖², the loss every figure reports (von Oswald et al.'s `compute_loss`).
    pub fn half_mse(&self, predictions: &Array2<f64>) -> f64 {
        assert_eq!(predictions.dim(), self.yq.dim(), "predictions must be (B, o)");
        0.5 * (predictions - &self.yq).mapv(|e| e * e).sum() / self.batch() as f64
    }
}

/// Sizes of a task's prompts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    /// Input dimension d.
    pub x_dim: usize,
    /// Output dimension o.
    pub y_dim: usize,
    /// Number of context pairs N.
    pub context_len: usize,
}

/// A family of in-context learning problems.
pub trait Task: Send + Sync {
    /// The registry name.
    fn name(&self) -> &'static str;
    fn dims(&self) -> Dims;
    /// Samples `batch` independent prompts (each with its own hidden function).
    fn sample(&self, rng: &mut TaskRng, batch: usize) -> Prompts;
    /// Reference learners (by the names the probes crate uses) that make sense for this task.
    fn references(&self) -> &'static [&'static str];
}

/// A task configuration that cannot be used, naming the field and the allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaskError {
    #[error("task.name: unknown task `{0}` (known: {1})")]
    Unknown(String, String),
    #[error("task.{field}: {message} (got {got})")]
    Invalid { field: &'static str, message: &'static str, got: String },
}
