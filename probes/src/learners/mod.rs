//! The reference learners (tasks-learners-probes.md §2), each a [`LearnerFamily`] that builds a
//! [`Learner`](crate::learner::Learner) from a spec:
//!
//! | name | learner | hyperparameters (tuned when not given) |
//! |---|---|---|
//! | `zero` | ŷ = 0 | — |
//! | `averaging` | ŷ = x_qᵀ (1/n) Σ yᵢxᵢ (Garg et al.) | — |
//! | `gd` | k steps of GD from W₀ = 0 on ½‖Xw − y‖²/n (von Oswald et al.) | steps (1), η |
//! | `gd++` | GD with input preconditioning x ← (I − γ Σ xᵢxᵢᵀ) x (von Oswald et al. A.10) | steps (1), η, γ |
//! | `precond_gd` | k steps w ← w − P (Aw − b) (Ahn et al.; Zhang, Frei & Bartlett) | steps (1), P |
//! | `newton` | Newton–Schulz iterations for (XᵀX)⁻¹ (Fu et al.) | steps (5) |
//! | `ridge` | (XᵀX + λI)⁻¹Xᵀy (Akyürek et al.) | λ |
//! | `least_squares` | min-norm least squares X⁺y | — |
//! | `knn` | mean label of the k nearest context inputs | k (3) |
//! | `lasso` | ℓ₁-regularised least squares, coordinate descent (linfa-elasticnet) | α (0.01) |
//! | `tree` | greedy regression tree (gbdt) | max_depth (4; null: unlimited) |
//! | `boosting` | gradient-boosted regression trees (gbdt) | trees, learning_rate, max_depth |
//! | `bayes_ridge` | posterior mean, w ~ N(0, τ²I), σ from a set of levels (Bai et al.) | w_scale, noise_std, noise_weights (given) |
//! | `ada_ridge` | ridge with σ² estimated per prompt by maximum evidence (after Vladymyrov et al.) | w_scale (given) |
//! | `dmmse` | posterior mean over a finite task pool (Raventós et al.) | pool_size, pool_seed, noise_std, w_scale (given) |
//!
//! Tuning prompts come from the training distribution at the evaluation n (see `learner.rs`).

mod bayes;
mod closed_form;
mod gradient;
pub use gradient::{register_precond_fitter, PrecondFitter};
mod local;
mod trees;

pub use bayes::{AdaRidge, BayesRidge, Dmmse};
pub use closed_form::{LeastSquares, Newton, Ridge, RidgePath};
pub use gradient::{tune_gd_eta, Gd, GdPlusPlus, PrecondGd};
pub use local::{Averaging, Knn, Zero};
pub use trees::{Boosting, Lasso, Tree};

use crate::learner::LearnerFamily;

/// The built-in families, by name.
pub static BUILT_IN: &[&dyn LearnerFamily] = &[
    &local::ZeroFamily,
    &local::AveragingFamily,
    &local::KnnFamily,
    &gradient::GdFamily,
    &gradient::GdPlusPlusFamily,
    &gradient::PrecondGdFamily,
    &closed_form::NewtonFamily,
    &closed_form::RidgeFamily,
    &closed_form::LeastSquaresFamily,
    &trees::LassoFamily,
    &trees::TreeFamily,
    &trees::BoostingFamily,
    &bayes::BayesRidgeFamily,
    &bayes::DmmseFamily,
    &bayes::AdaRidgeFamily,
];

use ndarray::{Array2, Array3};
use rayon::prelude::*;

extern "C" {
    /// OpenBLAS's own thread count (Debian's libopenblas, linked through ndarray-linalg).
    fn openblas_set_num_threads(n: std::ffi::c_int);
}

/// Makes OpenBLAS single-threaded. Per-prompt solves run in parallel on rayon's threads, each a
/// tiny LAPACK call: OpenBLAS's own threads would only fight them (measured: a 41-point curve took
/// 92 s with them, 17 s without). And in a binary that also links libtorch, some of libtorch's
/// own BLAS calls bind to OpenBLAS's symbols (setup-notes.md): seeds trained in parallel threads
/// then queue on OpenBLAS's lock. Called before every parallel loop that reaches LAPACK, and by
/// `icl-lab` at start-up; the first call sets it.
pub fn serial_blas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: a plain setter of OpenBLAS's global thread count, called before any parallel use.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}

/// Runs `per_prompt` on every prompt b in parallel and stacks the (o-vector) answers into (B, o).
pub(crate) fn per_prompt_predictions(
    batch: usize,
    o: usize,
    per_prompt: impl Fn(usize) -> Result<Vec<f64>, crate::ProbeError> + Sync + Send,
) -> Result<Array2<f64>, crate::ProbeError> {
    serial_blas();
    let rows: Vec<Vec<f64>> = (0..batch).into_par_iter().map(per_prompt).collect::<Result<_, _>>()?;
    Ok(Array2::from_shape_vec((batch, o), rows.concat()).expect("one o-vector per prompt"))
}

/// Per-prompt weights computed prompt by prompt in parallel: `solve(X (n, d), Y (n, o))` → W
/// (o, d), stacked (B, o, d).
pub(crate) fn per_prompt_weights(
    p: &icl_tasks::Prompts,
    solve: impl Fn(Array2<f64>, Array2<f64>) -> Result<Array2<f64>, crate::ProbeError> + Sync + Send,
) -> Result<Array3<f64>, crate::ProbeError> {
    use ndarray::Axis;
    serial_blas();
    let ws: Vec<Array2<f64>> = (0..p.batch())
        .into_par_iter()
        .map(|b| solve(p.xs.index_axis(Axis(0), b).to_owned(), p.ys.index_axis(Axis(0), b).to_owned()))
        .collect::<Result<_, _>>()?;
    Ok(stack_weights(ws, p.y_dim(), p.x_dim()))
}

/// `batch` prompts of n pairs with x, w ~ N(0, I_d), noise-free: the setting of the closed forms.
#[cfg(test)]
pub(crate) fn isotropic(d: usize, n: usize, batch: usize, seed: u64) -> icl_tasks::Prompts {
    use rand::SeedableRng;
    let task = icl_tasks::TaskConfig::new("gaussian_linear").with("x_dim", d).build().expect("valid task");
    task.sample_n(&mut icl_tasks::TaskRng::seed_from_u64(seed), batch, n)
}

/// Stacks per-prompt weight matrices (o, d) into (B, o, d).
pub(crate) fn stack_weights(ws: Vec<Array2<f64>>, o: usize, d: usize) -> Array3<f64> {
    let batch = ws.len();
    let flat: Vec<f64> = ws.into_iter().flat_map(|w| w.into_iter()).collect();
    Array3::from_shape_vec((batch, o, d), flat).expect("one (o, d) matrix per prompt")
}
