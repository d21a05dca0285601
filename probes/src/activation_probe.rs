//! Probes of activations (Akyürek et al. 2023 §5): can a quantity the hypothesised algorithm
//! needs — the task's hidden w, the moment Xᵀy, the least-squares or ridge solution — be read off
//! a layer's hidden states? A probe is fitted on the activations of fresh prompts and scored on
//! held-out ones by R² and by the normalised error E‖t̂ − t‖² / E‖t‖².
//!
//! This module holds the targets and the linear probe (ridge regression in closed form, λ chosen
//! on a validation split); features are whatever the caller reads from the activation cache (the
//! query token, a pooling over positions, all tokens). Akyürek et al. fit their probes by Adam
//! with a learned attention pooling; a linear map of all tokens contains every fixed pooling
//! followed by a linear map, so its R² bounds theirs from above for the linear probe.

use ndarray::{s, Array1, Array2, Axis};
use ndarray_linalg::{Eigh, UPLO};

use icl_tasks::{LearnerSpec, Prompts};

use crate::learner::fit;
use crate::ProbeError;

/// What a probe decodes.
pub const TARGETS: [&str; 4] = ["w", "xty", "w_ols", "w_ridge"];

/// The probe target `name` per prompt, (B, k): `w` the hidden weights (o·d), `xty` = Σᵢ yᵢ xᵢᵀ
/// (o·d; Akyürek's XᵀY), `w_ols` the minimum-norm least-squares solution, `w_ridge` ridge with
/// λ tuned on `tuning`.
pub fn targets(name: &str, prompts: &Prompts, tuning: Option<&Prompts>) -> Result<Array2<f64>, ProbeError> {
    let (b, d, o) = (prompts.batch(), prompts.x_dim(), prompts.y_dim());
    let flat = |w: ndarray::Array3<f64>| w.into_shape_with_order((b, o * d)).expect("(B, o, d) → (B, o·d)");
    match name {
        "w" => prompts.w.clone().map(flat).ok_or_else(|| ProbeError::Unsupported("the task has no hidden w".into())),
        "xty" => {
            let mut out = Array2::zeros((b, o * d));
            for i in 0..b {
                let m = prompts.ys.index_axis(Axis(0), i).t().dot(&prompts.xs.index_axis(Axis(0), i)); // (o, d)
                out.row_mut(i).assign(&Array1::from_iter(m.iter().copied()));
            }
            Ok(out)
        }
        "w_ols" | "w_ridge" => {
            let spec = LearnerSpec::new(if name == "w_ols" { "least_squares" } else { "ridge" });
            let learner = fit(&spec, tuning)?;
            let w = learner.weights(prompts).expect("a linear learner")?;
            Ok(flat(w))
        }
        other => {
            Err(ProbeError::Unsupported(format!("unknown probe target `{other}` (known: {})", TARGETS.join(", "))))
        }
    }
}

/// How well a probe decodes its target on held-out prompts.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeScore {
    /// 1 − Σ‖t̂ − t‖² / Σ‖t − t̄‖² over the held-out prompts (t̄ the training mean).
    pub r2: f64,
    /// Σ‖t̂ − t‖² / Σ‖t‖².
    pub normalised_error: f64,
    /// The ridge penalty chosen on the validation split.
    pub lambda: f64,
}

impl ProbeScore {
    /// The scores of predictions `pred` of `target` (B, k), with `train_mean` the fitting rows'
    /// mean target (the R² baseline).
    pub fn of(pred: &Array2<f64>, target: &Array2<f64>, train_mean: &Array1<f64>, lambda: f64) -> Self {
        let sse = (pred - target).iter().map(|v| v * v).sum::<f64>();
        let sst = (target - train_mean).iter().map(|v| v * v).sum::<f64>();
        let norm = target.iter().map(|v| v * v).sum::<f64>();
        ProbeScore {
            r2: 1.0 - sse / sst.max(f64::MIN_POSITIVE),
            normalised_error: sse / norm.max(f64::MIN_POSITIVE),
            lambda,
        }
    }
}

/// A fitted linear probe: t̂ = (f − μ_f) β + μ_t.
pub struct LinearProbe {
    feature_mean: Array1<f64>,
    target_mean: Array1<f64>,
    beta: Array2<f64>,
    pub lambda: f64,
}

impl LinearProbe {
    /// Ridge regression of `targets` (B, k) on `features` (B, m), λ from a log grid chosen on the
    /// last fifth of the rows and the probe refitted on all of them.
    pub fn fit(features: &Array2<f64>, targets: &Array2<f64>) -> Result<Self, ProbeError> {
        let rows = features.nrows();
        if rows < 10 || targets.nrows() != rows {
            return Err(ProbeError::Unsupported(format!(
                "a probe needs ≥ 10 matching rows, got {rows} and {}",
                targets.nrows()
            )));
        }
        let split = rows - rows / 5;
        let (fit_f, val_f) = (features.slice(s![..split, ..]).to_owned(), features.slice(s![split.., ..]).to_owned());
        let (fit_t, val_t) = (targets.slice(s![..split, ..]).to_owned(), targets.slice(s![split.., ..]).to_owned());
        let grid: Vec<f64> = (-8..=4).map(|e| 10f64.powi(e)).collect();
        let mut best = (f64::INFINITY, 1.0);
        for &lambda in &grid {
            let probe = Self::fit_with(&fit_f, &fit_t, lambda)?;
            let err = (&probe.predict(&val_f) - &val_t).iter().map(|v| v * v).sum::<f64>();
            if err < best.0 {
                best = (err, lambda);
            }
        }
        Self::fit_with(features, targets, best.1)
    }

    /// Ridge with a fixed λ (scaled by the feature variance, so λ is unit-free).
    pub fn fit_with(features: &Array2<f64>, targets: &Array2<f64>, lambda: f64) -> Result<Self, ProbeError> {
        let feature_mean = features.mean_axis(Axis(0)).expect("rows");
        let target_mean = targets.mean_axis(Axis(0)).expect("rows");
        let f = features - &feature_mean;
        let t = targets - &target_mean;
        let gram = f.t().dot(&f); // (m, m)
        let scale = (gram.diag().sum() / gram.nrows().max(1) as f64).max(f64::MIN_POSITIVE);
        // (FᵀF + λ·scale·I)⁻¹ FᵀT through the eigendecomposition (stable for rank-deficient F).
        let (vals, vecs) = gram.eigh(UPLO::Lower)?;
        let ft = vecs.t().dot(&f.t().dot(&t)); // (m, k)
        let mut scaled = ft;
        for (mut row, &v) in scaled.outer_iter_mut().zip(vals.iter()) {
            row /= v.max(0.0) + lambda * scale;
        }
        Ok(Self { feature_mean, target_mean, beta: vecs.dot(&scaled), lambda })
    }

    pub fn predict(&self, features: &Array2<f64>) -> Array2<f64> {
        (features - &self.feature_mean).dot(&self.beta) + &self.target_mean
    }

    /// R² and normalised error on held-out rows.
    pub fn score(&self, features: &Array2<f64>, targets: &Array2<f64>) -> ProbeScore {
        ProbeScore::of(&self.predict(features), targets, &self.target_mean, self.lambda)
    }
}

/// Fits a linear probe on (train features, targets) and scores it on the held-out pair.
pub fn linear_probe(
    train: (&Array2<f64>, &Array2<f64>),
    held_out: (&Array2<f64>, &Array2<f64>),
) -> Result<ProbeScore, ProbeError> {
    Ok(LinearProbe::fit(train.0, train.1)?.score(held_out.0, held_out.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use icl_tasks::{registry, TaskConfig, TaskRng};
    use rand::SeedableRng;

    fn prompts(batch: usize, seed: u64) -> Prompts {
        registry::build(&TaskConfig::new("linear").with("x_dim", 4)).unwrap().sample_n(
            &mut TaskRng::seed_from_u64(seed),
            batch,
            8,
        )
    }

    #[test]
    fn a_target_that_is_a_linear_function_of_the_features_is_decoded_exactly() {
        crate::learners::serial_blas();
        // Features: Xᵀy plus 3 noise columns; target w_ols is not linear in them, Xᵀy is.
        let (train, test) = (prompts(400, 1), prompts(200, 2));
        let feats = |p: &Prompts| {
            let xty = targets("xty", p, None).unwrap();
            let noise = targets("w", p, None).unwrap().slice(s![.., ..3]).to_owned();
            ndarray::concatenate![Axis(1), xty, noise]
        };
        let score = linear_probe(
            (&feats(&train), &targets("xty", &train, None).unwrap()),
            (&feats(&test), &targets("xty", &test, None).unwrap()),
        )
        .unwrap();
        assert!(score.r2 > 1.0 - 1e-9, "{score:?}");
        assert!(score.normalised_error < 1e-9, "{score:?}");
    }

    #[test]
    fn features_that_carry_nothing_score_about_zero() {
        let (train, test) = (prompts(400, 3), prompts(400, 4));
        // The queries are drawn independently of w: they say nothing about it.
        let score = linear_probe(
            (&train.xq, &targets("w", &train, None).unwrap()),
            (&test.xq, &targets("w", &test, None).unwrap()),
        )
        .unwrap();
        assert!(score.r2.abs() < 0.05, "{score:?}");
    }

    #[test]
    fn targets_have_the_documented_shapes_and_values() {
        let p = prompts(5, 5);
        let xty = targets("xty", &p, None).unwrap();
        assert_eq!(xty.dim(), (5, 4));
        let by_hand: f64 = (0..8).map(|i| p.ys[[2, i, 0]] * p.xs[[2, i, 1]]).sum();
        assert!((xty[[2, 1]] - by_hand).abs() < 1e-12);
        // n = 8 ≥ d = 4 and no noise: least squares recovers w.
        let ols = targets("w_ols", &p, None).unwrap();
        let w = targets("w", &p, None).unwrap();
        assert!((&ols - &w).iter().all(|v| v.abs() < 1e-8));
        assert!(targets("nope", &p, None).is_err());
    }
}
