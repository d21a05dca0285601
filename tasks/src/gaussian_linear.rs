//! Linear regression with Gaussian inputs of a chosen covariance (Garg et al. 2022's
//! `LinearRegression` with `GaussianSampler`; Ahn et al. 2023 and Zhang, Frei & Bartlett 2023's
//! non-isotropic setting): x ~ N(0, Σ)·input_scale with Σ = I, diag(λ), or U diag(λ) Uᵀ for a
//! seeded random rotation U; w ~ N(0, I)·w_scale; y = wᵀx, plus N(0, σ²) noise on the context
//! labels only (the query target stays noise-free).

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::params::{parse, to_params};
use crate::pool::Pool;
use crate::registry::TaskEntry;
use crate::{
    check_count, check_real, check_sample_size, dot, prompts_from, Dims, LearnerSpec, Params, Prompts, Shift,
    ShiftKind, ShiftSweep, Task, TaskError, TaskRng,
};

pub const ENTRY: TaskEntry = TaskEntry {
    name: "gaussian_linear",
    about: "linear regression with x ~ N(0, Σ): identity, a diagonal spectrum or a rotated one (Garg; Ahn)",
    build: GaussianLinear::build,
};

/// The input covariance Σ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Covariance {
    /// Σ = I.
    #[default]
    Identity,
    /// Σ = diag(spectrum).
    Diagonal,
    /// Σ = U diag(spectrum) Uᵀ with U a random rotation drawn from `rotation_seed`.
    Rotated,
}

/// `[task] name = "gaussian_linear"`: Garg et al.'s linear regression by default (d = 20, 40 pairs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GaussianLinearParams {
    pub x_dim: usize,
    pub y_dim: usize,
    pub context_len: usize,
    pub covariance: Covariance,
    /// Eigenvalues of Σ (d positive numbers) for `diagonal` and `rotated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spectrum: Option<Vec<f64>>,
    /// Seed of the rotation U for `rotated`.
    pub rotation_seed: u64,
    /// Inputs are multiplied by this (1 in training; the input-scale shift changes it).
    pub input_scale: f64,
    /// w ~ N(0, I)·w_scale.
    pub w_scale: f64,
    /// Standard deviation σ of the label noise on context labels.
    pub noise_std: f64,
    /// Noise that varies per prompt: each prompt draws its σ from these levels (with
    /// `noise_weights`), in place of `noise_std` (Bai et al. 2023's mixture of noise levels;
    /// Vladymyrov et al. 2024's varying noise). The `label_noise` shift sets one level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_levels: Option<Vec<f64>>,
    /// The prior of each of `noise_levels` (positive, normalised here; uniform when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_weights: Option<Vec<f64>>,
    /// Every prompt's teacher is the all-ones w (times w_scale): Akyürek et al. 2023's control
    /// task (§5), on which a model can score well without learning in context.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fixed_w: bool,
    /// All context inputs of a prompt lie in one random orthant (the query does not): the
    /// `context_orthant` shift (Garg et al. §4).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub context_orthant: bool,
    /// The query input is a uniformly chosen context input: the `query_from_context` shift
    /// (Garg et al. §4). A prompt without context pairs keeps its freshly drawn query.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub query_from_context: bool,
}

impl Default for GaussianLinearParams {
    fn default() -> Self {
        Self {
            x_dim: 20,
            y_dim: 1,
            context_len: 40,
            covariance: Covariance::Identity,
            spectrum: None,
            rotation_seed: 0,
            input_scale: 1.0,
            w_scale: 1.0,
            noise_std: 0.0,
            noise_levels: None,
            noise_weights: None,
            fixed_w: false,
            context_orthant: false,
            query_from_context: false,
        }
    }
}

impl GaussianLinearParams {
    fn check(&self) -> Result<(), TaskError> {
        check_count("x_dim", self.x_dim, 1..=4096)?;
        check_count("y_dim", self.y_dim, 1..=4096)?;
        check_count("context_len", self.context_len, 1..=crate::MAX_CONTEXT)?;
        check_real("input_scale", self.input_scale, 0.0, true)?;
        check_real("w_scale", self.w_scale, 0.0, false)?;
        check_real("noise_std", self.noise_std, 0.0, false)?;
        self.check_noise_levels()?;
        match (self.covariance, &self.spectrum) {
            (Covariance::Identity, Some(_)) => Err(TaskError::invalid(
                "spectrum",
                "is only used with covariance = \"diagonal\" or \"rotated\"",
                "a list",
            )),
            (Covariance::Identity, None) => Ok(()),
            (_, None) => Err(TaskError::invalid("spectrum", "is required with this covariance", "none")),
            (_, Some(s)) if s.len() != self.x_dim => {
                Err(TaskError::invalid("spectrum", "must hold x_dim numbers", format!("{} numbers", s.len())))
            }
            (_, Some(s)) => match s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                Some(v) => Err(TaskError::invalid("spectrum", "must hold finite numbers > 0", v)),
                None => Ok(()),
            },
        }
    }

    fn check_noise_levels(&self) -> Result<(), TaskError> {
        let Some(levels) = &self.noise_levels else {
            return match &self.noise_weights {
                Some(_) => Err(TaskError::invalid("noise_weights", "needs noise_levels", "a list")),
                None => Ok(()),
            };
        };
        if levels.is_empty() || levels.len() > 64 {
            return Err(TaskError::invalid(
                "noise_levels",
                "must hold 1 to 64 numbers",
                format!("{} numbers", levels.len()),
            ));
        }
        if self.noise_std != 0.0 {
            return Err(TaskError::invalid(
                "noise_std",
                "must be 0 (unset) when noise_levels is given",
                self.noise_std,
            ));
        }
        for &v in levels {
            check_real("noise_levels", v, 0.0, false)?;
        }
        if let Some(w) = &self.noise_weights {
            if w.len() != levels.len() {
                let got = format!("{} numbers for {} levels", w.len(), levels.len());
                return Err(TaskError::invalid("noise_weights", "must hold one number per noise level", got));
            }
            for &v in w {
                check_real("noise_weights", v, 0.0, true)?;
            }
        }
        Ok(())
    }

    /// The noise levels a prompt's σ is drawn from, and their probabilities (one level,
    /// `noise_std`, with probability 1 when the noise does not vary).
    pub fn noise_prior(&self) -> (Vec<f64>, Vec<f64>) {
        match &self.noise_levels {
            None => (vec![self.noise_std], vec![1.0]),
            Some(levels) => {
                let raw = self.noise_weights.clone().unwrap_or_else(|| vec![1.0; levels.len()]);
                let total: f64 = raw.iter().sum();
                (levels.clone(), raw.iter().map(|w| w / total).collect())
            }
        }
    }

    /// The eigenvalues of Σ.
    pub fn eigenvalues(&self) -> Vec<f64> {
        self.spectrum.clone().unwrap_or_else(|| vec![1.0; self.x_dim])
    }
}

/// A prompt-structure shift's value: 0 (off, the training distribution) or 1 (on).
fn on_off(field: &str, value: f64) -> Result<bool, TaskError> {
    match value {
        0.0 => Ok(false),
        1.0 => Ok(true),
        v => Err(TaskError::invalid(field, "is a switch: 0 (off) or 1 (on)", v)),
    }
}

/// Gaussian linear regression; `factor` is L with Σ = L Lᵀ (None for Σ = I), `scales` its
/// diagonal when Σ is diagonal (so sampling skips the matrix product).
#[derive(Clone, Debug)]
pub struct GaussianLinear {
    pub params: GaussianLinearParams,
    factor: Option<Array2<f64>>,
    scales: Option<Vec<f64>>,
    /// Training on finitely many tasks ([`Task::pooled`]): each prompt's w is one of the pool's.
    pool: Option<Pool>,
}

impl GaussianLinear {
    pub fn new(params: GaussianLinearParams) -> Result<Self, TaskError> {
        params.check()?;
        let factor = match params.covariance {
            Covariance::Identity => None,
            kind => {
                let sqrt = Array2::from_diag(&ndarray::Array1::from(params.eigenvalues()).mapv(f64::sqrt));
                Some(if kind == Covariance::Rotated {
                    random_rotation(params.x_dim, params.rotation_seed).dot(&sqrt)
                } else {
                    sqrt
                })
            }
        };
        let scales = (params.covariance == Covariance::Diagonal)
            .then(|| params.eigenvalues().iter().map(|l| l.sqrt()).collect());
        Ok(Self { params, factor, scales, pool: None })
    }

    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self::new(parse(ENTRY.name, params)?)?))
    }

    /// The input covariance Σ (without input_scale), d × d.
    pub fn covariance(&self) -> Array2<f64> {
        match &self.factor {
            Some(l) => l.dot(&l.t()),
            None => Array2::eye(self.params.x_dim),
        }
    }
}

/// A Haar-random rotation: Gram–Schmidt on the columns of a Gaussian matrix (seeded).
pub fn random_rotation(d: usize, seed: u64) -> Array2<f64> {
    let mut rng = TaskRng::seed_from_u64(seed);
    let mut q = Array2::<f64>::zeros((d, d));
    for j in 0..d {
        let mut v: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        for k in 0..j {
            let col = q.column(k);
            let proj: f64 = v.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(col.iter()).for_each(|(a, b)| *a -= proj * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        q.column_mut(j).iter_mut().zip(&v).for_each(|(e, a)| *e = a / norm);
    }
    q
}

impl Task for GaussianLinear {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn params(&self) -> Params {
        to_params(&self.params)
    }

    fn dims(&self) -> Dims {
        let p = &self.params;
        Dims { x_dim: p.x_dim, y_dim: p.y_dim, context_len: p.context_len }
    }

    fn zero_error(&self) -> f64 {
        // E[(wᵀx)²] = w_scale²·tr(Σ)·input_scale² per output (w isotropic); the query is noise-free.
        let p = &self.params;
        let trace: f64 = p.eigenvalues().iter().sum();
        p.y_dim as f64 * p.w_scale.powi(2) * p.input_scale.powi(2) * trace
    }

    fn learners(&self) -> Vec<LearnerSpec> {
        let mut out = vec![
            LearnerSpec::new("zero"),
            LearnerSpec::new("least_squares"),
            LearnerSpec::new("ridge"),
            LearnerSpec::new("averaging"),
            LearnerSpec::new("knn").with("k", 3),
            LearnerSpec::new("gd").with("steps", 1),
            LearnerSpec::new("newton").with("steps", 5),
        ];
        // With Σ = I the best preconditioner is a multiple of I (one GD step); fitting its d²
        // entries would only add estimation noise.
        if self.params.covariance != Covariance::Identity {
            out.push(LearnerSpec::new("precond_gd").with("steps", 1));
        }
        // The posterior means (w ~ N(0, w_scale² I) or the pool; Gaussian noise on the labels).
        if !self.params.fixed_w {
            let (levels, _) = self.params.noise_prior();
            let weights = self.params.noise_weights.as_deref();
            out.extend(crate::bayes::learners(self.pool.as_ref(), self.params.w_scale, &levels, weights));
        }
        out
    }

    fn pooled(&self, size: usize, pool_seed: u64) -> Result<Box<dyn Task>, TaskError> {
        let p = &self.params;
        let pool = Pool::of_teachers(size, (p.y_dim, p.x_dim), p.w_scale, p.fixed_w, pool_seed)?;
        Ok(Box::new(Self { pool: Some(pool), ..self.clone() }))
    }

    fn shifts(&self) -> Vec<ShiftSweep> {
        let scales = vec![1.0 / 3.0, 0.5, 1.0, 2.0, 3.0]; // Garg et al. §4
        vec![
            ShiftSweep { kind: ShiftKind::InputScale, training_value: 1.0, values: scales.clone() },
            ShiftSweep { kind: ShiftKind::TeacherScale, training_value: 1.0, values: scales },
            ShiftSweep {
                kind: ShiftKind::LabelNoise,
                training_value: self.params.noise_std,
                values: vec![0.0, 0.1, 0.5, 1.0],
            },
            ShiftSweep { kind: ShiftKind::ConditionNumber, training_value: 1.0, values: vec![1.0, 10.0, 100.0] },
            ShiftSweep { kind: ShiftKind::ContextOrthant, training_value: 0.0, values: vec![0.0, 1.0] },
            ShiftSweep { kind: ShiftKind::QueryFromContext, training_value: 0.0, values: vec![0.0, 1.0] },
        ]
    }

    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        let mut p = self.params.clone();
        match shift.kind {
            ShiftKind::InputScale => p.input_scale *= shift.value,
            ShiftKind::TeacherScale => p.w_scale *= shift.value,
            ShiftKind::LabelNoise => {
                p.noise_std = shift.value;
                p.noise_levels = None;
                p.noise_weights = None;
            }
            ShiftKind::ConditionNumber => {
                check_real("condition number", shift.value, 1.0, false)?;
                // Eigenvalues geometric from 1 to 1/κ, rescaled to the training trace.
                let d = p.x_dim;
                let trace: f64 = p.eigenvalues().iter().sum();
                let raw: Vec<f64> = (0..d).map(|i| shift.value.powf(-(i as f64) / (d.max(2) - 1) as f64)).collect();
                let sum: f64 = raw.iter().sum();
                p.spectrum = Some(raw.iter().map(|v| v * trace / sum).collect());
                if p.covariance == Covariance::Identity {
                    p.covariance = Covariance::Diagonal;
                }
            }
            ShiftKind::ContextOrthant => p.context_orthant = on_off("context_orthant", shift.value)?,
            ShiftKind::QueryFromContext => p.query_from_context = on_off("query_from_context", shift.value)?,
        }
        Ok(Box::new(Self::new(p)?))
    }

    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n: usize) -> Prompts {
        let GaussianLinearParams {
            x_dim: d,
            y_dim: o,
            input_scale,
            w_scale,
            noise_std,
            fixed_w,
            context_orthant,
            query_from_context,
            ..
        } = self.params;
        check_sample_size(batch, n, d + o);
        // Per-prompt noise levels as a cumulative distribution (drawn only when they are set, so
        // that a task without them samples what it always has).
        let varying: Option<(Vec<f64>, Vec<f64>)> = self.params.noise_levels.as_ref().map(|_| {
            let (levels, probs) = self.params.noise_prior();
            let cumulative = probs
                .iter()
                .scan(0.0, |acc, p| {
                    *acc += p;
                    Some(*acc)
                })
                .collect();
            (levels, cumulative)
        });
        let mut signs = vec![1.0; d];
        let mut xs = vec![0.0; batch * n * d];
        let mut ys = vec![0.0; batch * n * o];
        let mut xq = vec![0.0; batch * d];
        let mut yq = vec![0.0; batch * o];
        let mut ws = vec![0.0; batch * o * d];
        let mut z = vec![0.0; d];
        // x = input_scale · L z with z ~ N(0, I).
        let mut draw_x = |rng: &mut TaskRng, out: &mut [f64]| {
            z.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            match (&self.scales, &self.factor) {
                (Some(s), _) => out.iter_mut().zip(&z).zip(s).for_each(|((x, v), s)| *x = input_scale * s * v),
                (None, None) => out.iter_mut().zip(&z).for_each(|(x, v)| *x = input_scale * v),
                (None, Some(l)) => {
                    for (i, x) in out.iter_mut().enumerate() {
                        *x = input_scale * l.row(i).iter().zip(&z).map(|(a, b)| a * b).sum::<f64>();
                    }
                }
            }
        };
        for b in 0..batch {
            let w = &mut ws[b * o * d..(b + 1) * o * d];
            if let Some(pool) = &self.pool {
                pool.pick(rng, w);
            } else if fixed_w {
                w.fill(w_scale);
            } else {
                w.iter_mut().for_each(|v| *v = w_scale * rng.sample::<f64, _>(StandardNormal));
            }
            let noise_std = match &varying {
                None => noise_std,
                Some((levels, cumulative)) => {
                    let u: f64 = rng.random();
                    levels[cumulative.iter().position(|&c| u < c).unwrap_or(levels.len() - 1)]
                }
            };
            if context_orthant {
                signs.iter_mut().for_each(|s| *s = if rng.random::<bool>() { 1.0 } else { -1.0 });
            }
            for i in 0..n {
                let x = &mut xs[(b * n + i) * d..(b * n + i + 1) * d];
                draw_x(rng, x);
                if context_orthant {
                    x.iter_mut().zip(&signs).for_each(|(v, s)| *v = s * v.abs());
                }
            }
            draw_x(rng, &mut xq[b * d..(b + 1) * d]);
            if query_from_context && n > 0 {
                let pick = rng.random_range(0..n);
                let (context, query) = (&xs[(b * n + pick) * d..(b * n + pick + 1) * d], &mut xq[b * d..(b + 1) * d]);
                query.copy_from_slice(context);
            }
            for (k, w_k) in w.chunks_exact(d).enumerate() {
                for i in 0..n {
                    let noise = if noise_std > 0.0 { noise_std * rng.sample::<f64, _>(StandardNormal) } else { 0.0 };
                    ys[(b * n + i) * o + k] = dot(w_k, &xs[(b * n + i) * d..(b * n + i + 1) * d]) + noise;
                }
                yq[b * o + k] = dot(w_k, &xq[b * d..(b + 1) * d]);
            }
        }
        prompts_from((batch, n, d, o), xs, ys, xq, yq, Some(ws))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, TaskConfig};

    fn second_moment(p: &Prompts) -> Array2<f64> {
        let (b, n, d) = p.xs.dim();
        let flat = p.xs.to_shape((b * n, d)).unwrap().to_owned();
        flat.t().dot(&flat) / (b * n) as f64
    }

    #[test]
    fn inputs_have_the_requested_covariance() {
        let cfg = TaskConfig::new("gaussian_linear")
            .with("x_dim", 3)
            .with("covariance", "rotated")
            .with("spectrum", vec![4.0, 1.0, 0.25])
            .with("rotation_seed", 5);
        let task = GaussianLinear::new(parse(ENTRY.name, &cfg.params).unwrap()).unwrap();
        let p = task.sample_n(&mut TaskRng::seed_from_u64(0), 4000, 10);
        let err = (&second_moment(&p) - &task.covariance()).iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(err < 0.08, "empirical covariance off by {err}");
        // U is a rotation and Σ has the given eigenvalues: tr Σ = 5.25, tr Σ² = 16 + 1 + 1/16.
        let s = task.covariance();
        assert!((s.diag().sum() - 5.25).abs() < 1e-12);
        assert!((s.dot(&s).diag().sum() - 17.0625).abs() < 1e-12);
        assert!((task.zero_error() - 5.25).abs() < 1e-12);
        let q = random_rotation(4, 1);
        assert!((&q.t().dot(&q) - &Array2::<f64>::eye(4)).iter().all(|e| e.abs() < 1e-12));
    }

    #[test]
    fn the_control_task_has_one_teacher_for_every_prompt() {
        let cfg = TaskConfig::new("gaussian_linear").with("x_dim", 4).with("fixed_w", true);
        let p = build(&cfg).unwrap().sample_n(&mut TaskRng::seed_from_u64(1), 6, 5);
        assert!(p.w.as_ref().unwrap().iter().all(|&v| v == 1.0));
        for b in 0..6 {
            assert!((p.yq[[b, 0]] - p.xq.row(b).sum()).abs() < 1e-12);
        }
        assert!(!build(&TaskConfig::new("gaussian_linear")).unwrap().params().contains_key("fixed_w"));
    }

    #[test]
    fn noise_only_on_context_labels() {
        let cfg = TaskConfig::new("gaussian_linear").with("x_dim", 4).with("noise_std", 0.5);
        let p = build(&cfg).unwrap().sample_n(&mut TaskRng::seed_from_u64(1), 2000, 5);
        let w = p.w.as_ref().unwrap();
        let mut resid = 0.0;
        for b in 0..p.batch() {
            let wb = w.index_axis(ndarray::Axis(0), b);
            assert!((wb.dot(&p.xq.row(b))[0] - p.yq[[b, 0]]).abs() < 1e-12, "query is noise-free");
            for i in 0..5 {
                let r = p.ys[[b, i, 0]] - wb.dot(&p.xs.slice(ndarray::s![b, i, ..]))[0];
                resid += r * r;
            }
        }
        let var = resid / (2000.0 * 5.0);
        assert!((var - 0.25).abs() < 0.02, "{var}");
    }

    #[test]
    fn prompt_structure_shifts_do_what_they_say() {
        let task = build(&TaskConfig::new("gaussian_linear").with("x_dim", 6)).unwrap();
        let shift = |kind, value| task.shifted(Shift { kind, value });
        let orthant = shift(ShiftKind::ContextOrthant, 1.0).unwrap().sample_n(&mut TaskRng::seed_from_u64(3), 50, 7);
        let mut query_outside = 0;
        for b in 0..50 {
            let sign = |x: f64| x.signum();
            let first: Vec<f64> = orthant.xs.slice(ndarray::s![b, 0, ..]).iter().map(|&x| sign(x)).collect();
            for i in 1..7 {
                let signs: Vec<f64> = orthant.xs.slice(ndarray::s![b, i, ..]).iter().map(|&x| sign(x)).collect();
                assert_eq!(signs, first, "prompt {b}: context input {i} left the orthant");
            }
            let q: Vec<f64> = orthant.xq.row(b).iter().map(|&x| sign(x)).collect();
            query_outside += usize::from(q != first);
        }
        assert!(query_outside > 40, "the query should rarely share the orthant (1 in 64): {query_outside} of 50");
        let overlap = shift(ShiftKind::QueryFromContext, 1.0).unwrap().sample_n(&mut TaskRng::seed_from_u64(3), 50, 4);
        let w = overlap.w.as_ref().unwrap();
        for b in 0..50 {
            let hit = (0..4).find(|&i| overlap.xs.slice(ndarray::s![b, i, ..]) == overlap.xq.row(b));
            let i = hit.unwrap_or_else(|| panic!("prompt {b}: the query is none of the context inputs"));
            assert!((overlap.yq[[b, 0]] - overlap.ys[[b, i, 0]]).abs() < 1e-12);
            assert!((w.index_axis(ndarray::Axis(0), b).dot(&overlap.xq.row(b))[0] - overlap.yq[[b, 0]]).abs() < 1e-12);
        }
        // Without context pairs the query is drawn as usual.
        assert_eq!(
            shift(ShiftKind::QueryFromContext, 1.0).unwrap().sample_n(&mut TaskRng::seed_from_u64(3), 2, 0).xq.dim(),
            (2, 6)
        );
        // Off is the training task, and the switch takes 0 or 1 only.
        assert_eq!(shift(ShiftKind::ContextOrthant, 0.0).unwrap().params(), task.params());
        let e = shift(ShiftKind::QueryFromContext, 0.5).err().unwrap().to_string();
        assert!(e.starts_with("task.query_from_context: is a switch"), "{e}");
    }

    #[test]
    fn condition_number_shift_keeps_the_trace() {
        let task = build(&TaskConfig::new("gaussian_linear").with("x_dim", 5)).unwrap();
        let shifted = task.shifted(Shift { kind: ShiftKind::ConditionNumber, value: 100.0 }).unwrap();
        let s: Vec<f64> = serde_json::from_value(shifted.params()["spectrum"].clone()).unwrap();
        assert!((s.iter().sum::<f64>() - 5.0).abs() < 1e-12);
        assert!((s[0] / s[4] - 100.0).abs() < 1e-9);
    }

    #[test]
    fn bad_spectra_are_named() {
        let e = |c: TaskConfig| build(&c).err().unwrap().to_string();
        let base = TaskConfig::new("gaussian_linear").with("x_dim", 2);
        assert!(e(base.clone().with("covariance", "diagonal")).starts_with("task.spectrum: is required"));
        assert!(e(base.clone().with("covariance", "diagonal").with("spectrum", vec![1.0])).contains("x_dim numbers"));
        assert!(e(base.clone().with("covariance", "diagonal").with("spectrum", vec![1.0, -1.0])).contains("> 0"));
        assert!(e(base.clone().with("covariance", "sideways")).starts_with("task.covariance:"));
    }

    #[test]
    fn noise_levels_vary_per_prompt_with_their_weights() {
        // Levels 0 and 1 with weights 1 : 3: a quarter of the prompts are noise-free.
        let cfg = TaskConfig::new("gaussian_linear")
            .with("x_dim", 2)
            .with("noise_levels", vec![0.0, 1.0])
            .with("noise_weights", vec![1.0, 3.0]);
        let task = build(&cfg).unwrap();
        let p = task.sample_n(&mut TaskRng::seed_from_u64(1), 4000, 5);
        let w = p.w.as_ref().unwrap();
        let residual = |b: usize| -> f64 {
            (0..5)
                .map(|i| (p.ys[[b, i, 0]] - (0..2).map(|j| w[[b, 0, j]] * p.xs[[b, i, j]]).sum::<f64>()).powi(2))
                .sum()
        };
        let clean = (0..4000).filter(|&b| residual(b) < 1e-20).count() as f64 / 4000.0;
        assert!((clean - 0.25).abs() < 0.03, "{clean}");
        let noisy: Vec<f64> = (0..4000).map(residual).filter(|&r| r > 1e-20).collect();
        let var = noisy.iter().sum::<f64>() / (noisy.len() * 5) as f64;
        assert!((var - 1.0).abs() < 0.05, "{var}");
        // A level σ = 0 has no Gaussian posterior; with levels > 0 the task lists the mixture's
        // posterior mean; one level via the label_noise shift.
        assert!(!task.learners().iter().any(|l| l.name == "bayes_ridge"));
        let task = build(&cfg.with("noise_levels", vec![0.1, 1.0])).unwrap();
        let labels: Vec<String> = task.learners().iter().map(|l| l.label()).collect();
        assert!(
            labels.contains(&"bayes_ridge(noise_std=[0.1,1.0], noise_weights=[1.0,3.0], w_scale=1.0)".to_string()),
            "{labels:?}"
        );
        let one = task.shifted(Shift { kind: ShiftKind::LabelNoise, value: 0.5 }).unwrap();
        assert_eq!(one.params().get("noise_levels"), None);
        assert!(one.learners().iter().any(|l| l.label() == "bayes_ridge(noise_std=0.5, w_scale=1.0)"));
        // A level is one more draw per prompt, taken only when levels are set (so the streams of
        // tasks without them, which the snapshots pin, are unchanged).
        let plain = TaskConfig::new("gaussian_linear").with("x_dim", 2);
        let a = build(&plain).unwrap().sample_n(&mut TaskRng::seed_from_u64(1), 3, 5);
        let b = build(&plain.with("noise_levels", vec![0.0])).unwrap().sample_n(&mut TaskRng::seed_from_u64(1), 3, 5);
        assert_eq!(
            a.w.as_ref().unwrap().index_axis(ndarray::Axis(0), 0),
            b.w.as_ref().unwrap().index_axis(ndarray::Axis(0), 0)
        );
        assert_ne!(a.xs, b.xs);
    }

    #[test]
    fn bad_noise_levels_name_the_field() {
        let e = |c: TaskConfig| build(&c).err().unwrap().to_string();
        let base = TaskConfig::new("gaussian_linear");
        assert!(
            e(base.clone().with("noise_levels", Vec::<f64>::new())).starts_with("task.noise_levels: must hold 1 to 64")
        );
        assert!(e(base.clone().with("noise_levels", vec![-1.0])).starts_with("task.noise_levels:"));
        assert!(e(base.clone().with("noise_levels", vec![0.1]).with("noise_std", 0.5)).starts_with("task.noise_std:"));
        assert!(e(base.clone().with("noise_weights", vec![1.0])).starts_with("task.noise_weights: needs noise_levels"));
        let two = base.with("noise_levels", vec![0.1, 0.5]);
        assert!(e(two.clone().with("noise_weights", vec![1.0])).contains("one number per noise level"));
        assert!(e(two.with("noise_weights", vec![1.0, 0.0])).starts_with("task.noise_weights:"));
    }

    #[test]
    fn a_pooled_gaussian_task_draws_only_its_pool_and_lists_dmmse() {
        let task = build(&TaskConfig::new("gaussian_linear").with("x_dim", 3).with("noise_std", 0.5)).unwrap();
        let pooled = task.pooled(5, 2).unwrap();
        let pool = crate::pool::gaussian_pool(5, (1, 3), 1.0, 2);
        let p = pooled.sample_n(&mut TaskRng::seed_from_u64(0), 100, 4);
        for b in 0..100 {
            let w = p.w.as_ref().unwrap().index_axis(ndarray::Axis(0), b).to_owned();
            assert!((0..5).any(|k| pool.index_axis(ndarray::Axis(0), k) == w));
        }
        let labels: Vec<String> = pooled.learners().iter().map(|l| l.label()).collect();
        assert!(
            labels.contains(&"dmmse(noise_std=0.5, pool_seed=2, pool_size=5, w_scale=1.0)".to_string()),
            "{labels:?}"
        );
        assert!(!task.learners().iter().any(|l| l.name == "dmmse"));
    }
}
