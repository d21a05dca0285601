//! The in-context learning curve (Garg et al. 2022, Fig. 2): normalised error against the number of
//! in-context examples n, for any task and any learners, as measurement rows.
//!
//! Evaluation prompts are drawn once at the largest n and cut to each n (so every n sees the same
//! prompts, as Garg et al.'s prefixes do); tuning prompts for the learners' open hyperparameters
//! come from a separate RNG stream of the training distribution and are cut the same way, so η, λ,
//! γ and P are tuned per n and never on the evaluation prompts. The normalised error of a prompt is
//! ‖ŷ − y_q‖² divided by the task's zero-predictor error (so predicting 0 scores 1); each row holds
//! the mean and a 90% bootstrap interval over prompts.

use icl_tasks::{LearnerSpec, Prompts, Shift, Task, TaskRng};
use rand::SeedableRng;

use crate::learner::{family, fit, Learner};
use crate::measure::{bootstrap_mean, Measurement};
use crate::ProbeError;

/// RNG streams of a curve's seed.
pub const EVAL_STREAM: u64 = 0;
pub const TUNING_STREAM: u64 = 1;
/// Under a shift whose prompts are not prefixes of each other (the query depends on n), the
/// prompts with n pairs come from stream `PER_N_STREAM + n`.
pub const PER_N_STREAM: u64 = 1 << 32;

/// How a curve is measured.
#[derive(Clone, Debug)]
pub struct CurveOptions {
    /// Evaluation prompts (Garg et al.: 1,280).
    pub prompts: usize,
    /// Prompts for tuning hyperparameters, per n.
    pub tuning_prompts: usize,
    /// The numbers of in-context examples to evaluate at.
    pub n_values: Vec<usize>,
    pub seed: u64,
    /// Evaluate under this shift (tuning stays on the training distribution).
    pub shift: Option<Shift>,
    /// Level of the bootstrap interval and its resamples.
    pub level: f64,
    pub resamples: usize,
}

impl Default for CurveOptions {
    fn default() -> Self {
        Self {
            prompts: 1280,
            tuning_prompts: 4096,
            n_values: (0..=10).collect(),
            seed: 0,
            shift: None,
            level: 0.9,
            resamples: 1000,
        }
    }
}

/// A learner on the curve: a reference learner fitted per n from its spec, or a fixed learner
/// (a trained model read out at some layer) with the run it comes from.
pub enum CurveMember<'a> {
    Reference(LearnerSpec),
    Fixed { learner: &'a dyn Learner, model: Option<String>, seed: Option<u64>, layer: Option<usize> },
}

pub fn stream_rng(seed: u64, stream: u64) -> TaskRng {
    let mut rng = TaskRng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Rows of metric `normalised_error`, one per member and n (in `members` order, then n).
/// `on_progress` is called once per member and n with a short description.
pub fn learning_curve(
    task: &dyn Task,
    members: &[CurveMember],
    opts: &CurveOptions,
    on_progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Measurement>, ProbeError> {
    Ok(learning_curve_with_errors(task, members, opts, on_progress)?.into_iter().map(|(row, _)| row).collect())
}

/// [`learning_curve`], each row with the per-prompt normalised errors it summarises (the same
/// prompts, in the same order, at every n), for joint statistics across n.
pub fn learning_curve_with_errors(
    task: &dyn Task,
    members: &[CurveMember],
    opts: &CurveOptions,
    on_progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(Measurement, Vec<f64>)>, ProbeError> {
    let n_max = opts.n_values.iter().copied().max().unwrap_or(0);
    let eval_task: Box<dyn Task>;
    let eval_source = match opts.shift {
        Some(shift) => {
            eval_task = task.shifted(shift).map_err(|e| ProbeError::Unsupported(e.to_string()))?;
            eval_task.as_ref()
        }
        None => task,
    };
    // Prompts with n pairs are the first n pairs of one sample (the query shared), except under a
    // shift whose query depends on n (it must be one of the n context inputs): fresh per n.
    let per_n = opts.shift.is_some_and(|s| !s.kind.prefix_consistent());
    let eval =
        eval_source.sample_n(&mut stream_rng(opts.seed, EVAL_STREAM), if per_n { 0 } else { opts.prompts }, n_max);
    let fresh: Vec<(usize, Prompts)> = if per_n {
        let sample =
            |n: usize| eval_source.sample_n(&mut stream_rng(opts.seed, PER_N_STREAM + n as u64), opts.prompts, n);
        opts.n_values.iter().map(|&n| (n, sample(n))).collect()
    } else {
        Vec::new()
    };
    let eval_at = |n: usize| match fresh.iter().find(|(m, _)| *m == n) {
        Some((_, p)) => p.clone(),
        None => eval.prefix(n),
    };
    let needs_tuning = members.iter().any(|m| match m {
        CurveMember::Reference(spec) => family(&spec.name).map(|f| f.needs_tuning(spec)).unwrap_or(false),
        CurveMember::Fixed { .. } => false,
    });
    let tuning =
        needs_tuning.then(|| task.sample_n(&mut stream_rng(opts.seed, TUNING_STREAM), opts.tuning_prompts, n_max));
    let zero = eval_source.zero_error();
    if !(zero.is_finite() && zero > 0.0) {
        return Err(ProbeError::Unsupported(format!(
            "the zero predictor's error of task `{}` is {zero}, so no error can be normalised by it (is a scale such as w_scale 0?)",
            task.name()
        )));
    }
    for (i, m) in members.iter().enumerate() {
        if let CurveMember::Reference(spec) = m {
            let twice =
                members[..i].iter().any(|o| matches!(o, CurveMember::Reference(s) if s.label() == spec.label()));
            if twice {
                return Err(ProbeError::InvalidSpec(format!("learner `{}` is on the curve twice", spec.label())));
            }
        }
    }
    let mut rows = Vec::new();
    for member in members {
        for &n in &opts.n_values {
            let prompts = eval_at(n);
            let (label, learner_owned);
            let (learner, spec, model, seed, layer): (&dyn Learner, _, _, _, _) = match member {
                CurveMember::Reference(spec) => {
                    label = spec.label();
                    on_progress(&format!("{label}, n = {n}"));
                    let tuning_n = tuning.as_ref().map(|t| t.prefix(n));
                    learner_owned = fit(spec, tuning_n.as_ref())?;
                    (learner_owned.as_ref(), Some(spec.clone()), None, None, None)
                }
                CurveMember::Fixed { learner, model, seed, layer } => {
                    label = learner.label();
                    on_progress(&format!("{label}, n = {n}"));
                    (*learner, None, model.clone(), *seed, *layer)
                }
            };
            let errors = normalised_errors(learner, &prompts, zero)?;
            let (value, lo, hi) = bootstrap_mean(&errors, opts.level, opts.resamples, opts.seed ^ n as u64);
            if !value.is_finite() {
                return Err(ProbeError::Unsupported(format!(
                    "`{label}` at n = {n}: its mean normalised error is {value} (its predictions overflow or are not numbers on these prompts), not a point of a curve"
                )));
            }
            rows.push((
                Measurement {
                    task: task.name().to_string(),
                    learner: learner.name().to_string(),
                    params: learner.params(),
                    spec,
                    model,
                    seed,
                    layer,
                    n_context: Some(n),
                    shift: opts.shift,
                    protocol: None,
                    position: None,
                    metric: "normalised_error".into(),
                    value,
                    lo: Some(lo),
                    hi: Some(hi),
                },
                errors,
            ));
        }
    }
    Ok(rows)
}

/// Per prompt, ‖ŷ − y_q‖² / `zero_error`.
pub fn normalised_errors(learner: &dyn Learner, prompts: &Prompts, zero_error: f64) -> Result<Vec<f64>, ProbeError> {
    let preds = learner.predict(prompts)?.preds;
    Ok(prompts.squared_errors(&preds).into_iter().map(|e| e / zero_error).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use icl_tasks::TaskConfig;

    #[test]
    fn isotropic_curves_follow_their_closed_forms() {
        // d = 5, x, w ~ N(0, I), noise-free (tasks-learners-probes.md §2): least squares
        // (d − n)/d, averaging (d + 1)/n, the best single GD step (d + 1)/(n + d + 1); the zero
        // predictor 1.
        let d = 5;
        let task = TaskConfig::new("gaussian_linear").with("x_dim", d).with("context_len", 10).build().unwrap();
        let opts = CurveOptions { prompts: 4000, n_values: vec![1, 3, 5, 8], ..Default::default() };
        let members: Vec<CurveMember> = ["least_squares", "averaging", "gd", "zero"]
            .iter()
            .map(|name| CurveMember::Reference(LearnerSpec::new(name)))
            .collect();
        let rows = learning_curve(task.as_ref(), &members, &opts, &|_| ()).unwrap();
        assert_eq!(rows.len(), 16);
        for row in &rows {
            let n = row.n_context.unwrap() as f64;
            let d = d as f64;
            let closed = match row.learner.as_str() {
                "least_squares" => ((d - n) / d).max(0.0),
                "averaging" => (d + 1.0) / n,
                "gd" => (d + 1.0) / (n + d + 1.0),
                _ => 1.0,
            };
            let (lo, hi) = (row.lo.unwrap(), row.hi.unwrap());
            assert!(lo <= row.value && row.value <= hi);
            // within the sampling error (the intervals are 90%; allow a few standard errors)
            let slack = 2.0 * (hi - lo).max(1e-9);
            assert!(
                (row.value - closed).abs() <= slack,
                "{} at n = {n}: {} vs {closed} [{lo}, {hi}]",
                row.learner,
                row.value
            );
        }
        let gd3 = rows.iter().find(|r| r.learner == "gd" && r.n_context == Some(3)).unwrap();
        assert!(gd3.params.contains_key("eta"), "tuned η is recorded: {:?}", gd3.params);
    }

    #[test]
    fn a_query_from_the_context_is_from_each_ns_own_context() {
        // Min-norm least squares interpolates its context, so with the query one of the n context
        // inputs it is exact at every n ≥ 1 (a curve that truncated one long prompt would drop
        // the copied input for small n). The orthant shift keeps prefixes: least squares is
        // (d − n)/d-like for n < d and exact from n = d.
        let task = TaskConfig::new("gaussian_linear").with("x_dim", 5).with("context_len", 10).build().unwrap();
        let members = vec![CurveMember::Reference(LearnerSpec::new("least_squares"))];
        for (kind, exact_from) in
            [(icl_tasks::ShiftKind::QueryFromContext, 1), (icl_tasks::ShiftKind::ContextOrthant, 5)]
        {
            let shift = Some(Shift { kind, value: 1.0 });
            let opts = CurveOptions { prompts: 300, n_values: vec![1, 2, 4, 5, 10], shift, ..Default::default() };
            let rows = learning_curve(task.as_ref(), &members, &opts, &|_| ()).unwrap();
            for row in &rows {
                let n = row.n_context.unwrap();
                assert_eq!(row.shift, shift);
                assert_eq!(row.value < 1e-12, n >= exact_from, "{kind:?} at n = {n}: {}", row.value);
            }
        }
    }

    #[test]
    fn snapshot_of_a_small_curve() {
        // Every reference learner on a small non-isotropic task: a change to any learner, its
        // tuning or the task's sampling shows here. Values rounded to 3 decimals (LAPACK kernels differ by CPU in the last bits).
        let task = TaskConfig::new("gaussian_linear")
            .with("x_dim", 3)
            .with("context_len", 6)
            .with("covariance", "rotated")
            .with("spectrum", vec![2.0, 1.0, 0.5])
            .with("noise_std", 0.1)
            .build()
            .unwrap();
        let mut specs = task.learners();
        specs.push(LearnerSpec::new("gd++").with("steps", 2));
        specs.push(LearnerSpec::new("lasso").with("alpha", 0.05));
        specs.push(LearnerSpec::new("tree").with("max_depth", 2));
        specs.push(LearnerSpec::new("boosting").with("trees", 10));
        let members: Vec<CurveMember> = specs.into_iter().map(CurveMember::Reference).collect();
        let opts = CurveOptions {
            prompts: 300,
            tuning_prompts: 500,
            n_values: vec![0, 2, 6],
            resamples: 200,
            ..Default::default()
        };
        let rows = learning_curve(task.as_ref(), &members, &opts, &|_| ()).unwrap();
        let round = |v: f64| (v * 1e3).round() / 1e3 + 0.0;
        let table: Vec<String> = rows
            .iter()
            .map(|r| {
                let tuned: Vec<String> = ["eta", "gamma", "lambda"]
                    .iter()
                    .filter_map(|k| r.params.get(*k).and_then(|v| v.as_f64()).map(|v| format!("{k}={}", round(v))))
                    .collect();
                format!(
                    "{} n={}: {} [{}, {}] {}",
                    r.learner,
                    r.n_context.unwrap(),
                    round(r.value),
                    round(r.lo.unwrap()),
                    round(r.hi.unwrap()),
                    tuned.join(" ")
                )
            })
            .collect();
        insta::assert_yaml_snapshot!(table);
    }
}
