//! Finitely many tasks: a pool of M hidden weight matrices drawn once, each prompt taking one of
//! them uniformly (von Oswald et al. 2023, Figs. 15–16; Raventós et al. 2023's task diversity M).
//! The pool is a function of (M, pool seed) alone, so a learner that needs it — the posterior
//! mean over the pool, `dmmse` — rebuilds the pool a run trained on from the run's config.

use std::sync::Arc;

use ndarray::Array3;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::TaskRng;

/// The ChaCha stream a pool is drawn from (a run's pool uses the run's seed on this stream).
pub const POOL_STREAM: u64 = 17;

/// The most hidden functions a pool may hold.
pub const MAX_POOL: usize = 1 << 24;

/// The RNG a pool of `seed` is drawn from.
pub fn pool_rng(seed: u64) -> TaskRng {
    let mut rng = TaskRng::seed_from_u64(seed);
    rng.set_stream(POOL_STREAM);
    rng
}

/// M weight matrices W_k ~ N(0, I)·w_scale, (M, o, d), drawn entry by entry in row-major order
/// from [`pool_rng`]`(seed)`: the prior every pooled linear task draws its pool from.
pub fn gaussian_pool(size: usize, (o, d): (usize, usize), w_scale: f64, seed: u64) -> Array3<f64> {
    let mut rng = pool_rng(seed);
    Array3::from_shape_simple_fn((size, o, d), || w_scale * rng.sample::<f64, _>(StandardNormal))
}

/// A drawn pool as a task holds it.
#[derive(Clone, Debug)]
pub struct Pool {
    pub size: usize,
    pub seed: u64,
    /// (M, o, d).
    pub weights: Arc<Array3<f64>>,
}

impl Pool {
    pub fn gaussian(size: usize, dims: (usize, usize), w_scale: f64, seed: u64) -> Self {
        Self { size, seed, weights: Arc::new(gaussian_pool(size, dims, w_scale, seed)) }
    }

    /// The pool of a linear task whose teachers are W ~ N(0, I)·w_scale, or all equal to w_scale
    /// with `fixed`: `size` (checked) members of shape `dims` (o, d).
    pub fn of_teachers(
        size: usize,
        dims: (usize, usize),
        w_scale: f64,
        fixed: bool,
        seed: u64,
    ) -> Result<Self, crate::TaskError> {
        crate::check_count("task_pool", size, 1..=MAX_POOL)?;
        Ok(if fixed {
            let weights = Array3::from_elem((size, dims.0, dims.1), w_scale);
            Self { size, seed, weights: Arc::new(weights) }
        } else {
            Self::gaussian(size, dims, w_scale, seed)
        })
    }

    /// Copies a uniformly chosen member into `w` (o·d values).
    pub fn pick(&self, rng: &mut TaskRng, w: &mut [f64]) {
        let k = rng.random_range(0..self.size);
        let flat = self.weights.as_slice().expect("a pool is contiguous");
        w.copy_from_slice(&flat[k * w.len()..(k + 1) * w.len()]);
    }
}
