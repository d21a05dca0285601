//! Closed-form least-squares learners (Akyürek et al. 2023 §4.3): ridge regression
//! W = B (A + (λ/N) I)⁻¹ on the per-prompt statistics of `gd.rs`, and ordinary least squares as
//! λ → 0 (solved exactly, so it needs N ≥ d for a unique answer).

use ndarray::{Array2, Array3, Axis, Zip};
use ndarray_linalg::Solve;

use crate::{gd::LeastSquaresStats, ProbeError};

/// Per-prompt ridge weights (B, o, d) minimising Σ_i ‖W x_i − y_i‖² + λ‖W‖².
pub fn ridge_weights(stats: &LeastSquaresStats, context_len: usize, lambda: f64) -> Result<Array3<f64>, ProbeError> {
    let mut out = Array3::zeros(stats.yx.raw_dim());
    let d = stats.xx.shape()[1];
    let mut result = Ok(());
    Zip::from(out.outer_iter_mut()).and(stats.xx.outer_iter()).and(stats.yx.outer_iter()).for_each(
        |mut w_b, xx_b, yx_b| {
            if result.is_err() {
                return;
            }
            // W (A + λ/N I) = B  ⇔  (A + λ/N I) Wᵀ = Bᵀ  (A symmetric), one solve per output row.
            let reg: Array2<f64> = &xx_b + &(Array2::<f64>::eye(d) * (lambda / context_len as f64));
            for (k, b_row) in yx_b.axis_iter(Axis(0)).enumerate() {
                match reg.solve(&b_row.to_owned()) {
                    Ok(row) => w_b.row_mut(k).assign(&row),
                    Err(e) => result = Err(e.into()),
                }
            }
        },
    );
    result.map(|_| out)
}

/// Ordinary least squares (λ = 0); errors if a prompt's inputs do not span R^d.
pub fn ols_weights(stats: &LeastSquaresStats, context_len: usize) -> Result<Array3<f64>, ProbeError> {
    ridge_weights(stats, context_len, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gd::{gd_weights, predict};
    use icl_tasks::{build, TaskConfig, TaskRng};
    use rand::SeedableRng;

    #[test]
    fn ols_recovers_a_noise_free_teacher_and_many_gd_steps_converge_to_it() {
        let cfg = TaskConfig::default().with("context_len", 40);
        let p = build(&cfg).unwrap().sample(&mut TaskRng::seed_from_u64(4), 8);
        let stats = LeastSquaresStats::new(&p);
        let ols = ols_weights(&stats, 40).unwrap();
        let err = (&predict(&ols, &p.xq) - &p.yq).mapv(f64::abs).fold(0.0f64, |m, &e| m.max(e));
        assert!(err < 1e-9, "OLS misses a noise-free teacher by {err}");
        let gd = gd_weights(&stats, &vec![8.0; 3000]).pop().unwrap();
        let gap = (&gd - &ols).mapv(f64::abs).fold(0.0f64, |m, &e| m.max(e));
        assert!(gap < 1e-6, "3000 GD steps are {gap} from OLS");
    }
}
