//! Gradient descent on the in-context least-squares loss, the reference learner of
//! von Oswald et al. 2023 (eqs. 2–3 and 7; A.12: W₀ = 0).
//!
//! L(W) = 1/(2N) Σ_i ‖W x_i − y_i‖², one step ΔW = −(η/N) Σ_i (W x_i − y_i) x_iᵀ.
//! With A = (1/N) Σ x_i x_iᵀ and B = (1/N) Σ y_i x_iᵀ a step is W ← W − η (W A − B), which is
//! how it is computed here: O(o·d²) per task and step once A and B are formed.

use ndarray::{s, Array2, Array3, Axis, Zip};
use serde::{Deserialize, Serialize};

use icl_tasks::Prompts;

/// Per-prompt sufficient statistics of the least-squares loss.
#[derive(Clone, Debug)]
pub struct LeastSquaresStats {
    /// (B, d, d): (1/N) Σ_i x_i x_iᵀ
    pub xx: Array3<f64>,
    /// (B, o, d): (1/N) Σ_i y_i x_iᵀ
    pub yx: Array3<f64>,
}

impl LeastSquaresStats {
    pub fn new(p: &Prompts) -> Self {
        let (b, n, d, o) = (p.batch(), p.context_len(), p.x_dim(), p.y_dim());
        let mut xx = Array3::zeros((b, d, d));
        let mut yx = Array3::zeros((b, o, d));
        // No context pairs: the loss is 0 everywhere and so are its statistics.
        let inv_n = if n == 0 { 0.0 } else { 1.0 / n as f64 };
        Zip::from(xx.outer_iter_mut()).and(yx.outer_iter_mut()).and(p.xs.outer_iter()).and(p.ys.outer_iter()).for_each(
            |mut xx_b, mut yx_b, xs_b, ys_b| {
                // (d, N)·(N, d) and (o, N)·(N, d)
                xx_b.assign(&(xs_b.t().dot(&xs_b) * inv_n));
                yx_b.assign(&(ys_b.t().dot(&xs_b) * inv_n));
            },
        );
        Self { xx, yx }
    }
}

/// The weights after each of `etas.len()` GD steps from W₀ = 0, step k using η = etas[k].
/// Returns one (B, o, d) array per step.
pub fn gd_weights(stats: &LeastSquaresStats, etas: &[f64]) -> Vec<Array3<f64>> {
    let mut w = Array3::<f64>::zeros(stats.yx.raw_dim());
    let mut out = Vec::with_capacity(etas.len());
    for &eta in etas {
        Zip::from(w.outer_iter_mut()).and(stats.xx.outer_iter()).and(stats.yx.outer_iter()).for_each(
            |mut w_b, xx_b, yx_b| {
                let grad = w_b.dot(&xx_b) - yx_b; // (o, d)
                w_b.scaled_add(-eta, &grad);
            },
        );
        out.push(w.clone());
    }
    out
}

/// ŷ_q = W x_q for per-prompt weights (B, o, d) and queries (B, d) → (B, o).
pub fn predict(w: &Array3<f64>, xq: &Array2<f64>) -> Array2<f64> {
    let mut out = Array2::zeros((w.shape()[0], w.shape()[1]));
    Zip::from(out.outer_iter_mut())
        .and(w.outer_iter())
        .and(xq.outer_iter())
        .for_each(|mut o_b, w_b, x_b| o_b.assign(&w_b.dot(&x_b)));
    out
}

/// The sensitivity ∂ŷ/∂x_q of the last output, which for a linear learner is its weight row (B, d).
pub fn sensitivity(w: &Array3<f64>) -> Array2<f64> {
    let o = w.shape()[1];
    w.slice(s![.., o - 1, ..]).to_owned()
}

/// The official learning-rate grid of `scan_lrs`: arange(0.001, 25, 0.1).
pub fn official_eta_grid() -> Vec<f64> {
    (0..250).map(|i| 0.001 + 0.1 * i as f64).collect()
}

/// The result of tuning one constant η for K-step GD.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TunedGd {
    pub steps: usize,
    /// η in ΔW = −(η/N) Σ(...); the official notebooks print η/N.
    pub eta: f64,
    /// ½·MSE of the K-step prediction on the tuning prompts.
    pub loss: f64,
}

/// Grid search for the constant η that minimises the K-step GD loss on `prompts`, as the official
/// `scan_lrs` does (argmin over the grid, ties to the smaller η).
pub fn tune_eta(prompts: &Prompts, stats: &LeastSquaresStats, steps: usize, grid: &[f64]) -> TunedGd {
    assert!(steps > 0 && !grid.is_empty());
    let mut best = TunedGd { steps, eta: f64::NAN, loss: f64::INFINITY };
    for &eta in grid {
        let w = gd_weights(stats, &vec![eta; steps]).pop().expect("steps > 0");
        let loss = prompts.half_mse(&predict(&w, &prompts.xq));
        if loss < best.loss {
            best = TunedGd { steps, eta, loss };
        }
    }
    best
}

/// Predictions after each of the given GD steps, (steps, B, o): the per-layer readouts of the
/// construction.
pub fn predictions_per_step(stats: &LeastSquaresStats, xq: &Array2<f64>, etas: &[f64]) -> Array3<f64> {
    let per_step: Vec<Array2<f64>> = gd_weights(stats, etas).iter().map(|w| predict(w, xq)).collect();
    let views: Vec<_> = per_step.iter().map(|a| a.view()).collect();
    ndarray::stack(Axis(0), &views).expect("same shapes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use icl_tasks::{build, TaskConfig, TaskRng};
    use ndarray_linalg::Inverse;
    use rand::SeedableRng;

    fn prompts(batch: usize, seed: u64) -> Prompts {
        let task = build(&TaskConfig::default()).unwrap();
        task.sample(&mut TaskRng::seed_from_u64(seed), batch)
    }

    #[test]
    fn one_step_from_zero_is_the_weighted_label_sum() {
        // ŷ = (η/N) Σ_i y_i x_iᵀ x_q (von Oswald et al. eq. 7 with W₀ = 0)
        let p = prompts(64, 1);
        let eta = 0.7;
        let w = gd_weights(&LeastSquaresStats::new(&p), &[eta]).pop().unwrap();
        let got = predict(&w, &p.xq);
        for b in 0..p.batch() {
            let mut want = 0.0;
            for i in 0..p.context_len() {
                let xi = p.xs.slice(s![b, i, ..]);
                want += p.ys[[b, i, 0]] * xi.dot(&p.xq.row(b));
            }
            want *= eta / p.context_len() as f64;
            assert!((got[[b, 0]] - want).abs() < 1e-13, "{b}: {} vs {want}", got[[b, 0]]);
        }
    }

    #[test]
    fn k_steps_match_the_closed_form() {
        // W_K = B A⁻¹ (I − (I − ηA)^K) for a constant η.
        let p = prompts(16, 2);
        let stats = LeastSquaresStats::new(&p);
        let (eta, k) = (3.0, 7);
        let w = gd_weights(&stats, &vec![eta; k]).pop().unwrap();
        for b in 0..p.batch() {
            let a = stats.xx.index_axis(Axis(0), b).to_owned();
            let bm = stats.yx.index_axis(Axis(0), b).to_owned();
            let d = a.nrows();
            let step = Array2::<f64>::eye(d) - &a * eta;
            let mut power = Array2::<f64>::eye(d);
            for _ in 0..k {
                power = power.dot(&step);
            }
            let want = bm.dot(&a.inv().unwrap()).dot(&(Array2::<f64>::eye(d) - power));
            let got = w.index_axis(Axis(0), b);
            let err = (&got - &want).mapv(f64::abs).fold(0.0f64, |m, &e| m.max(e));
            assert!(err < 1e-9, "prompt {b}: max error {err}");
        }
    }

    #[test]
    fn tuned_one_step_loss_matches_the_paper() {
        // von Oswald et al.: optimal 1-step GD loss 0.2047 at η ≈ 6 (spec §6, row 2).
        let p = prompts(10_000, 10);
        let tuned = tune_eta(&p, &LeastSquaresStats::new(&p), 1, &official_eta_grid());
        assert!((tuned.loss - 0.2047).abs() < 0.006, "{tuned:?}");
        assert!((5.0..7.0).contains(&tuned.eta), "{tuned:?}");
    }

    #[test]
    fn more_steps_lower_the_loss() {
        let p = prompts(4000, 3);
        let stats = LeastSquaresStats::new(&p);
        let grid = official_eta_grid();
        let losses: Vec<f64> = (1..=3).map(|k| tune_eta(&p, &stats, k, &grid).loss).collect();
        assert!(losses[0] > losses[1] && losses[1] > losses[2], "{losses:?}");
        // spec §6 row 4: K=2 ≈ 0.158, K=3 ≈ 0.136 (4k prompts: ±0.01)
        assert!((losses[1] - 0.158).abs() < 0.01 && (losses[2] - 0.136).abs() < 0.01, "{losses:?}");
    }
}
