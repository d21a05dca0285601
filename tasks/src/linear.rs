//! Noise-free (by default) linear regression, the task of von Oswald et al. 2023 (`create_reg_data`)
//! and Garg et al. 2022 (`LinearRegression`): W ~ N(0, I)·w_scale (o × d), x ~ U(−r/2, r/2)^d,
//! y = W x (+ noise). The official code uses r = 1, i.e. x ~ U(−0.5, 0.5); the paper text says
//! U(−1, 1).

use rand::Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use serde::{Deserialize, Serialize};

use crate::params::{parse, to_params};
use crate::pool::Pool;
use crate::registry::TaskEntry;
use crate::{
    check_count, check_real, check_sample_size, dot, prompts_from, Dims, LearnerSpec, Params, Prompts, Shift,
    ShiftKind, ShiftSweep, Task, TaskError, TaskRng,
};

pub const ENTRY: TaskEntry = TaskEntry {
    name: "linear",
    about: "linear regression with x ~ U(−r/2, r/2) (von Oswald et al. 2023)",
    build: LinearRegression::build,
};

/// `[task] name = "linear"`: the official von Oswald et al. settings by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearParams {
    /// Input dimension d (von Oswald et al.: 10).
    pub x_dim: usize,
    /// Output dimension o (1 in every paper figure).
    pub y_dim: usize,
    /// Number of context pairs N (von Oswald et al.: 10).
    pub context_len: usize,
    /// Inputs are drawn from U(−input_range/2, input_range/2).
    pub input_range: f64,
    /// Teacher weights are N(0, I)·w_scale.
    pub w_scale: f64,
    /// Standard deviation of Gaussian label noise on context and query labels.
    pub noise_std: f64,
    /// How many context labels are replaced by N(0, 1) noise ("distractors", von Oswald et al. A.13).
    pub distractors: usize,
    /// Every prompt's teacher is the all-ones W (times w_scale) instead of a fresh draw: the
    /// control task of Akyürek et al. 2023 §5, on which a model can score well without learning
    /// in context.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fixed_w: bool,
}

impl Default for LinearParams {
    fn default() -> Self {
        Self {
            x_dim: 10,
            y_dim: 1,
            context_len: 10,
            input_range: 1.0,
            w_scale: 1.0,
            noise_std: 0.0,
            distractors: 0,
            fixed_w: false,
        }
    }
}

impl LinearParams {
    pub fn check(&self) -> Result<(), TaskError> {
        check_count("x_dim", self.x_dim, 1..=4096)?;
        check_count("y_dim", self.y_dim, 1..=4096)?;
        check_count("context_len", self.context_len, 1..=crate::MAX_CONTEXT)?;
        check_real("input_range", self.input_range, 0.0, true)?;
        check_real("w_scale", self.w_scale, 0.0, false)?;
        check_real("noise_std", self.noise_std, 0.0, false)?;
        if self.distractors > self.context_len {
            return Err(TaskError::invalid("distractors", "must be at most task.context_len", self.distractors));
        }
        Ok(())
    }
}

/// Linear regression with a fresh teacher W (o × d) per prompt.
#[derive(Clone, Debug)]
pub struct LinearRegression {
    pub params: LinearParams,
    /// Training on finitely many tasks ([`Task::pooled`]): each prompt takes one of the pool's
    /// weight matrices, uniformly, instead of drawing W.
    pool: Option<Pool>,
}

impl LinearRegression {
    pub fn new(params: LinearParams) -> Result<Self, TaskError> {
        params.check()?;
        Ok(Self { params, pool: None })
    }

    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self::new(parse(ENTRY.name, params)?)?))
    }
}

impl Task for LinearRegression {
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
        let p = &self.params;
        // E[(w·x)²] = w_scale²·d·E[x²] with E[x²] = r²/12, per output, plus the label noise.
        p.y_dim as f64 * (p.w_scale.powi(2) * p.x_dim as f64 * p.input_range.powi(2) / 12.0 + p.noise_std.powi(2))
    }

    fn learners(&self) -> Vec<LearnerSpec> {
        let p = &self.params;
        let mut out = vec![
            LearnerSpec::new("zero"),
            LearnerSpec::new("gd").with("steps", 1),
            LearnerSpec::new("least_squares"),
            LearnerSpec::new("ridge"),
            LearnerSpec::new("averaging"),
            LearnerSpec::new("knn").with("k", 3),
        ];
        // The Bayes predictors hold where the labels are W x plus Gaussian noise and W is drawn
        // from N(0, w_scale² I) or the pool: not with distractors or a fixed teacher.
        if p.distractors == 0 && !p.fixed_w {
            out.extend(crate::bayes::learners(self.pool.as_ref(), p.w_scale, &[p.noise_std], None));
        }
        out
    }

    fn shifts(&self) -> Vec<ShiftSweep> {
        vec![
            // The official OOD sweeps: input scale arange(0.5, 2.03, 0.03), teacher scale arange(0.5, 5.1, 0.1).
            ShiftSweep {
                kind: ShiftKind::InputScale,
                training_value: 1.0,
                values: (0..=50).map(|i| 0.5 + 0.03 * i as f64).collect(),
            },
            ShiftSweep {
                kind: ShiftKind::TeacherScale,
                training_value: 1.0,
                values: (0..=45).map(|i| 0.5 + 0.1 * i as f64).collect(),
            },
            ShiftSweep { kind: ShiftKind::LabelNoise, training_value: 0.0, values: vec![0.0, 0.1, 0.25, 0.5, 1.0] },
        ]
    }

    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        let mut p = self.params.clone();
        match shift.kind {
            ShiftKind::InputScale => p.input_range *= shift.value,
            ShiftKind::TeacherScale => p.w_scale *= shift.value,
            ShiftKind::LabelNoise => p.noise_std = shift.value,
            kind => return Err(TaskError::unsupported_shift(self, kind)),
        }
        Ok(Box::new(Self::new(p)?))
    }

    fn pooled(&self, size: usize, pool_seed: u64) -> Result<Box<dyn Task>, TaskError> {
        let p = &self.params;
        let pool = Pool::of_teachers(size, (p.y_dim, p.x_dim), p.w_scale, p.fixed_w, pool_seed)?;
        Ok(Box::new(Self { params: p.clone(), pool: Some(pool) }))
    }

    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n: usize) -> Prompts {
        let LinearParams { x_dim: d, y_dim: o, input_range, w_scale, noise_std, distractors, fixed_w, .. } =
            self.params;
        check_sample_size(batch, n, d + o);
        let half = input_range / 2.0;
        let uniform = Uniform::new(-half, half).expect("input_range is checked > 0");
        // Flat row-major buffers, filled in a fixed draw order per prompt (W, the n context
        // inputs, the query) so that a (config, seed) pair always gives the same prompts.
        let mut xs = vec![0.0; batch * n * d];
        let mut ys = vec![0.0; batch * n * o];
        let mut xq = vec![0.0; batch * d];
        let mut yq = vec![0.0; batch * o];
        let mut ws = vec![0.0; batch * o * d]; // (B, o, d)
        let mut words = vec![0u64; (n + 1) * d];
        for b in 0..batch {
            let w = &mut ws[b * o * d..(b + 1) * o * d];
            if let Some(pool) = &self.pool {
                pool.pick(rng, w);
            } else if fixed_w {
                w.fill(w_scale);
            } else {
                w.iter_mut().for_each(|v| *v = w_scale * rng.sample::<f64, _>(StandardNormal));
            }
            // The n·d + d uniform inputs take one u64 each: drawn in one bulk call and replayed,
            // they are the values per-draw sampling gives, at a fraction of the per-call cost.
            let words = &mut words[..(n + 1) * d];
            rng.fill(words);
            let mut replay = crate::Replay::new(words);
            let xs_b = &mut xs[b * n * d..(b + 1) * n * d];
            xs_b.iter_mut().for_each(|v| *v = uniform.sample(&mut replay));
            let xq_b = &mut xq[b * d..(b + 1) * d];
            xq_b.iter_mut().for_each(|v| *v = uniform.sample(&mut replay));
            for (k, w_k) in w.chunks_exact(d).enumerate() {
                for (i, x_i) in xs_b.chunks_exact(d).enumerate() {
                    ys[(b * n + i) * o + k] = dot(w_k, x_i);
                }
                yq[b * o + k] = dot(w_k, xq_b);
            }
        }
        if noise_std > 0.0 {
            ys.iter_mut().for_each(|y| *y += noise_std * rng.sample::<f64, _>(StandardNormal));
            yq.iter_mut().for_each(|y| *y += noise_std * rng.sample::<f64, _>(StandardNormal));
        }
        if distractors > 0 {
            // The first `distractors` context labels of each prompt carry no information about W.
            let k = distractors.min(n);
            for b in 0..batch {
                let labels = &mut ys[b * n * o..(b * n + k) * o];
                labels.iter_mut().for_each(|y| *y = rng.sample(StandardNormal));
            }
        }
        prompts_from((batch, n, d, o), xs, ys, xq, yq, Some(ws))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, TaskConfig};
    use rand::{RngCore, SeedableRng};

    fn sample(cfg: &TaskConfig, seed: u64, batch: usize) -> Prompts {
        build(cfg).unwrap().sample(&mut TaskRng::seed_from_u64(seed), batch)
    }

    fn linear() -> TaskConfig {
        TaskConfig::new("linear")
    }

    #[test]
    fn a_pool_of_k_tasks_gives_only_those_k_weight_matrices() {
        let task = build(&linear().with("x_dim", 3)).unwrap();
        let pooled = task.pooled(4, 1).unwrap();
        let p = pooled.sample(&mut TaskRng::seed_from_u64(2), 200);
        let w = p.w.as_ref().unwrap(); // (B, o, d)
        let mut distinct: Vec<Vec<f64>> = Vec::new();
        for b in 0..p.batch() {
            let row: Vec<f64> = w.index_axis(ndarray::Axis(0), b).iter().copied().collect();
            if !distinct.contains(&row) {
                distinct.push(row.clone());
            }
            // Labels follow the prompt's own W; inputs are fresh per prompt.
            for i in 0..p.context_len() {
                let y: f64 = (0..3).map(|j| row[j] * p.xs[[b, i, j]]).sum();
                assert!((y - p.ys[[b, i, 0]]).abs() < 1e-12);
            }
        }
        assert_eq!(distinct.len(), 4, "all four pool members are drawn in 200 prompts, and no other W");
        assert_ne!(p.xs.index_axis(ndarray::Axis(0), 0), p.xs.index_axis(ndarray::Axis(0), 1));
        // The same pool seed gives the same pool; the unpooled task is unchanged.
        let again = task.pooled(4, 1).unwrap().sample(&mut TaskRng::seed_from_u64(2), 200);
        assert_eq!(again.w, p.w);
        assert_eq!(sample(&linear().with("x_dim", 3), 2, 5).xs, task.sample(&mut TaskRng::seed_from_u64(2), 5).xs);
        assert!(build(&TaskConfig::new("decision_tree")).unwrap().pooled(4, 1).is_err());
    }

    /// The inputs drawn in bulk and replayed are, bit for bit, those of drawing them one by one
    /// (the stream every committed figure was trained on), and the stream continues identically.
    #[test]
    fn bulk_input_draws_equal_one_by_one_draws() {
        for (d, o, n, noise) in [(10, 1, 10, 0.0), (3, 2, 7, 0.1), (1, 1, 1, 0.0)] {
            let params = LinearParams { x_dim: d, y_dim: o, context_len: n, noise_std: noise, ..Default::default() };
            let task = LinearRegression::new(params.clone()).unwrap();
            let mut bulk = TaskRng::seed_from_u64(5);
            let got = task.sample(&mut bulk, 9);
            // One by one, as before the bulk draws: W, the context inputs, the query input.
            let mut rng = TaskRng::seed_from_u64(5);
            let uniform = Uniform::new(-params.input_range / 2.0, params.input_range / 2.0).unwrap();
            for b in 0..9 {
                for k in 0..o * d {
                    let w: f64 = rng.sample(StandardNormal);
                    assert_eq!(got.w.as_ref().unwrap().as_slice().unwrap()[b * o * d + k], params.w_scale * w);
                }
                for i in 0..n * d {
                    assert_eq!(got.xs.as_slice().unwrap()[b * n * d + i], uniform.sample(&mut rng));
                }
                for i in 0..d {
                    assert_eq!(got.xq.as_slice().unwrap()[b * d + i], uniform.sample(&mut rng));
                }
            }
            if noise > 0.0 {
                for _ in 0..9 * (n + 1) * o {
                    let _: f64 = rng.sample(StandardNormal);
                }
            }
            assert_eq!(bulk.next_u64(), rng.next_u64(), "the stream continues where it would have");
        }
    }

    #[test]
    fn shapes_follow_the_config() {
        let cfg = linear().with("x_dim", 3).with("y_dim", 2).with("context_len", 7);
        let p = sample(&cfg, 0, 5);
        assert_eq!(p.xs.dim(), (5, 7, 3));
        assert_eq!(p.ys.dim(), (5, 7, 2));
        assert_eq!(p.xq.dim(), (5, 3));
        assert_eq!(p.yq.dim(), (5, 2));
        assert_eq!(p.w.as_ref().unwrap().dim(), (5, 2, 3));
        let longer = build(&cfg).unwrap().sample_n(&mut TaskRng::seed_from_u64(0), 5, 30);
        assert_eq!(longer.xs.dim(), (5, 30, 3));
    }

    #[test]
    fn a_seed_fixes_the_prompts() {
        let cfg = linear();
        assert_eq!(sample(&cfg, 7, 4), sample(&cfg, 7, 4));
        assert_ne!(sample(&cfg, 7, 4), sample(&cfg, 8, 4));
    }

    #[test]
    fn the_hidden_weights_generate_the_labels() {
        let p = sample(&linear().with("y_dim", 2), 3, 50);
        let w = p.w.as_ref().unwrap();
        for b in 0..p.batch() {
            let want = w.index_axis(ndarray::Axis(0), b).dot(&p.xq.row(b));
            for k in 0..2 {
                assert!((want[k] - p.yq[[b, k]]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn inputs_are_uniform_and_labels_linear() {
        let task = build(&linear().with("input_range", 3.0)).unwrap();
        let p = task.sample(&mut TaskRng::seed_from_u64(1), 4000);
        let x = p.xs.iter().chain(p.xq.iter());
        let (n, sum, sq, max) =
            x.fold((0.0, 0.0, 0.0, 0.0f64), |(n, s, q, m), &v| (n + 1.0, s + v, q + v * v, m.max(v.abs())));
        assert!(max <= 1.5, "x outside U(−1.5, 1.5): {max}");
        assert!((sum / n).abs() < 0.01, "mean {}", sum / n);
        assert!((sq / n - 9.0 / 12.0).abs() < 0.01, "variance {} vs r²/12 = 0.75", sq / n);
        let var_y = p.yq.iter().map(|y| y * y).sum::<f64>() / p.batch() as f64;
        // E[y²] = w_scale² · d · E[x²] = 10 · 0.75: the zero predictor's error.
        assert!((task.zero_error() - 7.5).abs() < 1e-12);
        assert!((var_y - 7.5).abs() < 0.5, "E[y²] = {var_y}, want ≈ 7.5");
    }

    #[test]
    fn w_scale_noise_and_distractors() {
        let base = linear();
        let scaled = sample(&base.clone().with("w_scale", 2.0), 3, 2000);
        let plain = sample(&base, 3, 2000);
        let ms = |p: &Prompts| p.yq.iter().map(|y| y * y).sum::<f64>() / p.batch() as f64;
        assert!((ms(&scaled) / ms(&plain) - 4.0).abs() < 1e-9, "same draws, W doubled");
        let noisy = sample(&base.clone().with("noise_std", 0.5), 3, 4000);
        let extra = ms(&noisy) - ms(&plain);
        assert!((extra - 0.25).abs() < 0.05, "noise variance {extra} vs 0.25");
        let d = sample(&base.clone().with("distractors", 4), 3, 2000);
        assert_eq!(d.xs, plain.xs, "distractors change labels only");
        assert_eq!(d.ys.slice(ndarray::s![.., 4.., ..]), plain.ys.slice(ndarray::s![.., 4.., ..]));
        assert_ne!(d.ys.slice(ndarray::s![.., ..4, ..]), plain.ys.slice(ndarray::s![.., ..4, ..]));
    }

    #[test]
    fn shifts_rescale_the_same_draws() {
        let task = build(&linear()).unwrap();
        let wide = task.shifted(Shift { kind: ShiftKind::InputScale, value: 2.0 }).unwrap();
        assert_eq!(wide.params()["input_range"], 2.0);
        let a = task.sample(&mut TaskRng::seed_from_u64(2), 10);
        let b = wide.sample(&mut TaskRng::seed_from_u64(2), 10);
        assert!((&b.xq - &(&a.xq * 2.0)).iter().all(|e| e.abs() < 1e-12));
        assert!(task.shifted(Shift { kind: ShiftKind::ConditionNumber, value: 3.0 }).is_err());
    }

    #[test]
    fn the_control_task_has_one_teacher_for_every_prompt() {
        let p = sample(&linear().with("x_dim", 4).with("fixed_w", true), 3, 6);
        assert!(p.w.as_ref().unwrap().iter().all(|&v| v == 1.0));
        for b in 0..6 {
            assert!((p.yq[[b, 0]] - p.xq.row(b).sum()).abs() < 1e-12);
        }
        // Off by default, and the default leaves the resolved parameters as they were.
        assert!(!build(&linear()).unwrap().params().contains_key("fixed_w"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |c: TaskConfig| build(&c).err().unwrap().to_string();
        assert!(e(linear().with("x_dim", 0)).starts_with("task.x_dim:"));
        assert!(e(linear().with("input_range", -1.0)).starts_with("task.input_range:"));
        assert!(e(linear().with("distractors", 11)).starts_with("task.distractors:"));
        assert!(e(linear().with("sparsity", 3)).starts_with("task.sparsity: unknown key for task `linear`"));
        assert!(e(TaskConfig::new("nope")).contains("known: linear"));
    }
}
