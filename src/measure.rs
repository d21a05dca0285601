//! Measurements shared by the figures, as rows ([`Measurement`]): out-of-distribution sweeps of any
//! learners (trained models and references alike, through the [`Learner`] interface), per-layer
//! readouts, and the rows of a training run's final evaluation. Figure modules only query these
//! rows and draw.

use icl_probes::learner::Learner;
use icl_probes::measure::Measurement;
use icl_tasks::{Params, Shift, ShiftKind, Task};

use crate::evaluate::EvalRow;
use crate::learners::ModelLearner;
use crate::references::Reference;
use crate::train::RunOutcome;
use icl_tasks::Prompts;

/// The model/seed fields of a row for `learner` when it is a trained model.
fn tag(row: &mut Measurement, model: Option<&ModelLearner>) {
    if let Some(m) = model {
        row.model = Some(m.run.clone());
        row.seed = m.seed;
        row.layer = m.layer;
    }
}

/// A learner on a sweep; `model` is set for trained models (so rows carry run and seed).
pub struct Swept<'a> {
    pub learner: &'a dyn Learner,
    pub model: Option<&'a ModelLearner>,
}

impl<'a> Swept<'a> {
    pub fn reference(learner: &'a dyn Learner) -> Self {
        Self { learner, model: None }
    }
    pub fn model(model: &'a ModelLearner) -> Self {
        Self { learner: model, model: Some(model) }
    }
}

/// ½·MSE of every learner on `prompts` fresh prompts of `task` shifted by each value of `kind`;
/// the prompts at the i-th value come from seed `seed + i` ([`crate::rng::prompts`]), so every
/// learner sees the same prompts.
pub fn shift_sweep(
    task: &dyn Task,
    kind: ShiftKind,
    values: &[f64],
    learners: &[Swept],
    prompts: usize,
    seed: u64,
) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    for (i, &value) in values.iter().enumerate() {
        let shift = Shift { kind, value };
        let shifted = task.shifted(shift)?;
        let p = crate::rng::prompts(shifted.as_ref(), prompts, seed + i as u64);
        for s in learners {
            let preds = s.learner.predict(&p)?.preds;
            let mut row =
                Measurement::new(task.name(), s.learner.name(), s.learner.params(), "loss", p.half_mse(&preds));
            row.shift = Some(shift);
            row.n_context = Some(p.context_len());
            tag(&mut row, s.model);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The values of `rows` for one learner (and model, when given) in order, as (x, value) with x
/// taken by `x`: e.g. a sweep's curve.
pub fn curve_of(
    rows: &[Measurement],
    keep: impl Fn(&Measurement) -> bool,
    x: impl Fn(&Measurement) -> f64,
) -> Vec<(f64, f64)> {
    rows.iter().filter(|m| keep(m)).map(|m| (x(m), m.value)).collect()
}

/// The shift value of a sweep row.
pub fn shift_value(m: &Measurement) -> f64 {
    m.shift.map_or(f64::NAN, |s| s.value)
}

fn step_params(run: &RunOutcome, step: usize) -> Params {
    let mut p = Params::new();
    p.insert("run".into(), run.metrics.name.clone().into());
    p.insert("step".into(), step.into());
    p
}

/// Rows of one evaluation of a run: the model's loss, each reference's loss and the model's
/// alignment with it, the interpolated model's loss. `step = 0` is the untrained control.
pub fn evaluation_rows(run: &RunOutcome, task: &str, row: &EvalRow) -> Vec<Measurement> {
    let mut out = Vec::new();
    let model_row = |learner: &str, params: Params, metric: &str, value: f64| {
        let mut m = Measurement::new(task, learner, params, metric, value);
        m.model = Some(run.metrics.name.clone());
        m.seed = Some(run.metrics.seed);
        m
    };
    out.push(model_row("model", step_params(run, row.step), "loss", row.loss));
    if let Some(v) = row.interpolated_loss {
        out.push(model_row("interpolated", step_params(run, row.step), "loss", v));
    }
    for vs in &row.vs {
        let (Some(reference), a) = (run.metrics.reference(&vs.learner), vs.alignment) else { continue };
        let name = vs.learner.as_str();
        let mut params = reference.params();
        params.insert("step".into(), row.step.into());
        for (metric, value) in [("model_cos", a.model_cos), ("model_diff", a.model_diff), ("preds_diff", a.preds_diff)]
        {
            out.push(model_row(name, params.clone(), metric, value));
        }
    }
    out
}

/// Rows of a run's references (their loss on the evaluation set) and of its first (untrained)
/// and last evaluations.
pub fn run_rows(run: &RunOutcome, task: &str) -> Vec<Measurement> {
    let mut out: Vec<Measurement> = run
        .metrics
        .references
        .iter()
        .map(|r| {
            let mut m = Measurement::new(task, &r.name, r.params(), "loss", r.loss);
            m.n_context = None;
            m
        })
        .collect();
    if let Some(first) = run.metrics.rows.first() {
        out.extend(evaluation_rows(run, task, first));
    }
    if let Some(last) = run.metrics.rows.last().filter(|r| r.step > 0) {
        out.extend(evaluation_rows(run, task, last));
    }
    out
}

/// ½·MSE on `prompts` of each model read out after every applied layer (`layer` = 1…L, through
/// the activation cache and the model's readout), and of each reference after each of its steps
/// (params carry `after_step`).
pub fn per_layer_rows(
    task: &str,
    models: &[ModelLearner],
    references: &[&Reference],
    prompts: &Prompts,
) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    for model in models {
        let preds = model.with_tokens(prompts, crate::probe::layer_readouts)?;
        for (l, p) in preds.iter().enumerate() {
            let mut m = Measurement::new(task, "model", model.params(), "loss", prompts.half_mse(p));
            tag(&mut m, Some(model));
            m.layer = Some(l + 1);
            rows.push(m);
        }
    }
    for r in references {
        for (step, w) in r.weights(prompts).iter().enumerate() {
            let mut params = Learner::params(*r);
            params.insert("after_step".into(), (step + 1).into());
            let loss = prompts.half_mse(&icl_probes::gd::predict(w, &prompts.xq));
            rows.push(Measurement::new(task, &r.name, params, "loss", loss));
        }
    }
    Ok(rows)
}
