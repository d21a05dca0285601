//! Least-squares learners solved per prompt: ridge (Akyürek et al.'s Ridge(λ),
//! w = (XᵀX + λI)⁻¹Xᵀy), min-norm least squares (X⁺y, LAPACK's SVD-based `gelsd`), and Fu et al.'s
//! Newton–Schulz iterations for (XᵀX)⁻¹: M₀ = 2Aᵀ/‖AAᵀ‖_F, M_{k+1} = M_k(2I − A M_k), w = M_k Xᵀy
//! with A = XᵀX, which converge to the least-squares solution.

use ndarray::{Array2, Array3, Axis};
use ndarray_linalg::{Eigh, LeastSquaresSvd, UPLO};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use icl_tasks::{LearnerSpec, Params, Prompts};

use crate::gd::LeastSquaresStats;
use crate::learner::{linear_prediction, parse_spec, to_params, tuning_for, Learner, LearnerFamily, Prediction};
use crate::ridge::ridge_weights;
use crate::tune::minimize_log;
use crate::ProbeError;

/// Weights computed prompt by prompt ([`super::per_prompt_weights`]); without context pairs,
/// W = 0 (the solvers here have nothing to solve).
fn per_prompt_weights(
    p: &Prompts,
    solve: impl Fn(Array2<f64>, Array2<f64>) -> Result<Array2<f64>, ProbeError> + Sync + Send,
) -> Result<Array3<f64>, ProbeError> {
    if p.context_len() == 0 {
        return Ok(Array3::zeros((p.batch(), p.y_dim(), p.x_dim())));
    }
    super::per_prompt_weights(p, solve)
}

pub struct LeastSquaresFamily;
pub struct LeastSquares;

impl LearnerFamily for LeastSquaresFamily {
    fn name(&self) -> &'static str {
        "least_squares"
    }
    fn about(&self) -> &'static str {
        "minimum-norm least squares X⁺y (Garg et al.; Akyürek et al.'s OLS)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        parse_spec::<serde_json::Map<String, serde_json::Value>>(spec).and_then(|m| {
            if m.is_empty() {
                Ok(Box::new(LeastSquares) as Box<dyn Learner>)
            } else {
                Err(ProbeError::InvalidSpec("learner `least_squares` takes no settings".into()))
            }
        })
    }
}

impl Learner for LeastSquares {
    fn name(&self) -> &str {
        "least_squares"
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        Some(per_prompt_weights(p, |x, y| Ok(x.least_squares(&y)?.solution.reversed_axes())))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RidgeSpec {
    lambda: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ridge {
    pub lambda: f64,
}

pub struct RidgeFamily;

impl LearnerFamily for RidgeFamily {
    fn name(&self) -> &'static str {
        "ridge"
    }
    fn about(&self) -> &'static str {
        "ridge regression (XᵀX + λI)⁻¹Xᵀy; the Bayes-optimal λ is σ²/τ² (Akyürek et al.)"
    }
    fn needs_tuning(&self, spec: &LearnerSpec) -> bool {
        !spec.sets("lambda")
    }
    fn fit(&self, spec: &LearnerSpec, tuning: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let s: RidgeSpec = parse_spec(spec)?;
        let lambda = match s.lambda {
            Some(l) if l.is_finite() && l > 0.0 => l,
            Some(l) => return Err(ProbeError::InvalidSpec(format!("learner `ridge`: lambda must be > 0 (got {l})"))),
            None => tune_lambda(tuning_for("ridge", tuning)?)?,
        };
        Ok(Box::new(Ridge { lambda }))
    }
}

/// Each prompt's XᵀX = V diag(s) Vᵀ diagonalised once, so that ridge's prediction at any λ costs
/// O(d·o) per prompt: ŷ(λ) = Σᵢ (Vᵀx_q)ᵢ (VᵀXᵀy)ᵢ / (sᵢ + λ). Used to tune λ and to trace ridge's
/// error over a whole λ path (Bai et al.'s frontier).
pub struct RidgePath {
    /// Per prompt: the eigenvalues s (d), Vᵀx_q (d), VᵀXᵀY (d, o).
    spectra: Vec<(ndarray::Array1<f64>, ndarray::Array1<f64>, Array2<f64>)>,
    yq: Array2<f64>,
}

impl RidgePath {
    pub fn new(t: &Prompts) -> Result<Self, ProbeError> {
        super::serial_blas();
        let spectra = (0..t.batch())
            .into_par_iter()
            .map(|b| {
                let x = t.xs.index_axis(Axis(0), b);
                let (s, v) = x.t().dot(&x).eigh(UPLO::Lower)?;
                let q = v.t().dot(&t.xq.row(b)); // (d)
                let c = v.t().dot(&x.t().dot(&t.ys.index_axis(Axis(0), b))); // (d, o)
                Ok((s, q, c))
            })
            .collect::<Result<_, ProbeError>>()?;
        Ok(Self { spectra, yq: t.yq.clone() })
    }

    /// The mean eigenvalue of XᵀX over prompts (the natural scale of λ).
    pub fn scale(&self) -> f64 {
        let d = self.spectra.first().map_or(1, |(s, _, _)| s.len());
        self.spectra.iter().map(|(s, _, _)| s.sum()).sum::<f64>() / (self.spectra.len() * d).max(1) as f64
    }

    /// Σ over prompts of ‖ŷ(λ) − y_q‖².
    pub fn total_squared_error(&self, lambda: f64) -> f64 {
        self.spectra
            .iter()
            .enumerate()
            .map(|(b, (s, q, c))| {
                (0..c.ncols())
                    .map(|k| {
                        let pred: f64 = (0..s.len()).map(|i| q[i] * c[[i, k]] / (s[i] + lambda)).sum();
                        (pred - self.yq[[b, k]]).powi(2)
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    /// The mean over prompts of ‖ŷ(λ) − y_q‖².
    pub fn mean_squared_error(&self, lambda: f64) -> f64 {
        self.total_squared_error(lambda) / self.spectra.len().max(1) as f64
    }
}

/// λ minimising the error on `tuning`, searched over 4 decades either side of the mean eigenvalue
/// of XᵀX ([`RidgePath`]).
fn tune_lambda(t: &Prompts) -> Result<f64, ProbeError> {
    if t.context_len() == 0 {
        return Ok(1.0); // no context: every λ predicts 0
    }
    let path = RidgePath::new(t)?;
    let scale = path.scale();
    if scale <= 0.0 {
        return Ok(1.0);
    }
    Ok(minimize_log(|lambda| path.total_squared_error(lambda), scale, 4.0).0)
}

impl Learner for Ridge {
    fn name(&self) -> &str {
        "ridge"
    }
    fn params(&self) -> Params {
        to_params(self)
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        if p.context_len() == 0 {
            return Some(Ok(Array3::zeros((p.batch(), p.y_dim(), p.x_dim()))));
        }
        Some(ridge_weights(&LeastSquaresStats::new(p), p.context_len(), self.lambda))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Newton {
    #[serde(default = "five")]
    pub steps: usize,
}

fn five() -> usize {
    5
}

pub struct NewtonFamily;

impl LearnerFamily for NewtonFamily {
    fn name(&self) -> &'static str {
        "newton"
    }
    fn about(&self) -> &'static str {
        "Newton–Schulz iterations towards (XᵀX)⁻¹Xᵀy (Fu et al. 2024)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let n: Newton = parse_spec(spec)?;
        if n.steps > 10_000 {
            return Err(ProbeError::InvalidSpec("learner `newton`: steps must be at most 10000".into()));
        }
        Ok(Box::new(n))
    }
}

impl Newton {
    /// W (o, d) after `steps` iterations for one prompt.
    pub fn solve(&self, x: &Array2<f64>, y: &Array2<f64>) -> Array2<f64> {
        let a = x.t().dot(x); // (d, d)
        let norm = a.dot(&a.t()).iter().map(|v| v * v).sum::<f64>().sqrt();
        let d = a.nrows();
        if norm == 0.0 {
            return Array2::zeros((y.ncols(), d));
        }
        let mut m = a.t().to_owned() * (2.0 / norm);
        let two = Array2::<f64>::eye(d) * 2.0;
        for _ in 0..self.steps {
            m = m.dot(&(&two - &a.dot(&m)));
        }
        m.dot(&x.t().dot(y)).reversed_axes() // (d, o) → (o, d)
    }
}

impl Learner for Newton {
    fn name(&self) -> &str {
        "newton"
    }
    fn params(&self) -> Params {
        to_params(self)
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        Some(per_prompt_weights(p, |x, y| Ok(self.solve(&x, &y))))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learners::isotropic;
    use icl_tasks::{TaskConfig, TaskRng};
    use ndarray::{array, s};
    use rand::SeedableRng;

    #[test]
    fn min_norm_least_squares_on_a_hand_worked_case() {
        // One pair x = (1, 1), y = 2 in d = 2: the min-norm solution is w = (1, 1).
        let p = Prompts {
            xs: array![[[1.0, 1.0]]],
            ys: array![[[2.0]]],
            xq: array![[3.0, -1.0]],
            yq: array![[0.0]],
            w: None,
        };
        let out = LeastSquares.predict(&p).unwrap();
        assert!((out.preds[[0, 0]] - 2.0).abs() < 1e-12);
        assert!((&out.sens.unwrap() - &array![[1.0, 1.0]]).iter().all(|e| e.abs() < 1e-12));
    }

    #[test]
    fn least_squares_error_follows_the_projection_closed_form() {
        // n < d: the normalised error is (d − n)/d; n ≥ d: 0 (noise-free).
        let d = 6;
        for n in [2, 4, 6, 9] {
            let p = isotropic(d, n, 20_000, n as u64);
            let err = p.squared_errors(&LeastSquares.predict(&p).unwrap().preds).iter().sum::<f64>() / (20_000.0 * 6.0);
            let want = (d.saturating_sub(n)) as f64 / d as f64;
            assert!((err - want).abs() < 0.02, "n = {n}: {err} vs {want}");
        }
    }

    #[test]
    fn ridge_matches_its_normal_equations_and_tunes_towards_zero_without_noise() {
        let p = isotropic(3, 5, 4, 1);
        let r = Ridge { lambda: 0.7 };
        let w = r.weights(&p).unwrap().unwrap();
        for b in 0..4 {
            let x = p.xs.index_axis(Axis(0), b);
            let y = p.ys.slice(s![b, .., 0]);
            // (XᵀX + λI) w = Xᵀy
            let gram: Array2<f64> = x.t().dot(&x) + Array2::<f64>::eye(3) * 0.7;
            let lhs: ndarray::Array1<f64> = gram.dot(&w.slice(s![b, 0, ..]));
            let rhs: ndarray::Array1<f64> = x.t().dot(&y);
            assert!(lhs.iter().zip(&rhs).all(|(a, b)| (a - b).abs() < 1e-10));
        }
        let tuned = RidgeFamily.fit(&LearnerSpec::new("ridge"), Some(&isotropic(3, 10, 2000, 2))).unwrap();
        assert!(tuned.params()["lambda"].as_f64().unwrap() < 0.05, "{:?}", tuned.params());
    }

    #[test]
    fn ridge_tuned_under_noise_finds_the_bayes_optimal_lambda() {
        // y = wᵀx + ε, w ~ N(0, I), ε ~ N(0, σ²): the posterior mean is ridge with λ = σ²/τ² = σ².
        let task = TaskConfig::new("gaussian_linear").with("x_dim", 4).with("noise_std", 1.0).build().unwrap();
        let t = task.sample_n(&mut TaskRng::seed_from_u64(3), 40_000, 6);
        let tuned = RidgeFamily.fit(&LearnerSpec::new("ridge"), Some(&t)).unwrap();
        let lambda = tuned.params()["lambda"].as_f64().unwrap();
        assert!((lambda - 1.0).abs() < 0.25, "{lambda}");
    }

    #[test]
    fn newton_converges_to_least_squares() {
        let p = isotropic(5, 12, 20, 4);
        let ls = LeastSquares.weights(&p).unwrap().unwrap();
        let newton = Newton { steps: 30 }.weights(&p).unwrap().unwrap();
        let gap = (&ls - &newton).iter().fold(0.0f64, |m: f64, e: &f64| m.max(e.abs()));
        assert!(gap < 1e-8, "{gap}");
        // fewer iterations are further away
        let early = Newton { steps: 3 }.weights(&p).unwrap().unwrap();
        assert!((&ls - &early).iter().fold(0.0f64, |m: f64, e: &f64| m.max(e.abs())) > 1e-3);
    }
}
