//! Posterior means: the Bayes-optimal predictors of a training distribution, as rivals to the
//! fixed algorithms (interventions-and-bayes.md §4).
//!
//! - `bayes_ridge`: w ~ N(0, τ²I), y = Xw + ε with ε ~ N(0, σ²I) and σ drawn from levels S with
//!   prior π. Each level's posterior mean is ridge with λ = σ²/τ²; the mixture weighs them by
//!   p(σ | D) ∝ π_σ·N(y; 0, σ²I + τ²XXᵀ) (derived). One level is ridge(λ = σ²/τ²) exactly. Bai et
//!   al. 2023's noise-mixture Bayes predictor.
//! - `dmmse`: w uniform over a finite pool {w₁…w_M}, p(w_k | D) ∝ exp(−Σᵢ‖yᵢ − W_k xᵢ‖²/(2σ²)),
//!   ŷ = Σ_k p_k W_k x_q (Raventós et al. 2023's discrete MMSE). The pool is rebuilt from
//!   (pool_size, pool_seed, w_scale) exactly as a pooled task draws it (`icl_tasks::pool`), so a
//!   run's dMMSE is a function of its config; at σ = 0 the posterior is uniform over the members
//!   that fit the context best.
//!
//! Both predict linearly in x_q (the posterior weights depend on the context only), so both give
//! per-prompt weights W = Σ p·W.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ndarray::{Array1, Array2, Array3};
use ndarray_linalg::{Eigh, UPLO};
use serde::Deserialize;

use icl_tasks::{LearnerSpec, Params, Prompts};

use super::per_prompt_weights;
use crate::learner::{linear_prediction, parse_spec, Learner, LearnerFamily, Prediction};
use crate::ProbeError;

/// `noise_std = σ` or `noise_std = [σ₁, σ₂, …]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(f64),
    Many(Vec<f64>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BayesRidgeSpec {
    w_scale: f64,
    noise_std: OneOrMany,
    noise_weights: Option<Vec<f64>>,
}

/// The posterior mean under a Gaussian prior on w and a mixture of noise levels.
#[derive(Clone, Debug)]
pub struct BayesRidge {
    /// τ: w ~ N(0, τ²I).
    pub w_scale: f64,
    /// The levels σ (each > 0).
    pub levels: Vec<f64>,
    /// Their prior probabilities (normalised).
    pub prior: Vec<f64>,
    params: Params,
}

pub struct BayesRidgeFamily;

fn invalid(name: &str, message: String) -> ProbeError {
    ProbeError::InvalidSpec(format!("learner `{name}`: {message}"))
}

fn positive(name: &str, key: &str, v: f64) -> Result<f64, ProbeError> {
    if v.is_finite() && v > 0.0 && v <= 1e6 {
        Ok(v)
    } else {
        Err(invalid(name, format!("{key} must be a number > 0 and at most 1e6 (got {v})")))
    }
}

impl BayesRidge {
    /// The learner for levels σ with prior weights (normalised here; uniform when `None`).
    pub fn new(w_scale: f64, levels: Vec<f64>, weights: Option<Vec<f64>>) -> Result<Self, ProbeError> {
        const NAME: &str = "bayes_ridge";
        positive(NAME, "w_scale", w_scale)?;
        if levels.is_empty() || levels.len() > 64 {
            return Err(invalid(NAME, format!("noise_std must hold 1 to 64 levels (got {})", levels.len())));
        }
        for &s in &levels {
            positive(NAME, "noise_std", s)?;
        }
        let raw = match &weights {
            Some(w) if w.len() != levels.len() => {
                return Err(invalid(
                    NAME,
                    format!("noise_weights must hold {} numbers (got {})", levels.len(), w.len()),
                ))
            }
            Some(w) => w.iter().map(|&v| positive(NAME, "noise_weights", v)).collect::<Result<Vec<_>, _>>()?,
            None => vec![1.0; levels.len()],
        };
        let total: f64 = raw.iter().sum();
        let mut params = Params::new();
        params.insert("w_scale".into(), w_scale.into());
        params.insert("noise_std".into(), if levels.len() == 1 { levels[0].into() } else { levels.clone().into() });
        if let Some(w) = weights {
            params.insert("noise_weights".into(), w.into());
        }
        Ok(Self { w_scale, levels, prior: raw.iter().map(|w| w / total).collect(), params })
    }

    /// For one prompt's context X (n, d), Y (n, o): the weights W (o, d) and the posterior
    /// probability of each level.
    pub fn solve(&self, x: &Array2<f64>, y: &Array2<f64>) -> Result<(Array2<f64>, Vec<f64>), ProbeError> {
        let tau2 = self.w_scale * self.w_scale;
        let sp = Spectrum::new(x, y)?;
        let log_post: Vec<f64> = self
            .levels
            .iter()
            .zip(&self.prior)
            .map(|(&sigma, &pi)| pi.ln() + sp.log_evidence(sigma * sigma, tau2))
            .collect();
        let post = softmax(&log_post);
        let (o, d) = (y.ncols(), x.ncols());
        let mut w = Array2::<f64>::zeros((o, d));
        for (&sigma, &p) in self.levels.iter().zip(&post) {
            if p > 0.0 {
                w = w + sp.ridge(sigma * sigma / tau2) * p;
            }
        }
        Ok((w, post))
    }
}

/// One prompt's context in the eigenbasis of XᵀX = V diag(s) Vᵀ, with c = VᵀXᵀY (d, o): what
/// ridge at any λ and the Gaussian evidence at any σ cost O(d·o) from.
struct Spectrum {
    n: usize,
    s: Array1<f64>,
    v: Array2<f64>,
    c: Array2<f64>,
    /// ‖y_r‖² per output.
    yy: Vec<f64>,
}

impl Spectrum {
    fn new(x: &Array2<f64>, y: &Array2<f64>) -> Result<Self, ProbeError> {
        let (s, v) = x.t().dot(x).eigh(UPLO::Lower)?;
        let c = v.t().dot(&x.t().dot(y));
        let yy = (0..y.ncols()).map(|r| y.column(r).dot(&y.column(r))).collect();
        Ok(Self { n: x.nrows(), s: s.mapv(|e| e.max(0.0)), v, c, yy })
    }

    /// Σ_r log N(y_r; 0, σ²I + τ²XXᵀ), with (Woodbury, the matrix determinant lemma)
    ///   yᵀ(σ²I + τ²XXᵀ)⁻¹y = (‖y‖² − Σᵢ τ²cᵢ²/(σ² + τ²sᵢ))/σ²,
    ///   log det(σ²I + τ²XXᵀ) = n log σ² + Σᵢ log(1 + τ²sᵢ/σ²).
    fn log_evidence(&self, s2: f64, tau2: f64) -> f64 {
        let n = self.n as f64;
        let log_det = n * s2.ln() + self.s.iter().map(|&si| (tau2 * si / s2).ln_1p()).sum::<f64>();
        let ln_2pi = (2.0 * std::f64::consts::PI).ln();
        (0..self.c.ncols())
            .map(|r| {
                let fit: f64 = (0..self.s.len()).map(|i| tau2 * self.c[[i, r]].powi(2) / (s2 + tau2 * self.s[i])).sum();
                let quad = ((self.yy[r] - fit) / s2).max(0.0);
                -0.5 * (n * ln_2pi + log_det + quad)
            })
            .sum()
    }

    /// Ridge's weights (o, d) at λ: V diag(1/(s + λ)) c.
    fn ridge(&self, lambda: f64) -> Array2<f64> {
        let (d, o) = self.c.dim();
        let scaled = Array2::from_shape_fn((d, o), |(i, r)| self.c[[i, r]] / (self.s[i] + lambda));
        self.v.dot(&scaled).reversed_axes() // (d, o) → (o, d)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaRidgeSpec {
    w_scale: f64,
}

/// Ridge whose noise level is estimated in context (an adaptive ridge after Vladymyrov et al.
/// 2024's AdaRR, whose exact estimator we have not seen): σ̂² maximises the prompt's Gaussian
/// evidence N(y; 0, σ²I + τ²XXᵀ) (empirical Bayes), then λ = σ̂²/τ². It needs no set of levels,
/// so it is the rival for noise that varies over a range.
#[derive(Clone, Debug)]
pub struct AdaRidge {
    pub w_scale: f64,
}

pub struct AdaRidgeFamily;

impl LearnerFamily for AdaRidgeFamily {
    fn name(&self) -> &'static str {
        "ada_ridge"
    }
    fn about(&self) -> &'static str {
        "ridge with σ² estimated per prompt by maximum evidence, λ = σ̂²/τ² (an adaptive ridge after Vladymyrov et al.)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let s: AdaRidgeSpec = parse_spec(spec)?;
        Ok(Box::new(AdaRidge { w_scale: positive("ada_ridge", "w_scale", s.w_scale)? }))
    }
}

impl AdaRidge {
    /// For one prompt: W (o, d) and the estimated σ̂².
    pub fn solve(&self, x: &Array2<f64>, y: &Array2<f64>) -> Result<(Array2<f64>, f64), ProbeError> {
        let tau2 = self.w_scale * self.w_scale;
        let sp = Spectrum::new(x, y)?;
        // Searched over 6 decades either side of the labels' mean square (σ² cannot exceed it by
        // much and is found well above rounding below it).
        let scale = (sp.yy.iter().sum::<f64>() / (sp.n.max(1) * y.ncols()) as f64).max(1e-12);
        let (s2, _) = crate::tune::minimize_log(|s2| -sp.log_evidence(s2, tau2), scale, 6.0);
        Ok((sp.ridge(s2 / tau2), s2))
    }
}

impl Learner for AdaRidge {
    fn name(&self) -> &str {
        "ada_ridge"
    }
    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert("w_scale".into(), self.w_scale.into());
        p
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        if p.context_len() == 0 {
            return Some(Ok(Array3::zeros((p.batch(), p.y_dim(), p.x_dim()))));
        }
        Some(per_prompt_weights(p, |x, y| self.solve(&x, &y).map(|(w, _)| w)))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

/// exp(a − max) normalised.
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

impl LearnerFamily for BayesRidgeFamily {
    fn name(&self) -> &'static str {
        "bayes_ridge"
    }
    fn about(&self) -> &'static str {
        "posterior mean for w ~ N(0, τ²I) and noise σ from a set of levels (one level: ridge λ = σ²/τ²; Bai et al.)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let s: BayesRidgeSpec = parse_spec(spec)?;
        let levels = match s.noise_std {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        };
        Ok(Box::new(BayesRidge::new(s.w_scale, levels, s.noise_weights)?))
    }
}

impl Learner for BayesRidge {
    fn name(&self) -> &str {
        "bayes_ridge"
    }
    fn params(&self) -> Params {
        self.params.clone()
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        Some(per_prompt_weights(p, |x, y| self.solve(&x, &y).map(|(w, _)| w)))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DmmseSpec {
    pool_size: usize,
    pool_seed: u64,
    noise_std: f64,
    /// Required (no default), so that one learner has one spelling: a candidate's identity is
    /// its full spec.
    w_scale: f64,
}

/// A pool's weight matrices as rows (M·o, d).
type PoolRows = Arc<Array2<f64>>;

/// The posterior mean over a finite pool of hidden functions.
pub struct Dmmse {
    pub pool_size: usize,
    pub pool_seed: u64,
    /// σ of the Gaussian label noise (0: the best-fitting members, uniformly).
    pub noise_std: f64,
    pub w_scale: f64,
    /// The pool for each (o, d) it has been asked at, (M·o, d): drawn once.
    pools: Mutex<HashMap<(usize, usize), PoolRows>>,
}

pub struct DmmseFamily;

impl LearnerFamily for DmmseFamily {
    fn name(&self) -> &'static str {
        "dmmse"
    }
    fn about(&self) -> &'static str {
        "posterior mean over a finite pool of tasks, rebuilt from (pool_size, pool_seed) (Raventós et al. 2023's dMMSE)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        const NAME: &str = "dmmse";
        let s: DmmseSpec = parse_spec(spec)?;
        if !(1..=icl_tasks::pool::MAX_POOL).contains(&s.pool_size) {
            return Err(invalid(
                NAME,
                format!("pool_size must be in 1..={} (got {})", icl_tasks::pool::MAX_POOL, s.pool_size),
            ));
        }
        if !(s.noise_std.is_finite() && (0.0..=1e6).contains(&s.noise_std)) {
            return Err(invalid(NAME, format!("noise_std must be a number in [0, 1e6] (got {})", s.noise_std)));
        }
        positive(NAME, "w_scale", s.w_scale)?;
        Ok(Box::new(Dmmse::new(s.pool_size, s.pool_seed, s.noise_std, s.w_scale)))
    }
}

impl Dmmse {
    pub fn new(pool_size: usize, pool_seed: u64, noise_std: f64, w_scale: f64) -> Self {
        Self { pool_size, pool_seed, noise_std, w_scale, pools: Mutex::new(HashMap::new()) }
    }

    /// The pool for outputs o and inputs d, as rows (M·o, d): row k·o + r is W_k's row r.
    pub fn pool(&self, o: usize, d: usize) -> Arc<Array2<f64>> {
        let mut pools = self.pools.lock().expect("dmmse pool lock");
        pools
            .entry((o, d))
            .or_insert_with(|| {
                let pool = icl_tasks::pool::gaussian_pool(self.pool_size, (o, d), self.w_scale, self.pool_seed);
                // (M, o, d) → (M·o, d)
                Arc::new(pool.into_shape_with_order((self.pool_size * o, d)).expect("contiguous"))
            })
            .clone()
    }

    /// For one prompt: W (o, d) = Σ_k p(k | D) W_k and the posterior p (M).
    pub fn solve(&self, pool: &Array2<f64>, x: &Array2<f64>, y: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let (d, o, m) = (x.ncols(), y.ncols(), self.pool_size);
        // Σᵢ‖yᵢ − W_k xᵢ‖² = Σ_r (‖y_r‖² − 2 w_krᵀ Xᵀy_r + w_krᵀ XᵀX w_kr), for all k at once.
        let a = x.t().dot(x); // (d, d)
        let b = x.t().dot(y); // (d, o)
        let pa = pool.dot(&a); // (M·o, d)
        let yy: f64 = y.iter().map(|v| v * v).sum();
        let sse = Array1::from_shape_fn(m, |k| {
            (0..o)
                .map(|r| {
                    let (w, wa) = (pool.row(k * o + r), pa.row(k * o + r));
                    wa.dot(&w) - 2.0 * w.dot(&b.column(r))
                })
                .sum::<f64>()
                + yy
        });
        let post = if self.noise_std > 0.0 {
            let two_s2 = 2.0 * self.noise_std * self.noise_std;
            Array1::from(softmax(&sse.iter().map(|e| -e / two_s2).collect::<Vec<_>>()))
        } else {
            // σ → 0: uniform over the members that fit best (to rounding).
            let best = sse.iter().cloned().fold(f64::INFINITY, f64::min);
            let tol = 1e-9 * (1.0 + best.abs() + yy);
            let hits = sse.mapv(|e| if e <= best + tol { 1.0 } else { 0.0 });
            let count = hits.sum();
            hits / count
        };
        // W (o, d) = Σ_k p_k W_k: (1, M)·(M, o·d)
        let flat = pool.view().into_shape_with_order((m, o * d)).expect("contiguous");
        let w = post.dot(&flat).into_shape_with_order((o, d)).expect("o·d values");
        (w, post)
    }
}

impl Learner for Dmmse {
    fn name(&self) -> &str {
        "dmmse"
    }
    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert("pool_size".into(), self.pool_size.into());
        p.insert("pool_seed".into(), self.pool_seed.into());
        p.insert("noise_std".into(), self.noise_std.into());
        p.insert("w_scale".into(), self.w_scale.into());
        p
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        let pool = self.pool(p.y_dim(), p.x_dim());
        Some(per_prompt_weights(p, |x, y| Ok(self.solve(&pool, &x, &y).0)))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learners::Ridge;
    use icl_tasks::{TaskConfig, TaskRng};
    use ndarray::Axis;
    use ndarray_linalg::{Determinant, Inverse};
    use rand::SeedableRng;

    fn noisy(d: usize, n: usize, sigma: f64, batch: usize, seed: u64) -> Prompts {
        let task = TaskConfig::new("gaussian_linear").with("x_dim", d).with("noise_std", sigma).build().unwrap();
        task.sample_n(&mut TaskRng::seed_from_u64(seed), batch, n)
    }

    fn max_gap(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).iter().fold(0.0f64, |m, e| m.max(e.abs()))
    }

    #[test]
    fn bayes_ridge_with_one_level_is_ridge_at_sigma2_over_tau2() {
        for (sigma, tau, n) in [(0.5, 1.0, 6), (0.1, 0.3, 3), (1.0, 2.0, 12)] {
            let p = noisy(4, n, sigma, 50, 7);
            let bayes = BayesRidge::new(tau, vec![sigma], None).unwrap().predict(&p).unwrap().preds;
            let ridge = Ridge { lambda: sigma * sigma / (tau * tau) }.predict(&p).unwrap().preds;
            let gap = max_gap(&bayes, &ridge);
            assert!(gap < 1e-9, "σ = {sigma}, τ = {tau}: {gap}");
        }
    }

    #[test]
    fn bayes_ridge_level_posterior_matches_the_evidence_computed_directly() {
        // p(σ | D) ∝ π_σ N(y; 0, σ²I + τ²XXᵀ), with the n × n covariance inverted and its
        // determinant taken directly.
        let (tau, levels, weights) = (0.6, vec![0.2, 1.5], vec![1.0, 3.0]);
        let learner = BayesRidge::new(tau, levels.clone(), Some(weights.clone())).unwrap();
        let p = noisy(3, 5, 0.8, 4, 11);
        for b in 0..4 {
            let x = p.xs.index_axis(Axis(0), b).to_owned();
            let y = p.ys.index_axis(Axis(0), b).to_owned();
            let (w, post) = learner.solve(&x, &y).unwrap();
            let yv = y.column(0).to_owned();
            let logs: Vec<f64> = levels
                .iter()
                .zip(&weights)
                .map(|(&s, &pi)| {
                    let cov: Array2<f64> = Array2::eye(5) * (s * s) + x.dot(&x.t()) * (tau * tau);
                    let quad = yv.dot(&cov.inv().unwrap().dot(&yv));
                    (pi / 4.0f64).ln()
                        - 0.5 * (cov.det().unwrap().ln() + quad + 5.0 * (2.0 * std::f64::consts::PI).ln())
                })
                .collect();
            let want = softmax(&logs);
            assert!((post[0] - want[0]).abs() < 1e-10, "{post:?} vs {want:?}");
            // and the weights are the posterior mixture of the two ridge solutions
            let ridge = |s: f64| -> Array2<f64> {
                let reg = x.t().dot(&x) + Array2::<f64>::eye(3) * (s * s / (tau * tau));
                reg.inv().unwrap().dot(&x.t().dot(&y)).reversed_axes()
            };
            let mix = ridge(levels[0]) * want[0] + ridge(levels[1]) * want[1];
            assert!(max_gap(&w, &mix) < 1e-10);
        }
    }

    #[test]
    fn bayes_ridge_beats_every_single_lambda_on_a_noise_mixture() {
        // The Bayes predictor of the mixture is at least as good as ridge at either level's λ.
        let task = TaskConfig::new("gaussian_linear")
            .with("x_dim", 5)
            .with("w_scale", 0.5)
            .with("noise_levels", vec![0.1, 1.0])
            .build()
            .unwrap();
        let p = task.sample_n(&mut TaskRng::seed_from_u64(2), 20_000, 8);
        let err = |preds: Array2<f64>| p.squared_errors(&preds).iter().sum::<f64>() / p.batch() as f64;
        let bayes = err(BayesRidge::new(0.5, vec![0.1, 1.0], None).unwrap().predict(&p).unwrap().preds);
        for sigma in [0.1, 1.0] {
            let ridge = err(Ridge { lambda: sigma * sigma / 0.25 }.predict(&p).unwrap().preds);
            assert!(bayes < ridge, "bayes {bayes} vs ridge(σ = {sigma}) {ridge}");
        }
    }

    #[test]
    fn ada_ridge_estimates_the_noise_and_nears_the_mixture_posterior() {
        // With many examples per prompt, the evidence pins σ: the per-prompt estimate is near the
        // level that drew the prompt, and the error on a two-level mixture is within 5% of the
        // posterior that knows the levels.
        let task = TaskConfig::new("gaussian_linear")
            .with("x_dim", 4)
            .with("w_scale", 0.5)
            .with("noise_levels", vec![0.1, 1.0])
            .build()
            .unwrap();
        let p = task.sample_n(&mut TaskRng::seed_from_u64(8), 4000, 40);
        let ada = AdaRidge { w_scale: 0.5 };
        let clean = noisy(4, 200, 0.3, 20, 2);
        for b in 0..20 {
            let (x, y) = (clean.xs.index_axis(Axis(0), b).to_owned(), clean.ys.index_axis(Axis(0), b).to_owned());
            let (_, s2) = ada.solve(&x, &y).unwrap();
            assert!((s2.sqrt() - 0.3).abs() < 0.06, "σ̂ = {}", s2.sqrt());
        }
        let err = |preds: Array2<f64>| p.squared_errors(&preds).iter().sum::<f64>() / p.batch() as f64;
        let mixture = err(BayesRidge::new(0.5, vec![0.1, 1.0], None).unwrap().predict(&p).unwrap().preds);
        let adaptive = err(ada.predict(&p).unwrap().preds);
        assert!(adaptive < 1.05 * mixture, "ada_ridge {adaptive} vs the mixture posterior {mixture}");
        // and it beats ridge at a λ between the two levels' Bayes λ's (0.04 and 4)
        let single = err(Ridge { lambda: 4.0 * 0.3025 }.predict(&p).unwrap().preds);
        assert!(adaptive < single, "ada_ridge {adaptive} vs one λ {single}");
    }

    #[test]
    fn dmmse_on_a_pool_of_one_is_that_task() {
        let p = noisy(3, 4, 0.5, 10, 1);
        let learner = Dmmse::new(1, 9, 0.5, 1.0);
        let w1 = icl_tasks::pool::gaussian_pool(1, (1, 3), 1.0, 9);
        let preds = learner.predict(&p).unwrap().preds;
        for b in 0..10 {
            let want: f64 = (0..3).map(|j| w1[[0, 0, j]] * p.xq[[b, j]]).sum();
            assert!((preds[[b, 0]] - want).abs() < 1e-12);
        }
    }

    #[test]
    fn dmmse_rebuilds_a_pooled_runs_pool_and_identifies_its_task() {
        // Noise-free prompts from a pooled task: with σ = 0 the posterior sits on the prompt's own
        // member, so dMMSE predicts every query exactly (it could not unless its pool is the task's).
        let task = TaskConfig::new("gaussian_linear").with("x_dim", 4).build().unwrap().pooled(32, 5).unwrap();
        let spec = task.learners().into_iter().find(|l| l.name == "dmmse").expect("a pooled task lists dmmse");
        assert_eq!(spec.label(), "dmmse(noise_std=0.0, pool_seed=5, pool_size=32, w_scale=1.0)");
        let p = task.sample_n(&mut TaskRng::seed_from_u64(3), 40, 6);
        let dmmse = DmmseFamily.fit(&spec, None).unwrap();
        assert!(max_gap(&dmmse.predict(&p).unwrap().preds, &p.yq) < 1e-9);
        // A different pool seed does not.
        let other = Dmmse::new(32, 6, 0.0, 1.0).predict(&p).unwrap().preds;
        assert!(max_gap(&other, &p.yq) > 0.1);
    }

    #[test]
    fn dmmse_approaches_bayes_ridge_as_the_pool_grows() {
        // M → ∞: the pool is the Gaussian prior, and the posterior mean is ridge(λ = σ²/τ²).
        let p = noisy(2, 4, 0.5, 300, 4);
        let bayes = Ridge { lambda: 0.25 }.predict(&p).unwrap().preds;
        let gap = |m: usize| {
            let preds = Dmmse::new(m, 1, 0.5, 1.0).predict(&p).unwrap().preds;
            (&preds - &bayes).iter().map(|e| e * e).sum::<f64>() / 300.0
        };
        let (small, large) = (gap(4), gap(1 << 14));
        assert!(large < 2e-3 && large < small / 50.0, "M = 4: {small}, M = 2¹⁴: {large}");
    }
}
