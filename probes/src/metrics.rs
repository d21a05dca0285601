//! Comparison metrics between two in-context learners, as defined by von Oswald et al. 2023
//! (official `train.py: analyse`; spec §1.6). Inputs are predictions ŷ (B, o) and sensitivities
//! s = ∂ŷ/∂x_q of the last output (B, d). The paper negates both (f = h[−1,−1] = −ŷ); every metric
//! here is invariant to negating both sides, so we use ŷ directly.

use ndarray::{Array2, Axis, Zip};
use serde::{Deserialize, Serialize};

/// Alignment of a model with a reference learner on a set of prompts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alignment {
    /// mean_τ ‖ŷ_a − ŷ_b‖₂ ("Preds diff")
    pub preds_diff: f64,
    /// mean_τ ‖s_a − s_b‖₂ ("Model diff")
    pub model_diff: f64,
    /// mean_τ ⟨s_a/(‖s_a‖+1e-8), s_b/(‖s_b‖+1e-8)⟩ ("Model cos")
    pub model_cos: f64,
}

pub fn alignment(
    preds_a: &Array2<f64>,
    sens_a: &Array2<f64>,
    preds_b: &Array2<f64>,
    sens_b: &Array2<f64>,
) -> Alignment {
    assert_eq!(preds_a.dim(), preds_b.dim(), "predictions must have equal shapes");
    assert_eq!(sens_a.dim(), sens_b.dim(), "sensitivities must have equal shapes");
    let batch = preds_a.nrows() as f64;
    let preds_diff = (preds_a - preds_b).map_axis(Axis(1), |r| r.dot(&r).sqrt()).sum() / batch;
    let mut model_diff = 0.0;
    let mut model_cos = 0.0;
    Zip::from(sens_a.outer_iter()).and(sens_b.outer_iter()).for_each(|a, b| {
        let diff = &a - &b;
        model_diff += diff.dot(&diff).sqrt();
        let (na, nb) = (a.dot(&a).sqrt() + 1e-8, b.dot(&b).sqrt() + 1e-8);
        model_cos += a.dot(&b) / (na * nb);
    });
    Alignment { preds_diff, model_diff: model_diff / batch, model_cos: model_cos / batch }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn identical_learners_align_perfectly() {
        let p = array![[1.0], [2.0]];
        let s = array![[1.0, 0.0], [0.5, 0.5]];
        let a = alignment(&p, &s, &p, &s);
        assert_eq!(a.preds_diff, 0.0);
        assert_eq!(a.model_diff, 0.0);
        assert!((a.model_cos - 1.0).abs() < 1e-7);
    }

    #[test]
    fn opposite_and_orthogonal_sensitivities() {
        let p = array![[1.0], [0.0]];
        let q = array![[0.0], [3.0]];
        let s = array![[1.0, 0.0], [0.0, 2.0]];
        let t = array![[-1.0, 0.0], [2.0, 0.0]];
        let a = alignment(&p, &s, &q, &t);
        assert!((a.preds_diff - 2.0).abs() < 1e-12); // (1 + 3) / 2
        assert!((a.model_cos - (-0.5)).abs() < 1e-7); // (−1 + 0) / 2
        assert!((a.model_diff - (2.0 + 8f64.sqrt()) / 2.0).abs() < 1e-12);
    }
}
