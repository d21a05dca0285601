//! Synthetic in-context learning tasks for icl-lab.
//!
//! A [`Task`] samples a batch of prompts from a seeded RNG: n context pairs (x_i, y_i), a query
//! x_q and its target y_q, and — where the task has one — the hidden function (the teacher w of a
//! linear task) so that probes can target it. Any number of context pairs can be drawn, so one
//! trained model can be evaluated at every n. A task owns its parameters (a typed struct, parsed
//! and checked from the `[task]` table of a run config), names the reference learners that make
//! sense for it and the out-of-distribution shifts it supports. Tasks know nothing of tokens,
//! models or learners: the model crate lays prompts out as tokens, the probes crate runs learners.
//!
//! Adding a task (after Garg et al. 2022, `tasks.py`): write `src/<name>.rs` with a parameter
//! struct and a struct implementing [`Task`], and add one line to [`registry::REGISTRY`].

pub mod bayes;
pub mod decision_tree;
pub mod gaussian_linear;
pub mod linear;
pub mod mixture;
pub mod params;
pub mod pool;
pub mod prompt_pool;
pub mod registry;
pub mod relu_net;
pub mod sine;
pub mod sparse_linear;

use ndarray::{s, Array2, Array3};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use params::{LearnerSpec, Params};
pub use prompt_pool::PromptPool;
pub use registry::{build, names, register, TaskConfig, TaskEntry};

/// The RNG every task samples from; seeded with `rand::SeedableRng::seed_from_u64`.
pub type TaskRng = ChaCha8Rng;

/// The most context pairs one prompt may hold (sampling more is an error, not an abort).
pub const MAX_CONTEXT: usize = 100_000;

/// A batch of prompts, in f64 so that reference learners can be exact.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompts {
    /// Context inputs, (B, n, d).
    pub xs: Array3<f64>,
    /// Context labels, (B, n, o).
    pub ys: Array3<f64>,
    /// Query inputs, (B, d).
    pub xq: Array2<f64>,
    /// Query targets, (B, o).
    pub yq: Array2<f64>,
    /// The hidden linear function of each prompt, (B, o, d) with y = W x (+ noise), for tasks that
    /// have one (`None` for trees and networks).
    pub w: Option<Array3<f64>>,
}

impl Prompts {
    pub fn batch(&self) -> usize {
        self.xs.shape()[0]
    }
    pub fn context_len(&self) -> usize {
        self.xs.shape()[1]
    }
    pub fn x_dim(&self) -> usize {
        self.xs.shape()[2]
    }
    pub fn y_dim(&self) -> usize {
        self.ys.shape()[2]
    }

    /// The same prompts with only their first `n` context pairs (same queries and hidden
    /// functions): the prompts a learner sees after n in-context examples.
    pub fn prefix(&self, n: usize) -> Prompts {
        assert!(n <= self.context_len(), "prefix of {n} pairs from prompts of {}", self.context_len());
        Prompts {
            xs: self.xs.slice(s![.., ..n, ..]).to_owned(),
            ys: self.ys.slice(s![.., ..n, ..]).to_owned(),
            xq: self.xq.clone(),
            yq: self.yq.clone(),
            w: self.w.clone(),
        }
    }

    /// Prompts `range` of the batch (e.g. to process a batch in chunks).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Prompts {
        Prompts {
            xs: self.xs.slice(s![range.clone(), .., ..]).to_owned(),
            ys: self.ys.slice(s![range.clone(), .., ..]).to_owned(),
            xq: self.xq.slice(s![range.clone(), ..]).to_owned(),
            yq: self.yq.slice(s![range.clone(), ..]).to_owned(),
            w: self.w.as_ref().map(|w| w.slice(s![range, .., ..]).to_owned()),
        }
    }

    /// Every prompt's context asked at each of `queries` (K, d): B·K prompts, prompt b·K + k has
    /// context b and query k. Targets are y = W x_q where the hidden W is known, else NaN. Used
    /// to read a learner's implicit linear function off its predictions (Akyürek et al. 2023).
    pub fn with_queries(&self, queries: &Array2<f64>) -> Prompts {
        let (b, k, d, o) = (self.batch(), queries.nrows(), self.x_dim(), self.y_dim());
        assert_eq!(queries.ncols(), d, "queries must be (K, d) with d = {d}");
        let repeat3 = |a: &Array3<f64>| {
            let shape = (b, k, a.shape()[1], a.shape()[2]);
            // (B, n, ·) → (B, K, n, ·) → (B·K, n, ·)
            let expanded = a.view().insert_axis(ndarray::Axis(1)).broadcast(shape).expect("broadcast").to_owned();
            expanded.into_shape_with_order((b * k, shape.2, shape.3)).expect("contiguous")
        };
        let xq = Array2::from_shape_fn((b * k, d), |(i, j)| queries[[i % k, j]]);
        let w = self.w.as_ref().map(repeat3);
        let yq = match &w {
            Some(w) => {
                Array2::from_shape_fn((b * k, o), |(i, r)| (0..d).map(|j| w[[i, r, j]] * xq[[i, j]]).sum::<f64>())
            }
            None => Array2::from_elem((b * k, o), f64::NAN),
        };
        Prompts { xs: repeat3(&self.xs), ys: repeat3(&self.ys), xq, yq, w }
    }

    /// Per prompt, ‖ŷ − y_q‖² summed over outputs, (B).
    pub fn squared_errors(&self, predictions: &Array2<f64>) -> Vec<f64> {
        assert_eq!(predictions.dim(), self.yq.dim(), "predictions must be (B, o)");
        (predictions - &self.yq).outer_iter().map(|r| r.dot(&r)).collect()
    }

    /// ½·mean over prompts of ‖ŷ − y_q‖², the loss every von Oswald et al. figure reports
    /// (their `compute_loss`).
    pub fn half_mse(&self, predictions: &Array2<f64>) -> f64 {
        0.5 * self.squared_errors(predictions).iter().sum::<f64>() / self.batch() as f64
    }
}

/// Sizes of a task's prompts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    /// Input dimension d.
    pub x_dim: usize,
    /// Output dimension o.
    pub y_dim: usize,
    /// Number of context pairs N a prompt has by default (the training length).
    pub context_len: usize,
}

/// A kind of distribution shift between training and evaluation prompts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftKind {
    /// Inputs (context and query) multiplied by α.
    InputScale,
    /// The hidden function's weights multiplied by α.
    TeacherScale,
    /// Gaussian label noise of standard deviation α on the context labels.
    LabelNoise,
    /// Input covariance with condition number α (eigenvalues geometric from 1 to 1/α, rescaled
    /// to the training trace).
    ConditionNumber,
    /// With value 1, all context inputs of a prompt share one random orthant (every coordinate's
    /// sign drawn once per prompt); the query is drawn as usual, so it mostly lies in another
    /// (Garg et al. 2022 §4, `random_quadrants`). Value 0 is the training distribution.
    ContextOrthant,
    /// With value 1, the query input is one of the context inputs, picked uniformly (Garg et al.
    /// 2022 §4, `overlapping_train_test`); its label is noise-free. Value 0 is the training
    /// distribution.
    QueryFromContext,
}

impl ShiftKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [ShiftKind; 6] = [
        ShiftKind::InputScale,
        ShiftKind::TeacherScale,
        ShiftKind::LabelNoise,
        ShiftKind::ConditionNumber,
        ShiftKind::ContextOrthant,
        ShiftKind::QueryFromContext,
    ];

    /// The name configs and the command line use (`input_scale`, …), as serde spells it.
    pub fn name(self) -> &'static str {
        match self {
            ShiftKind::InputScale => "input_scale",
            ShiftKind::TeacherScale => "teacher_scale",
            ShiftKind::LabelNoise => "label_noise",
            ShiftKind::ConditionNumber => "condition_number",
            ShiftKind::ContextOrthant => "context_orthant",
            ShiftKind::QueryFromContext => "query_from_context",
        }
    }

    /// The kind named `name` ([`ShiftKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn label(self) -> &'static str {
        match self {
            ShiftKind::InputScale => "input scale",
            ShiftKind::TeacherScale => "teacher scale",
            ShiftKind::LabelNoise => "label noise σ",
            ShiftKind::ConditionNumber => "condition number κ",
            ShiftKind::ContextOrthant => "context in one orthant",
            ShiftKind::QueryFromContext => "query = a context input",
        }
    }

    /// Whether the shift is on or off (value 1 or 0) rather than a magnitude.
    pub fn is_switch(self) -> bool {
        matches!(self, ShiftKind::ContextOrthant | ShiftKind::QueryFromContext)
    }

    /// Whether the first n pairs of a shifted prompt (with its query) are a shifted prompt with n
    /// pairs. Not for `QueryFromContext`: its query is one of the prompt's own context inputs,
    /// so a learning curve samples each n afresh.
    pub fn prefix_consistent(self) -> bool {
        self != ShiftKind::QueryFromContext
    }
}

#[cfg(test)]
mod shift_name_tests {
    use super::ShiftKind;

    #[test]
    fn shift_names_are_serdes() {
        for kind in ShiftKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
            assert_eq!(ShiftKind::from_name(kind.name()), Some(kind));
        }
    }
}

/// One shifted evaluation distribution: a kind and its value (the training distribution has the
/// kind's `training_value`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    pub kind: ShiftKind,
    pub value: f64,
}

impl Shift {
    /// `KIND=VALUE` as the command line and the Python module write it (`label_noise=0.5`); the
    /// error is one line naming `--shift`. Whether a task has the shift is [`Task::shifted`]'s to say.
    pub fn parse(text: &str) -> Result<Shift, String> {
        let (k, v) = text.split_once('=').ok_or_else(|| format!("--shift: `{text}` is not KIND=VALUE"))?;
        let kind = ShiftKind::from_name(k.trim()).ok_or_else(|| {
            let known: Vec<&str> = ShiftKind::ALL.iter().map(|k| k.name()).collect();
            format!("--shift: unknown kind `{k}` (known: {})", known.join(", "))
        })?;
        let value: f64 = v.trim().parse().map_err(|_| format!("--shift: `{v}` is not a number"))?;
        if !value.is_finite() {
            return Err(format!("--shift: `{v}` is not a finite number"));
        }
        Ok(Shift { kind, value })
    }
}

/// A shift a task supports, with the values an evaluation sweeps by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftSweep {
    pub kind: ShiftKind,
    /// The value that leaves the task unchanged.
    pub training_value: f64,
    pub values: Vec<f64>,
}

/// A family of in-context learning problems.
pub trait Task: Send + Sync {
    /// The registry name.
    fn name(&self) -> &'static str;
    /// The task's resolved parameters (every default filled in), as written to a run's config.
    fn params(&self) -> Params;
    fn dims(&self) -> Dims;
    /// Samples `batch` independent prompts of `n_context` pairs each (each with its own hidden
    /// function). `n_context` ≤ [`MAX_CONTEXT`].
    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n_context: usize) -> Prompts;
    /// Samples `batch` prompts of the task's own context length.
    fn sample(&self, rng: &mut TaskRng, batch: usize) -> Prompts {
        self.sample_n(rng, batch, self.dims().context_len)
    }
    /// Expected ‖y_q‖² (summed over outputs): the error of the zero predictor, by which
    /// normalised errors are divided (Garg et al.'s ÷d for linear, ÷k for sparse, ÷1 for trees).
    fn zero_error(&self) -> f64;
    /// The reference learners that make sense for this task, with their fixed settings.
    fn learners(&self) -> Vec<LearnerSpec>;
    /// The distribution shifts this task supports, with default sweeps.
    fn shifts(&self) -> Vec<ShiftSweep>;
    /// This task under `shift`; an error for a kind it does not support. A pooled task's shifted
    /// version draws its hidden functions afresh (shifts are for evaluation).
    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError>;

    /// This task trained on finitely many tasks (von Oswald et al. 2023, Figs. 15–16; Raventós
    /// et al. 2023): `size` hidden functions drawn once from [`pool::pool_rng`]`(pool_seed)`, each
    /// prompt taking one of them uniformly, with fresh inputs. A pooled task lists the posterior
    /// mean over its pool (`dmmse`) among its learners where its noise model makes that the Bayes
    /// predictor. An error for a task that does not support it.
    fn pooled(&self, size: usize, pool_seed: u64) -> Result<Box<dyn Task>, TaskError> {
        let _ = pool_seed;
        Err(TaskError::NoPool { task: self.name(), size })
    }

    /// The config that rebuilds this task.
    fn config(&self) -> TaskConfig {
        TaskConfig { name: self.name().to_string(), params: self.params() }
    }
}

/// A task configuration that cannot be used, naming the field and the allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaskError {
    #[error("task.name: unknown task `{0}` (known: {1})")]
    Unknown(String, String),
    #[error("task.{field}: {message} (got {got})")]
    Invalid { field: String, message: String, got: String },
    #[error("task.{key}: unknown key for task `{task}` ({expected})")]
    UnknownKey { key: String, task: &'static str, expected: String },
    #[error("train.task_pool: task `{task}` cannot draw its hidden functions from a fixed pool (got {size}; tasks that can: linear, gaussian_linear)")]
    NoPool { task: &'static str, size: usize },
    #[error("task `{task}` has no shift `{}` (it has: {have})", kind.name())]
    UnsupportedShift { task: &'static str, kind: ShiftKind, have: String },
}

impl TaskError {
    pub fn invalid(field: &str, message: &str, got: impl std::fmt::Display) -> Self {
        TaskError::Invalid { field: field.into(), message: message.into(), got: got.to_string() }
    }

    /// The error for a shift `task` does not list in its [`Task::shifts`].
    pub fn unsupported_shift(task: &dyn Task, kind: ShiftKind) -> Self {
        let have: Vec<String> = task.shifts().iter().map(|s| s.kind.name().to_string()).collect();
        TaskError::UnsupportedShift { task: task.name(), kind, have: have.join(", ") }
    }
}

/// Checks a count against an allowed range, naming the field.
pub(crate) fn check_count(field: &str, value: usize, range: std::ops::RangeInclusive<usize>) -> Result<(), TaskError> {
    if range.contains(&value) {
        Ok(())
    } else {
        let message = format!("must be an integer in {}..={}", range.start(), range.end());
        Err(TaskError::invalid(field, &message, value))
    }
}

/// The largest value a task's real-valued setting (a scale, a noise level, a condition number)
/// may take: beyond it squared errors and XᵀX overflow f64 or lose every digit, so results would
/// be NaN or LAPACK failures rather than numbers.
pub const MAX_REAL: f64 = 1e6;

/// Checks a real number is finite, ≥ `min` (or > `min` when `strict`) and at most [`MAX_REAL`].
pub(crate) fn check_real(field: &str, value: f64, min: f64, strict: bool) -> Result<(), TaskError> {
    let ok = value.is_finite() && value <= MAX_REAL && if strict { value > min } else { value >= min };
    if ok {
        Ok(())
    } else {
        let message = format!("must be a number {} {min} and at most {MAX_REAL:e}", if strict { ">" } else { ">=" });
        let shown = if value.is_finite() && value.abs() >= 1e7 { format!("{value:e}") } else { value.to_string() };
        Err(TaskError::invalid(field, &message, shown))
    }
}

/// Rejects prompt sizes whose buffers would not fit in memory, before any allocation.
pub(crate) fn check_sample_size(batch: usize, n_context: usize, width: usize) {
    assert!(n_context <= MAX_CONTEXT, "n_context {n_context} exceeds {MAX_CONTEXT}");
    let elements = batch.saturating_mul(n_context.saturating_add(1)).saturating_mul(width);
    assert!(elements <= 1 << 34, "a batch of {batch} prompts × {n_context} pairs × width {width} is too large");
}

/// x·y for two slices of the same length.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The linear weights (d) of a hidden function, for tasks that have them.
pub(crate) type WeightsOf<'a, F> = &'a dyn Fn(&F) -> Vec<f64>;

/// Garg et al.'s scalings of the Gaussian-input tasks: ⅓, ½, 1, 2, 3.
pub(crate) const GARG_SCALES: [f64; 5] = [1.0 / 3.0, 0.5, 1.0, 2.0, 3.0];

/// The sweeps every Gaussian-input task of Garg et al. has: input scale and label noise (the
/// training noise level is `noise_std`).
pub(crate) fn gaussian_input_shifts(noise_std: f64) -> Vec<ShiftSweep> {
    vec![
        ShiftSweep { kind: ShiftKind::InputScale, training_value: 1.0, values: GARG_SCALES.to_vec() },
        ShiftSweep { kind: ShiftKind::LabelNoise, training_value: noise_std, values: vec![0.0, 0.1, 0.5, 1.0] },
    ]
}

/// Prompts with one output whose inputs (context and query) are N(0, I)·`input_scale` (Garg et
/// al.'s `GaussianSampler`). Per prompt, in this order: `draw` picks the hidden function, the n
/// context inputs and the query input are drawn, each context label is f(xᵢ) plus N(0, σ²) noise
/// (drawn only when σ = `noise_std` > 0), and the query's label is f(x_q). `weights` gives the
/// function's d linear weights for tasks that have them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_gaussian_inputs<F>(
    rng: &mut TaskRng,
    (batch, n, d): (usize, usize, usize),
    input_scale: f64,
    noise_std: f64,
    mut draw: impl FnMut(&mut TaskRng) -> F,
    label: impl Fn(&F, &[f64]) -> f64,
    weights: Option<WeightsOf<F>>,
) -> Prompts {
    use rand::Rng;
    use rand_distr::StandardNormal;
    check_sample_size(batch, n, d + 1);
    let mut xs = vec![0.0; batch * n * d];
    let mut ys = vec![0.0; batch * n];
    let mut xq = vec![0.0; batch * d];
    let mut yq = vec![0.0; batch];
    let mut ws = weights.map(|_| Vec::with_capacity(batch * d));
    for b in 0..batch {
        let f = draw(rng);
        let xs_b = &mut xs[b * n * d..(b + 1) * n * d];
        xs_b.iter_mut().for_each(|v| *v = input_scale * rng.sample::<f64, _>(StandardNormal));
        let xq_b = &mut xq[b * d..(b + 1) * d];
        xq_b.iter_mut().for_each(|v| *v = input_scale * rng.sample::<f64, _>(StandardNormal));
        for (i, x_i) in xs_b.chunks_exact(d).enumerate() {
            let noise = if noise_std > 0.0 { noise_std * rng.sample::<f64, _>(StandardNormal) } else { 0.0 };
            ys[b * n + i] = label(&f, x_i) + noise;
        }
        yq[b] = label(&f, xq_b);
        if let (Some(ws), Some(w)) = (ws.as_mut(), weights) {
            ws.extend(w(&f));
        }
    }
    prompts_from((batch, n, d, 1), xs, ys, xq, yq, ws)
}

/// Replays u64 words drawn in bulk (`rng.fill`) to a distribution that takes exactly one
/// `next_u64` per value (the float `Uniform`): it sees the words the stream would have given it
/// draw by draw, in the same order, so the values are identical. Anything else is refused.
pub(crate) struct Replay<'a> {
    words: std::slice::Iter<'a, u64>,
}

impl<'a> Replay<'a> {
    pub(crate) fn new(words: &'a [u64]) -> Self {
        Self { words: words.iter() }
    }
}

impl rand::RngCore for Replay<'_> {
    fn next_u64(&mut self) -> u64 {
        *self.words.next().expect("a replayed draw asked for more words than were drawn")
    }
    fn next_u32(&mut self) -> u32 {
        unreachable!("replayed draws take whole u64 words")
    }
    fn fill_bytes(&mut self, _: &mut [u8]) {
        unreachable!("replayed draws take whole u64 words")
    }
}

/// Builds [`Prompts`] from flat row-major buffers (xs (B, n, d), ys (B, n, o), xq (B, d), yq (B, o)).
pub(crate) fn prompts_from(
    (batch, n, d, o): (usize, usize, usize, usize),
    xs: Vec<f64>,
    ys: Vec<f64>,
    xq: Vec<f64>,
    yq: Vec<f64>,
    w: Option<Vec<f64>>,
) -> Prompts {
    Prompts {
        xs: Array3::from_shape_vec((batch, n, d), xs).expect("sizes match"),
        ys: Array3::from_shape_vec((batch, n, o), ys).expect("sizes match"),
        xq: Array2::from_shape_vec((batch, d), xq).expect("sizes match"),
        yq: Array2::from_shape_vec((batch, o), yq).expect("sizes match"),
        w: w.map(|w| Array3::from_shape_vec((batch, o, d), w).expect("sizes match")),
    }
}
