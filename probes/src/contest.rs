//! Measuring a hypothesis tournament, for any model: the candidate learners fitted once per
//! (layer, n) on tuning prompts, then each contestant (a model of one seed, read out after each of
//! its layers) compared with every candidate on the same evaluation prompts. The metrics and the
//! ranking are [`crate::tournament`]'s; this file is the loop that produces their rows.
//!
//! A contestant is anything that implements [`Contestant`]: a libtorch model in the `icl-lab`
//! crate, a Python callable in the Python module. Both go through this one loop, so a tournament
//! of a user's own model has the rows, streams and controls of `icl-lab tournament`.
//!
//! Iterative learners follow the depth: a candidate whose spec sets `steps` is refitted at the
//! readout after layer l with `steps = l` (one GD step per layer is the hypothesis under test);
//! the others are fitted once and met at every layer.

use std::collections::BTreeMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use icl_tasks::{LearnerSpec, Prompts, Task, TaskRng};

use crate::curve::stream_rng;
use crate::interventions::{linear_smoother, row_cosines, Recursion, Smoother};
use crate::learner::{fit, Learner};
use crate::measure::Measurement;
use crate::tournament::{compare, permutation_spread, Answers};
use crate::ProbeError;

/// RNG streams of a tournament's seed.
pub const EVAL_STREAM: u64 = 0;
pub const TUNING_STREAM: u64 = 1;
pub const QUERY_STREAM: u64 = 2;
pub const ORDER_STREAM: u64 = 3;

/// How a tournament is measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TournamentOptions {
    /// Evaluation prompts per n.
    pub prompts: usize,
    /// Prompts the learners' hyperparameters are fitted on, per n (never the evaluation prompts).
    pub tuning_prompts: usize,
    /// Fresh queries per context from which a learner's implicit weights are fitted (≥ d + 1).
    pub queries: usize,
    /// Random context orders for the order-sensitivity control.
    pub orders: usize,
    /// The numbers of in-context examples (default 1…N).
    pub n_values: Vec<usize>,
    pub seed: u64,
}

impl TournamentOptions {
    pub fn for_task(task: &dyn Task) -> Self {
        let d = task.dims().x_dim;
        Self {
            prompts: 512,
            tuning_prompts: 4096,
            queries: 2 * (d + 1),
            orders: 8,
            n_values: (1..=task.dims().context_len).collect(),
            seed: 0,
        }
    }

    /// Checks the options against the task before anything is drawn.
    pub fn check(&self, task: &dyn Task) -> Result<(), ProbeError> {
        let d = task.dims().x_dim;
        let bad = |m: String| Err(ProbeError::InvalidSpec(m));
        if self.queries <= d {
            return bad(format!("queries: need at least d + 1 = {} per context (got {})", d + 1, self.queries));
        }
        if self.n_values.is_empty() {
            return bad("no numbers of in-context examples".into());
        }
        if self.prompts == 0 {
            return bad("prompts: need at least 1".into());
        }
        if self.orders == 0 {
            return bad("orders: need at least 1".into());
        }
        if let Some(n) = self.n_values.iter().find(|&&n| n > icl_tasks::MAX_CONTEXT) {
            return bad(format!("n: at most {} in-context examples (got {n})", icl_tasks::MAX_CONTEXT));
        }
        Ok(())
    }
}

/// A model of one seed in a tournament, as the measuring loop sees it.
pub trait Contestant {
    /// The model read out after `layer` (1-based), as a learner; `sensitivity` says whether its
    /// predictions must carry ∂ŷ/∂x_q (the order control needs predictions only).
    fn readout(&mut self, layer: usize, sensitivity: bool) -> &dyn Learner;
    /// Its influence profile ∂ŷ/∂yⱼ (B, n) at the readout after `layer`, for scalar labels
    /// (compared with the candidates' smoothers as `influence_cos`); `None` where it has none.
    fn influence(&mut self, prompts: &Prompts, layer: usize) -> Result<Option<Array2<f64>>, ProbeError>;
    /// ‖tokens − the tokens `layer` steps of GD/GD++ with these (η, γ) imply‖ / ‖that‖, for a
    /// model whose tokens have the construction's layout; `None` for any other.
    fn token_residual(
        &mut self,
        _prompts: &Prompts,
        _layer: usize,
        _etas: &[f64],
        _gammas: &[f64],
    ) -> Result<Option<f64>, ProbeError> {
        Ok(None)
    }
}

/// Candidate notes in the order they arose, each once: why a candidate is missing somewhere.
#[derive(Debug, Default)]
pub struct Skips(pub Vec<String>);

impl Skips {
    pub fn push(&mut self, why: String) {
        if !self.0.contains(&why) {
            self.0.push(why);
        }
    }
}

/// A candidate fitted for one (depth, n), with what the measurement computed of it there.
pub struct Fitted<T> {
    /// The spec as given (its label is the candidate's identity; `steps` follows the depth).
    pub spec: LearnerSpec,
    pub learner: Box<dyn Learner>,
    /// Its spec sets `steps`, so it is refitted per depth.
    pub follows_depth: bool,
    pub extra: T,
}

/// The candidates of a comparison fitted per (depth, n): a candidate whose spec sets `steps` once
/// per depth 1..=max (with `steps = depth`), any other once, at depth 1, and met at every depth.
/// Shared by the tournament and the intervention protocols, which differ only in what they compute
/// of each fitted candidate.
pub struct CandidateGrid<T> {
    cells: BTreeMap<(usize, usize), Vec<Fitted<T>>>,
}

impl<T> CandidateGrid<T> {
    /// Fits every spec on `tuning.prefix(n)` for each depth and n and calls `answer` with the
    /// learner and `eval.prefix(n)`. An error of the fit or of `answer`'s inner result leaves the
    /// candidate out there (noted in `skips` as "<spec> at <word> <depth>: <why>"), except an
    /// invalid spec, which stops everything; `answer`'s outer error stops everything too.
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        specs: &[LearnerSpec],
        eval: &Prompts,
        tuning: &Prompts,
        n_values: &[usize],
        max_depth: usize,
        word: &str,
        skips: &mut Skips,
        on_progress: &dyn Fn(&str),
        mut answer: impl FnMut(
            &LearnerSpec,
            &dyn Learner,
            &Prompts,
            usize,
            &mut Skips,
        ) -> Result<Result<T, ProbeError>, ProbeError>,
    ) -> Result<Self, ProbeError> {
        let mut cells = BTreeMap::new();
        for depth in 1..=max_depth {
            for &n in n_values {
                let (prompts, tune) = (eval.prefix(n), tuning.prefix(n));
                let mut here = Vec::new();
                for given in specs {
                    let follows_depth = given.params.contains_key("steps");
                    if depth > 1 && !follows_depth {
                        continue; // does not depend on the depth: fitted at depth 1 already
                    }
                    let spec = at_depth(given, depth);
                    on_progress(&format!("fit {} at n = {n}", spec.label()));
                    let fitted = match fit(&spec, Some(&tune)) {
                        Ok(learner) => {
                            answer(given, learner.as_ref(), &prompts, depth, skips)?.map(|extra| (learner, extra))
                        }
                        Err(e) => Err(e),
                    };
                    match fitted {
                        Ok((learner, extra)) => {
                            here.push(Fitted { spec: given.clone(), learner, follows_depth, extra })
                        }
                        Err(ProbeError::InvalidSpec(e)) => {
                            return Err(ProbeError::InvalidSpec(format!("candidate `{}`: {e}", given.label())));
                        }
                        Err(e) => skips.push(format!("{} at {word} {depth}: {e}", spec.label())),
                    }
                }
                cells.insert((depth, n), here);
            }
        }
        Ok(Self { cells })
    }

    /// The largest depth the candidates were fitted for.
    pub fn max_depth(&self) -> usize {
        self.cells.keys().map(|(l, _)| *l).max().unwrap_or(0)
    }

    /// The candidates met at `depth` and `n` (layer-independent ones live at depth 1).
    pub fn at(&self, depth: usize, n: usize) -> Vec<&Fitted<T>> {
        let mut all: Vec<&Fitted<T>> = self.cells[&(depth, n)].iter().collect();
        if depth > 1 {
            all.extend(self.cells[&(1, n)].iter().filter(|c| !c.follows_depth));
        }
        all
    }
}

/// What the tournament keeps of a fitted candidate at one n.
pub struct Scored {
    pub answers: Answers,
    /// Its smoother s(X, x_q) (B, N) on the evaluation prompts, where it is linear in y (scalar
    /// labels): what the model's ∂ŷ/∂y is compared with (`influence_cos`).
    pub smoother: Option<Array2<f64>>,
}

/// The candidate spec at the readout after `layer`: `steps` follows the layer.
pub fn at_depth(spec: &LearnerSpec, layer: usize) -> LearnerSpec {
    let mut spec = spec.clone();
    if spec.params.contains_key("steps") {
        spec.params.insert("steps".into(), layer.into());
    }
    spec
}

/// (η, γ) per step for a `gd` or `gd++` candidate of `layer` steps, from its parameters.
fn gd_family_steps(learner: &dyn Learner, layer: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let recursion = Recursion::of_learner(learner)?;
    (recursion.len() == layer).then(|| recursion.steps.iter().copied().unzip())
}

/// Refuses, before anything is measured, a candidate whose spec cannot work on any prompts (k = 0,
/// λ ≤ 0, an unknown key) or that is given twice: each is fitted once, at depth 1, on a few tuning
/// prompts. A candidate that fails only on some prompts or layers is left out of those (and listed
/// in `skipped`) instead.
pub fn check_candidates(learners: &[LearnerSpec], tuning: &Prompts) -> Result<(), ProbeError> {
    let few = tuning.slice(0..tuning.batch().min(16));
    for (i, given) in learners.iter().enumerate() {
        if learners[..i].iter().any(|s| s.label() == given.label()) {
            return Err(ProbeError::InvalidSpec(format!("candidate `{}` is given twice", given.label())));
        }
        if let Err(ProbeError::InvalidSpec(e)) = fit(&at_depth(given, 1), Some(&few)) {
            return Err(ProbeError::InvalidSpec(format!("candidate `{}`: {e}", given.label())));
        }
    }
    Ok(())
}

/// The candidates of a tournament, fitted per (layer, n) and answered on its evaluation prompts,
/// with the prompts and the order control's RNG: what every contestant is measured against.
pub struct Field {
    task_name: String,
    y_dim: usize,
    opts: TournamentOptions,
    eval: Prompts,
    queries: Array2<f64>,
    candidates: CandidateGrid<Scored>,
    order_rng: TaskRng,
    /// Candidates that could not be fitted at some layer, with why.
    pub skipped: Vec<String>,
}

impl Field {
    /// Draws the evaluation, tuning and query prompts of `opts.seed`, fits every candidate for
    /// layers 1..=`max_layers` and every n, and measures the candidates' own rows (their loss at
    /// each n, their order spread at the largest n), returned with the field.
    pub fn fit(
        task: &dyn Task,
        learners: &[LearnerSpec],
        opts: &TournamentOptions,
        max_layers: usize,
        on_progress: &dyn Fn(&str),
    ) -> Result<(Self, Vec<Measurement>), ProbeError> {
        opts.check(task)?;
        let dims = task.dims();
        let n_max = opts.n_values.iter().copied().max().expect("checked: n_values is not empty");
        let eval = task.sample_n(&mut stream_rng(opts.seed, EVAL_STREAM), opts.prompts, n_max);
        let tuning = task.sample_n(&mut stream_rng(opts.seed, TUNING_STREAM), opts.tuning_prompts, n_max);
        let queries: Array2<f64> = task.sample_n(&mut stream_rng(opts.seed, QUERY_STREAM), opts.queries, 0).xq;
        check_candidates(learners, &tuning.prefix(n_max))?;

        let mut skips = Skips::default();
        let mut rows = Vec::new();
        let candidates = CandidateGrid::fit(
            learners,
            &eval,
            &tuning,
            &opts.n_values,
            max_layers,
            "layer",
            &mut skips,
            on_progress,
            |given, learner, prompts, _, _| {
                let answers = match Answers::of(learner, prompts, &queries) {
                    Ok(a) => a,
                    Err(e) => return Ok(Err(e)),
                };
                let mut m = Measurement::new(
                    task.name(),
                    learner.name(),
                    learner.params(),
                    "loss",
                    prompts.half_mse(&answers.prediction.preds),
                )
                .with_spec(given);
                m.n_context = Some(prompts.context_len());
                rows.push(m);
                // A smoother of 0 (the zero learner) has no direction to compare.
                let smoother = match dims.y_dim {
                    1 => match linear_smoother(learner, prompts)? {
                        Smoother::Linear(s) => Some(s),
                        Smoother::Zero | Smoother::NotLinear => None,
                    },
                    _ => None,
                };
                Ok(Ok(Scored { answers, smoother }))
            },
        )?;
        // Order sensitivity of the candidates (at n_max; layer-1 and deepest variants).
        let mut order_rng = stream_rng(opts.seed, ORDER_STREAM);
        let full = eval.prefix(n_max);
        for layer in [1, max_layers] {
            for c in candidates.at(layer, n_max) {
                if layer > 1 && !c.follows_depth {
                    continue;
                }
                let spread = permutation_spread(c.learner.as_ref(), &full, opts.orders, &mut order_rng)?;
                let mut m =
                    Measurement::new(task.name(), c.learner.name(), c.learner.params(), "permutation_spread", spread)
                        .with_spec(&c.spec);
                m.n_context = Some(n_max);
                rows.push(m);
            }
            if max_layers == 1 {
                break;
            }
        }
        let field = Field {
            task_name: task.name().to_string(),
            y_dim: dims.y_dim,
            opts: opts.clone(),
            eval,
            queries,
            candidates,
            order_rng,
            skipped: skips.0,
        };
        Ok((field, rows))
    }

    /// The largest layer the candidates were fitted for.
    pub fn max_layers(&self) -> usize {
        self.candidates.max_depth()
    }

    /// Measures one contestant, `model` of `seed` with `layers` layers (at most the field's
    /// depth), against every candidate after each layer: its loss, the pairwise metrics and
    /// `influence_cos` at every n, `token_residual` where the contestant has one, and its order
    /// spread at the largest n. Rows carry `model`, `seed` and `layer`.
    pub fn measure(
        &mut self,
        contestant: &mut dyn Contestant,
        model: &str,
        seed: u64,
        layers: usize,
        on_progress: &dyn Fn(&str),
    ) -> Result<Vec<Measurement>, ProbeError> {
        if layers == 0 || layers > self.max_layers() {
            return Err(ProbeError::InvalidSpec(format!(
                "{model}: {layers} layers, the candidates were fitted for 1..={}",
                self.max_layers()
            )));
        }
        let task = self.task_name.clone();
        let n_max = self.opts.n_values.iter().copied().max().expect("checked: n_values is not empty");
        let full = self.eval.prefix(n_max);
        let mut rows = Vec::new();
        for layer in 1..=layers {
            on_progress(&format!("{model} seed {seed}, layer {layer}"));
            let tag = |mut m: Measurement| {
                m.model = Some(model.to_string());
                m.seed = Some(seed);
                m.layer = Some(layer);
                m
            };
            for &n in &self.opts.n_values {
                let prompts = self.eval.prefix(n);
                let readout = contestant.readout(layer, true);
                let answers = Answers::of(readout, &prompts, &self.queries)?;
                let mut loss = tag(Measurement::new(
                    &task,
                    "model",
                    readout.params(),
                    "loss",
                    prompts.half_mse(&answers.prediction.preds),
                ));
                loss.n_context = Some(n);
                rows.push(loss);
                // The model's influence profile ∂ŷ/∂yⱼ (scalar labels), for `influence_cos`.
                let influence = if self.y_dim == 1 { contestant.influence(&prompts, layer)? } else { None };
                for c in self.candidates.at(layer, n) {
                    if let (Some(s_model), Some(s)) = (&influence, &c.extra.smoother) {
                        let cos = row_cosines(s_model.view(), s.view());
                        let value = cos.iter().sum::<f64>() / cos.len() as f64;
                        let mut m =
                            tag(Measurement::new(&task, c.learner.name(), c.learner.params(), "influence_cos", value)
                                .with_spec(&c.spec));
                        m.n_context = Some(n);
                        rows.push(m);
                    }
                    for (metric, value) in compare(&answers, &c.extra.answers) {
                        let mut m = tag(Measurement::new(&task, c.learner.name(), c.learner.params(), metric, value)
                            .with_spec(&c.spec));
                        m.n_context = Some(n);
                        rows.push(m);
                    }
                }
            }
            // The construction's statement about every token, against the GD and GD++ candidates
            // of this depth (at the largest n; only contestants with that token layout answer).
            for c in self.candidates.at(layer, n_max) {
                let Some((etas, gammas)) = gd_family_steps(c.learner.as_ref(), layer) else { continue };
                if let Some(r) = contestant.token_residual(&full, layer, &etas, &gammas)? {
                    let mut m = tag(Measurement::new(&task, c.learner.name(), c.learner.params(), "token_residual", r)
                        .with_spec(&c.spec));
                    m.n_context = Some(n_max);
                    rows.push(m);
                }
            }
            let readout = contestant.readout(layer, false); // predictions only
            let spread = permutation_spread(readout, &full, self.opts.orders, &mut self.order_rng)?;
            let mut m = tag(Measurement::new(&task, "model", Default::default(), "permutation_spread", spread));
            m.n_context = Some(n_max);
            rows.push(m);
        }
        Ok(rows)
    }
}
