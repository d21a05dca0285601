//! Gradient-descent learners on the in-context least-squares loss L(W) = (1/2n) Σ‖W xᵢ − yᵢ‖², all
//! from W₀ = 0, in the convention of von Oswald et al. (ΔW = −(η/n) Σ (W xᵢ − yᵢ) xᵢᵀ):
//!
//! - `gd`: k steps with one η;
//! - `gd++`: each step also preconditions every input, x ← (I − γ Σᵢ xᵢxᵢᵀ) x (their A.10);
//! - `precond_gd`: k steps W ← W − (W A − B) Pᵀ with a matrix P (Ahn et al. 2023; for one step the
//!   prediction is x_qᵀ P (1/n) Σ yᵢxᵢ, Zhang, Frei & Bartlett 2023's form).
//!
//! Open step sizes are tuned on the tuning prompts: one GD step in closed form (the prediction is
//! linear in η), several by [`minimize_log`] around 1/λ̄ with λ̄ the mean trace of A = XᵀX/n; γ by
//! golden section on [0, 1.5/c̄] with c̄ the mean eigenvalue of XᵀX; a one-step P in closed form by
//! least squares (the prediction is linear in P).

use ndarray::{Array2, Array3, Axis, Zip};
use ndarray_linalg::Solve;
use serde::{Deserialize, Serialize};

use icl_tasks::{LearnerSpec, Params, Prompts};

use crate::gd::{gd_weights, predict, LeastSquaresStats};
use crate::gdpp::gdpp_weights;
use crate::learner::{linear_prediction, parse_spec, tuning_for, Learner, LearnerFamily, Prediction};
use crate::tune::{golden, minimize_log, nelder_mead};
use crate::ProbeError;

/// Fits one P per step of `steps`-step preconditioned GD on tuning prompts (minimising their
/// ½·MSE at the query). This crate has no autograd; `icl-lab` registers one built on libtorch.
pub type PrecondFitter = fn(&Prompts, usize) -> Result<Vec<Array2<f64>>, ProbeError>;

static PRECOND_FITTER: std::sync::OnceLock<PrecondFitter> = std::sync::OnceLock::new();

/// Registers the fitter `precond_gd` uses for several steps without a given `p` (once; later
/// calls are ignored).
pub fn register_precond_fitter(fitter: PrecondFitter) {
    let _ = PRECOND_FITTER.set(fitter);
}

/// Σ‖ŷ − y_q‖² of per-prompt weights on prompts.
fn sse(w: &Array3<f64>, p: &Prompts) -> f64 {
    p.squared_errors(&predict(w, &p.xq)).iter().sum()
}

/// Mean over prompts of tr(A) with A = XᵀX/n (an upper bound on the mean largest eigenvalue).
fn mean_trace(stats: &LeastSquaresStats) -> f64 {
    stats.xx.outer_iter().map(|a| a.diag().sum()).sum::<f64>() / stats.xx.shape()[0].max(1) as f64
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GdSpec {
    #[serde(default = "one")]
    steps: usize,
    eta: Option<f64>,
}

/// k GD steps from 0 with a constant η.
#[derive(Clone, Debug, Serialize)]
pub struct Gd {
    pub steps: usize,
    pub eta: f64,
}

/// The η that minimises the k-step GD error on `tuning`.
pub fn tune_gd_eta(tuning: &Prompts, steps: usize) -> f64 {
    let stats = LeastSquaresStats::new(tuning);
    if steps == 1 {
        // ŷ = η·s with s = B x_q: least squares in η.
        let s = predict(&stats.yx, &tuning.xq);
        let den = (&s * &s).sum();
        return if den > 0.0 { (&s * &tuning.yq).sum() / den } else { 0.0 };
    }
    let scale = mean_trace(&stats);
    if scale <= 0.0 {
        return 0.0;
    }
    let loss = |eta: f64| sse(gd_weights(&stats, &vec![eta; steps]).last().expect("steps ≥ 1"), tuning);
    minimize_log(loss, 1.0 / scale, 2.0).0
}

pub struct GdFamily;

impl LearnerFamily for GdFamily {
    fn name(&self) -> &'static str {
        "gd"
    }
    fn about(&self) -> &'static str {
        "k steps of gradient descent from W₀ = 0 with one step size η (von Oswald et al.)"
    }
    fn needs_tuning(&self, spec: &LearnerSpec) -> bool {
        !spec.sets("eta")
    }
    fn fit(&self, spec: &LearnerSpec, tuning: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let s: GdSpec = parse_spec(spec)?;
        check_steps("gd", s.steps)?;
        let eta = match s.eta {
            Some(eta) => eta,
            None => tune_gd_eta(tuning_for("gd", tuning)?, s.steps),
        };
        Ok(Box::new(Gd { steps: s.steps, eta }))
    }
}

fn check_steps(name: &str, steps: usize) -> Result<(), ProbeError> {
    if (1..=10_000).contains(&steps) {
        Ok(())
    } else {
        Err(ProbeError::InvalidSpec(format!("learner `{name}`: steps must be in 1..=10000 (got {steps})")))
    }
}

impl Learner for Gd {
    fn name(&self) -> &str {
        "gd"
    }
    fn params(&self) -> Params {
        crate::learner::to_params(self)
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        let stats = LeastSquaresStats::new(p);
        Some(Ok(gd_weights(&stats, &vec![self.eta; self.steps]).pop().expect("steps ≥ 1")))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GdppSpec {
    #[serde(default = "one")]
    steps: usize,
    eta: Option<f64>,
    gamma: Option<f64>,
}

/// k GD++ steps with one (η, γ) shared by the steps.
#[derive(Clone, Debug, Serialize)]
pub struct GdPlusPlus {
    pub steps: usize,
    pub eta: f64,
    pub gamma: f64,
}

pub struct GdPlusPlusFamily;

impl LearnerFamily for GdPlusPlusFamily {
    fn name(&self) -> &'static str {
        "gd++"
    }
    fn about(&self) -> &'static str {
        "GD with input preconditioning x ← (I − γ Σ xᵢxᵢᵀ) x per step (von Oswald et al. A.10)"
    }
    fn needs_tuning(&self, spec: &LearnerSpec) -> bool {
        !(spec.sets("eta") && spec.sets("gamma"))
    }
    fn fit(&self, spec: &LearnerSpec, tuning: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let s: GdppSpec = parse_spec(spec)?;
        check_steps("gd++", s.steps)?;
        let learner = match (s.eta, s.gamma) {
            (Some(eta), Some(gamma)) => GdPlusPlus { steps: s.steps, eta, gamma },
            _ => {
                let t = tuning_for("gd++", tuning)?;
                let loss = |eta: f64, gamma: f64| -> f64 {
                    let v = sse(gdpp_weights(t, &vec![eta; s.steps], &vec![gamma; s.steps]).last().expect("≥ 1"), t);
                    if v.is_finite() {
                        v
                    } else {
                        f64::INFINITY
                    }
                };
                let eta0 = s.eta.unwrap_or_else(|| tune_gd_eta(t, s.steps));
                let c_bar = mean_trace(&LeastSquaresStats::new(t)) * t.context_len() as f64 / t.x_dim() as f64;
                let (eta, gamma) = match (s.eta, s.gamma) {
                    _ if c_bar <= 0.0 || eta0 <= 0.0 => (eta0, s.gamma.unwrap_or(0.0)),
                    (Some(eta), None) => (eta, golden(&|g| loss(eta, g), 0.0, 1.5 / c_bar, 50).0),
                    (None, Some(gamma)) => (minimize_log(|e| loss(e, gamma), eta0, 1.5).0, gamma),
                    _ => {
                        // (ln η, γ) jointly: the valley runs diagonally, so coordinate searches stall.
                        let start = [eta0.ln(), 0.0];
                        let (x, _) = nelder_mead(|v| loss(v[0].exp(), v[1]), start, [0.3, 0.3 / c_bar])?;
                        (x[0].exp(), x[1])
                    }
                };
                GdPlusPlus { steps: s.steps, eta, gamma }
            }
        };
        Ok(Box::new(learner))
    }
}

impl Learner for GdPlusPlus {
    fn name(&self) -> &str {
        "gd++"
    }
    fn params(&self) -> Params {
        crate::learner::to_params(self)
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        let w = gdpp_weights(p, &vec![self.eta; self.steps], &vec![self.gamma; self.steps]);
        Some(Ok(w.into_iter().last().expect("steps ≥ 1")))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrecondSpec {
    #[serde(default = "one")]
    steps: usize,
    /// One d × d matrix shared by the steps.
    p: Option<Vec<Vec<f64>>>,
}

/// k steps W ← W − (W A − B) P_lᵀ from W = 0; `per_step` holds one P (shared) or one per step.
#[derive(Clone, Debug)]
pub struct PrecondGd {
    pub steps: usize,
    pub per_step: Vec<Array2<f64>>,
}

impl PrecondGd {
    pub fn new(steps: usize, per_step: Vec<Array2<f64>>) -> Result<Self, ProbeError> {
        check_steps("precond_gd", steps)?;
        if per_step.len() != 1 && per_step.len() != steps {
            return Err(ProbeError::InvalidSpec(format!(
                "learner `precond_gd`: one P or one per step ({steps}), got {}",
                per_step.len()
            )));
        }
        if per_step.iter().any(|p| !p.is_square() || p.nrows() != per_step[0].nrows()) {
            return Err(ProbeError::InvalidSpec("learner `precond_gd`: P must be square (d × d)".into()));
        }
        Ok(Self { steps, per_step })
    }

    fn p(&self, step: usize) -> &Array2<f64> {
        &self.per_step[if self.per_step.len() == 1 { 0 } else { step }]
    }

    /// The one-step P that minimises the squared error on `tuning` (o = 1): ŷ = Σᵢⱼ Pᵢⱼ x_q,ᵢ bⱼ
    /// with b = (1/n) Σ yᵢxᵢ, so P solves a least-squares problem in d² unknowns.
    pub fn fit_one_step(tuning: &Prompts) -> Result<Array2<f64>, ProbeError> {
        let (batch, d) = (tuning.batch(), tuning.x_dim());
        if tuning.y_dim() != 1 {
            return Err(ProbeError::Unsupported("learner `precond_gd`: fitting P needs one output".into()));
        }
        if tuning.context_len() == 0 {
            return Ok(Array2::zeros((d, d))); // no context: every P predicts 0
        }
        let stats = LeastSquaresStats::new(tuning);
        let mut features = Array2::<f64>::zeros((batch, d * d)); // (B, d²): x_q ⊗ b
        for (mut row, (xq, b)) in
            features.outer_iter_mut().zip(tuning.xq.outer_iter().zip(stats.yx.index_axis(Axis(1), 0).outer_iter()))
        {
            for i in 0..d {
                for j in 0..d {
                    row[i * d + j] = xq[i] * b[j];
                }
            }
        }
        let targets = tuning.yq.column(0).to_owned();
        // Normal equations with a tiny ridge so that a direction no prompt excites stays 0.
        let mut gram = features.t().dot(&features);
        let jitter = 1e-12 * gram.diag().iter().copied().fold(0.0, f64::max).max(1e-300);
        gram.diag_mut().iter_mut().for_each(|g| *g += jitter);
        let p = gram.solve(&features.t().dot(&targets))?;
        Ok(p.into_shape_with_order((d, d)).expect("d² entries"))
    }
}

pub struct PrecondGdFamily;

impl LearnerFamily for PrecondGdFamily {
    fn name(&self) -> &'static str {
        "precond_gd"
    }
    fn about(&self) -> &'static str {
        "preconditioned GD w ← w − P(Aw − b) (Ahn et al. 2023; one step: Zhang, Frei & Bartlett 2023)"
    }
    fn needs_tuning(&self, spec: &LearnerSpec) -> bool {
        !spec.sets("p")
    }
    fn fit(&self, spec: &LearnerSpec, tuning: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let s: PrecondSpec = parse_spec(spec)?;
        let p = match s.p {
            Some(rows) => {
                let d = rows.len();
                let flat: Vec<f64> = rows.concat();
                Array2::from_shape_vec((d, flat.len() / d.max(1)), flat)
                    .map_err(|_| ProbeError::InvalidSpec("learner `precond_gd`: p must be a d × d matrix".into()))?
            }
            None if s.steps == 1 => PrecondGd::fit_one_step(tuning_for("precond_gd", tuning)?)?,
            None => match PRECOND_FITTER.get() {
                Some(fit_steps) => {
                    let per_step = fit_steps(tuning_for("precond_gd", tuning)?, s.steps)?;
                    return Ok(Box::new(PrecondGd::new(s.steps, per_step)?));
                }
                None => {
                    return Err(ProbeError::Unsupported(
                        "learner `precond_gd`: P for several steps needs a fitter with autograd (icl-lab registers one); give `p` here".into(),
                    ))
                }
            },
        };
        Ok(Box::new(PrecondGd::new(s.steps, vec![p])?))
    }
}

impl Learner for PrecondGd {
    fn name(&self) -> &str {
        "precond_gd"
    }
    fn params(&self) -> Params {
        let rows = |p: &Array2<f64>| p.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let mut out = Params::new();
        out.insert("steps".into(), self.steps.into());
        let p = if self.per_step.len() == 1 {
            serde_json::json!(rows(&self.per_step[0]))
        } else {
            serde_json::json!(self.per_step.iter().map(rows).collect::<Vec<_>>())
        };
        out.insert("p".into(), p);
        out
    }
    fn weights(&self, prompts: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        let d = prompts.x_dim();
        if self.per_step[0].nrows() != d {
            return Some(Err(ProbeError::Unsupported(format!(
                "learner `precond_gd`: P is {0} × {0} but the prompts have d = {d}",
                self.per_step[0].nrows()
            ))));
        }
        let stats = LeastSquaresStats::new(prompts);
        let mut w = Array3::<f64>::zeros(stats.yx.raw_dim());
        for step in 0..self.steps {
            let p_t = self.p(step).t();
            Zip::from(w.outer_iter_mut()).and(stats.xx.outer_iter()).and(stats.yx.outer_iter()).for_each(
                |mut w_b, a, b| {
                    let grad = w_b.dot(&a) - b; // (o, d)
                    w_b -= &grad.dot(&p_t);
                },
            );
        }
        Some(Ok(w))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::fit;
    use crate::learners::isotropic;
    use icl_tasks::{TaskConfig, TaskRng};
    use rand::SeedableRng;

    #[test]
    fn one_tuned_gd_step_matches_the_closed_form() {
        // x, w ~ N(0, I): the best one-step coefficient on Σ yᵢxᵢᵀx_q is 1/(n + d + 1), i.e.
        // η = n/(n + d + 1), and the normalised error is (d + 1)/(n + d + 1).
        let (d, n) = (5, 8);
        let gd = fit(&LearnerSpec::new("gd"), Some(&isotropic(d, n, 40_000, 1))).unwrap();
        let eta = gd.params()["eta"].as_f64().unwrap();
        let want = n as f64 / (n + d + 1) as f64;
        assert!((eta - want).abs() < 0.02, "η {eta} vs {want}");
        let eval = isotropic(d, n, 40_000, 2);
        let err = eval.squared_errors(&gd.predict(&eval).unwrap().preds).iter().sum::<f64>() / (40_000.0 * d as f64);
        let closed = (d + 1) as f64 / (n + d + 1) as f64;
        assert!((err - closed).abs() < 0.02, "error {err} vs {closed}");
    }

    #[test]
    fn tuned_multi_step_gd_matches_the_official_grid_search() {
        // von Oswald et al.'s setting: tuning two steps by our scale-adaptive search lands where the
        // official grid does (spec §6 row 4: 2-step GD ≈ 0.158 at η ≈ 9).
        let task = TaskConfig::default().build().unwrap();
        let p = task.sample(&mut TaskRng::seed_from_u64(3), 4000);
        let ours = tune_gd_eta(&p, 2);
        let official = crate::gd::tune_eta(&p, &LeastSquaresStats::new(&p), 2, &crate::gd::official_eta_grid());
        let w = gd_weights(&LeastSquaresStats::new(&p), &[ours; 2]).pop().unwrap();
        let loss = p.half_mse(&predict(&w, &p.xq));
        assert!(loss <= official.loss + 1e-9, "ours {ours} → {loss}, grid {official:?}");
        assert!((ours - official.eta).abs() < 0.1, "{ours} vs {}", official.eta);
    }

    #[test]
    fn gdpp_tuning_finds_the_papers_gamma() {
        // Two recurrent GD++ steps: η ≈ 13, γ ≈ 0.17 (spec §6 row 5), loss ≈ 0.114.
        let task = TaskConfig::default().build().unwrap();
        let t = task.sample(&mut TaskRng::seed_from_u64(4), 4000);
        let l = fit(&LearnerSpec::new("gd++").with("steps", 2), Some(&t)).unwrap();
        let gamma = l.params()["gamma"].as_f64().unwrap();
        assert!((gamma - 0.17).abs() < 0.03, "{:?}", l.params());
        let e = task.sample(&mut TaskRng::seed_from_u64(5), 10_000);
        let loss = e.half_mse(&l.predict(&e).unwrap().preds);
        assert!((loss - 0.114).abs() < 0.006, "{loss}");
    }

    #[test]
    fn one_step_precond_gd_recovers_the_optimal_preconditioner() {
        // With P = c·I the learner is one GD step with η = c: the fitted P on isotropic data is
        // close to (n/(n + d + 1))·I.
        let (d, n) = (3, 6);
        let l = fit(&LearnerSpec::new("precond_gd"), Some(&isotropic(d, n, 60_000, 6))).unwrap();
        let p: Vec<Vec<f64>> = serde_json::from_value(l.params()["p"].clone()).unwrap();
        let c = n as f64 / (n + d + 1) as f64;
        for (i, row) in p.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let want = if i == j { c } else { 0.0 };
                assert!((v - want).abs() < 0.03, "P[{i}][{j}] = {v}, want {want}");
            }
        }
        // and with a given P = η·I it is exactly GD with η
        let gd = Gd { steps: 3, eta: 0.4 };
        let pre = PrecondGd::new(3, vec![Array2::eye(d) * 0.4]).unwrap();
        let e = isotropic(d, n, 50, 7);
        let diff = &gd.predict(&e).unwrap().preds - &pre.predict(&e).unwrap().preds;
        assert!(diff.iter().all(|v| v.abs() < 1e-12));
    }
}
