//! Run configuration: what a (config, seed) → run directory depends on.
//!
//! A config is TOML with four tables, `[task]`, `[model]`, `[train]`, `[eval]`, every key
//! optional (defaults are the official von Oswald et al. 2023 settings, spec §1.4). Reading goes
//! raw (serde, unknown keys rejected) → [`RunConfig::resolve`] (derived defaults filled in, every
//! field checked), so a bad value is a one-line error naming the field and the allowed range.
//! The resolved config is what a run directory stores.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use icl_tasks::{Dims, Task, TaskConfig};

/// Size of a GPT-style model ([`crate::models::gpt`]; Garg et al.'s sizes are presets:
/// tiny 3/2/64, small 6/4/128, standard 12/8/256, [`crate::presets::garg_size`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GptConfig {
    pub layers: usize,
    pub heads: usize,
    /// Width of the residual stream (GPT-2's `n_embd`); a multiple of `heads`.
    pub width: usize,
}

impl Default for GptConfig {
    /// Garg et al.'s `standard` model.
    fn default() -> Self {
        Self { layers: 12, heads: 8, width: 256 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Names the run directory: runs/<name>/seed-<seed>.
    pub name: String,
    /// Seeds model initialisation and the training-data stream (any u64; TOML integers stop at
    /// 2⁶³ − 1, so larger seeds are written as strings).
    #[serde(with = "u64_in_toml")]
    pub seed: u64,
    pub task: TaskConfig,
    /// von Oswald et al.'s transformer (every run without a `[gpt]` table).
    #[serde(skip_serializing_if = "ModelConfig::is_default")]
    pub model: ModelConfig,
    /// The GPT-style model of Garg et al. 2022 / Akyürek et al. 2023 instead
    /// ([`crate::models::gpt`]); `[model]` must then be absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpt: Option<GptConfig>,
    /// Garg et al.'s curriculum (GPT-style runs only): inputs and prompts grow during training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curriculum: Option<Curriculum>,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

/// Garg et al. 2022's curriculum (their `conf/*.yaml` `curriculum`): training starts with
/// `dims_start` input dimensions and `points_start` points (context pairs + query) per prompt and
/// adds `dims_step` and `points_step` every `every` steps, up to the task's x_dim and
/// context_len + 1. A stage's prompts are the task at that dimension with the inputs padded by
/// zeros to x_dim (Garg zeroes the truncated coordinates of full-size inputs; for linear tasks
/// the two are the same distribution).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Curriculum {
    pub dims_start: usize,
    pub dims_step: usize,
    pub points_start: usize,
    pub points_step: usize,
    pub every: usize,
}

impl Default for Curriculum {
    /// Garg et al.'s setting for d = 20 (dims 5 → 20 by 1, points 11 → 41 by 2, every 2,000 steps).
    fn default() -> Self {
        Self { dims_start: 5, dims_step: 1, points_start: 11, points_step: 2, every: 2000 }
    }
}

impl Curriculum {
    /// (input dimensions, points per prompt) at training step `step` (0-based) for a task of
    /// `dims`.
    pub fn at(&self, step: usize, dims: Dims) -> (usize, usize) {
        let stage = step / self.every;
        let grow = |start: usize, by: usize, end: usize| start.saturating_add(by.saturating_mul(stage)).min(end);
        (
            grow(self.dims_start, self.dims_step, dims.x_dim),
            grow(self.points_start, self.points_step, dims.context_len + 1),
        )
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "run".into(),
            seed: 0,
            task: TaskConfig::default(),
            model: ModelConfig::default(),
            gpt: None,
            curriculum: None,
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

/// The transformer (von Oswald et al. 2023 `src/transformer.py`; spec §1.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Number of attention layers applied (K).
    pub layers: usize,
    /// One shared layer applied `layers` times (the official `deq=True`), or separate layers.
    pub recurrent: bool,
    pub heads: usize,
    /// Per-head query/key/value size; defaults to the token width d+o.
    pub key_size: Option<usize>,
    /// Softmax attention with 1/√key_size scaling instead of linear self-attention.
    pub softmax: bool,
    /// Softmax in the first layer only (the official `first_layer_sm`, Fig. 5).
    pub first_layer_softmax: bool,
    /// Token layout: `constructed` ((x_i, y_i) tokens) or `classic` (x_i and y_i as separate tokens).
    pub tokens: crate::layout::TokenLayout,
    /// Size of sinusoidal positional encodings concatenated to every token (0: none).
    pub pos_enc: usize,
    /// Pre-LayerNorm before attention (none in the first of separate layers, spec A.9) and MLP.
    pub layer_norm: bool,
    /// A GELU MLP of width 4·(d+o) after each attention block.
    pub mlp: bool,
    /// VarianceScaling scale of the truncated-normal initialisation; defaults to 0.002/layers.
    pub init_scale: Option<f64>,
    /// Clip the residual stream to [−c, c] after every layer (the official code uses 10 for K > 3).
    pub token_clip: Option<f64>,
    /// Map every token linearly (no bias) to this width before the first layer (the official
    /// `in_proj` with `emb_size`, Fig. 4); the residual stream then has this width and the
    /// prediction is still the negated last entry of the query token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed: Option<usize>,
    /// A learned feature map before the first layer: h ← h + MLP(h), GELU, hidden width 4·width,
    /// with biases (the official `input_mlp`, Fig. 4). After `embed` when both are set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub input_mlp: bool,
    /// Attention fixed to a construction and not trained, so that only the feature map learns:
    /// von Oswald et al.'s Fig. 4 baseline, a meta-learned MLP whose output layer takes one GD
    /// step in context. Needs `embed` or `input_mlp` (something to train).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_attention: Option<FixedAttention>,
}

/// A construction the attention is fixed to ([`ModelConfig::fixed_attention`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedAttention {
    /// `gd`: Proposition 1's layer, one GD step per layer on the last `o` entries of each token as
    /// targets and the other entries as features, from W₀ = 0.
    pub learner: String,
    /// The step size η (the official notebook: 0.1).
    pub eta: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            layers: 1,
            recurrent: true,
            heads: 1,
            key_size: None,
            softmax: false,
            first_layer_softmax: false,
            tokens: crate::layout::TokenLayout::Constructed,
            pos_enc: 0,
            layer_norm: false,
            mlp: false,
            init_scale: None,
            token_clip: None,
            embed: None,
            input_mlp: false,
            fixed_attention: None,
        }
    }
}

impl ModelConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Width of the residual stream: the layout's token width (or `embed`) plus the positional
    /// encoding.
    pub fn width(&self, dims: icl_tasks::Dims) -> usize {
        self.embed.unwrap_or(self.tokens.shape(dims).1) + self.pos_enc
    }

    /// Whether tokens pass through a learned feature map (`embed`, `input_mlp`) first.
    pub fn has_feature_map(&self) -> bool {
        self.embed.is_some() || self.input_mlp
    }

    /// How many distinct parameter layers the model has.
    pub fn param_layers(&self) -> usize {
        if self.recurrent {
            1
        } else {
            self.layers
        }
    }
}

/// Optimisation (spec §1.4: `optax.adamw(lr, b1=0.9, b2=0.98, wd=0)` after `clip_by_global_norm`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub steps: usize,
    /// Fresh tasks per step.
    pub batch: usize,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global-norm gradient clipping; defaults to 0.001 for layers ≤ 2 and 10 above (von Oswald),
    /// none (`inf`) for GPT-style runs (Garg).
    pub grad_clip: Option<f64>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads (and the fused engine's threads); tiny models run fastest on one.
    pub threads: usize,
    /// How a training step is computed: `fused` (the hand-written step of
    /// [`crate::fused_lsa`] for linear self-attention, or of [`crate::fused_gpt`] for GPT-style
    /// models, on the CPU), `libtorch` (autograd), or `auto` (fused where it applies, libtorch for
    /// GPT-style models; [`RunConfig::engine`] says which). The two agree to float
    /// rounding, not bit for bit, so a run's manifest records the engine that trained it.
    /// (Not written when `auto`, so configs from before the engine existed keep their hash.)
    #[serde(skip_serializing_if = "Engine::is_auto")]
    pub engine: Engine,
    /// Train on finitely many tasks (von Oswald et al. 2023, Figs. 15–16): the training prompts'
    /// hidden functions come from K fixed draws (stream [`icl_tasks::pool::POOL_STREAM`] of the
    /// run's seed), inputs stay fresh; evaluation stays on fresh tasks. Unset: a new task per prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_pool: Option<usize>,
    /// With `task_pool`: `fresh` (the default: only the hidden functions repeat) or `fixed` (the
    /// whole prompts repeat, inputs too — a fixed training set of K prompts, as the official
    /// code's `cycle_data`; any task).
    #[serde(skip_serializing_if = "PoolInputs::is_fresh")]
    pub pool_inputs: PoolInputs,
    /// Keep the weights of every evaluation step in `snapshots.safetensors` (tensor names
    /// prefixed `step-{step}/`), for measurements over training such as von Oswald et al.'s
    /// Fig. 4 alignment curves; listed in the run's manifest like its other files.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub snapshots: bool,
    /// Where training batches are drawn: `host` (the default: the task samples on the CPU, from
    /// the run's Rust RNG streams) or `device` (drawn by libtorch on the training device,
    /// [`crate::device_data`]: for GPU runs, where one CPU core sampling each batch limits the
    /// step; deterministic for a (config, seed) on one device, but other numbers than `host`).
    /// GPT-style runs on `gaussian_linear` for now.
    #[serde(skip_serializing_if = "DataPath::is_host")]
    pub data: DataPath,
}

/// Where training batches come from (see [`TrainConfig::data`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPath {
    #[default]
    Host,
    Device,
}

impl DataPath {
    fn is_host(&self) -> bool {
        *self == DataPath::Host
    }
}

/// What repeats in a task pool (see [`TrainConfig::pool_inputs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolInputs {
    #[default]
    Fresh,
    Fixed,
}

impl PoolInputs {
    fn is_fresh(&self) -> bool {
        *self == PoolInputs::Fresh
    }
}

/// The implementation of a training step (see [`TrainConfig::engine`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Auto,
    Libtorch,
    Fused,
}

impl Engine {
    fn is_auto(&self) -> bool {
        *self == Engine::Auto
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 5000,
            batch: 2048,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            grad_clip: None,
            device: "cpu".into(),
            threads: 1,
            engine: Engine::Auto,
            task_pool: None,
            pool_inputs: PoolInputs::Fresh,
            snapshots: false,
            data: DataPath::Host,
        }
    }
}

/// The fixed evaluation set and how often it is scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every this many steps (and after the last).
    pub every: usize,
    /// Tasks in the evaluation set (the official code: 10,000).
    pub tasks: usize,
    /// Seed of the evaluation set, fixed across runs so that runs compare.
    #[serde(with = "u64_in_toml")]
    pub seed: u64,
    /// Also compare with GD++ (GD with learned input preconditioning, von Oswald et al. A.10).
    pub gdpp: bool,
    /// Steps of the GD reference; defaults to the number of layers (Fig. 5 compares 2 layers with 1 step).
    pub gd_steps: Option<usize>,
    /// Adam steps fitting the references' hyperparameters (GD++, and GD with per-layer η for
    /// separate layers); the official code uses 1,000 (recurrent) and 30,000 (separate layers).
    pub fit_steps: usize,
    /// Adam learning rate and batch of that fit (deep models need a smaller rate and larger batch).
    pub fit_lr: f64,
    pub fit_batch: usize,
    /// How GD's constant η is tuned: `grid` — the official `scan_lrs` grid arange(0.001, 25, 0.1)
    /// on the evaluation set, as von Oswald et al.'s code does (it suits their x ~ U(−0.5, 0.5));
    /// `search` — a search that adapts to the data's scale, on fresh prompts from
    /// [`crate::rng::REFERENCE_FIT_SEED`], never the evaluation set. Default: `grid` for the
    /// `linear` task (their setting), `search` for every other task.
    pub gd_tuning: Option<GdTuning>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GdTuning {
    Grid,
    Search,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 100,
            tasks: 10_000,
            seed: 10,
            gdpp: false,
            gd_steps: None,
            fit_steps: 1000,
            fit_lr: 0.02,
            fit_batch: 512,
            gd_tuning: None,
        }
    }
}

/// A u64 in TOML, whose integers are i64: written as an integer up to 2⁶³ − 1 and as a string
/// above; read from either.
mod u64_in_toml {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(*value) {
            Ok(v) => s.serialize_i64(v),
            Err(_) => s.serialize_str(&value.to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct U64Visitor;
        impl serde::de::Visitor<'_> for U64Visitor {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer in 0..=18446744073709551615")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("must be an integer in 0..=18446744073709551615 (got {v})")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
                v.parse()
                    .map_err(|_| E::custom(format!("must be an integer in 0..=18446744073709551615 (got \"{v}\")")))
            }
        }
        d.deserialize_any(U64Visitor)
    }
}

/// A parser message on one line (TOML's can span several: "invalid table header\nduplicate key …").
pub(crate) fn one_line(message: &str) -> String {
    message.trim().lines().map(str::trim).collect::<Vec<_>>().join(": ")
}

/// Names the TOML key at byte `offset` as `table.key (line N)`, so that parse errors name the field.
fn locate(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(['[', ']']).trim());
    match (table, key.is_empty() || key.starts_with('[')) {
        (_, true) => format!("line {line_no}"),
        (Some(t), false) => format!("{t}.{key} (line {line_no})"),
        (None, false) => format!("{key} (line {line_no})"),
    }
}

fn check(ok: bool, field: &str, allowed: &str, got: impl std::fmt::Display) -> anyhow::Result<()> {
    if !ok {
        bail!("{field}: must be {allowed} (got {got})");
    }
    Ok(())
}

fn positive_finite(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

impl RunConfig {
    /// Parses TOML (all keys optional, unknown keys rejected) and resolves it.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        let raw: RunConfig = toml::from_str(text).map_err(|e| {
            let message = one_line(e.message());
            match e.span() {
                Some(span) => anyhow::anyhow!("{}: {message}", locate(text, span.start)),
                None => anyhow::anyhow!("{message}"),
            }
        })?;
        raw.resolve()
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serialises")
    }

    /// The task this config trains on (the config is resolved, so it builds).
    pub fn task(&self) -> Box<dyn Task> {
        icl_tasks::build(&self.task).expect("a resolved config's task builds")
    }

    /// The task the training prompts come from: [`Self::task`], or with `train.task_pool` set, that
    /// task with its hidden functions drawn from the run's fixed pool.
    pub fn training_task(&self) -> Box<dyn Task> {
        let task = self.task();
        match self.train.task_pool {
            None => task,
            Some(k) => match self.train.pool_inputs {
                PoolInputs::Fresh => task.pooled(k, self.seed).expect("a resolved config's task pool is checked"),
                PoolInputs::Fixed => {
                    Box::new(icl_tasks::PromptPool::new(task, k, &mut icl_tasks::pool::pool_rng(self.seed)))
                }
            },
        }
    }

    pub fn dims(&self) -> Dims {
        self.task().dims()
    }

    /// Width of the model's residual stream (d + o in the constructed layout).
    pub fn token_width(&self) -> usize {
        match &self.gpt {
            Some(g) => g.width,
            None => self.model.width(self.dims()),
        }
    }

    /// Number of applied layers, whichever the model family.
    pub fn layers(&self) -> usize {
        match &self.gpt {
            Some(g) => g.layers,
            None => self.model.layers,
        }
    }

    /// Checks the GPT-style model, its curriculum and the task it reads.
    fn resolve_gpt(&mut self, dims: Dims) -> anyhow::Result<()> {
        check(
            self.model.is_default(),
            "model",
            "absent in a run with a [gpt] table (the GPT-style model is sized by gpt.layers, gpt.heads, gpt.width)",
            "a [model] table",
        )?;
        let g = self.gpt.as_ref().expect("called for GPT-style runs");
        check((1..=1000).contains(&g.layers), "gpt.layers", "an integer in 1..=1000", g.layers)?;
        check((1..=64).contains(&g.heads), "gpt.heads", "an integer in 1..=64", g.heads)?;
        check(
            (1..=65_536).contains(&g.width) && g.width.is_multiple_of(g.heads),
            "gpt.width",
            "an integer in 1..=65536 divisible by gpt.heads",
            g.width,
        )?;
        check(dims.y_dim <= dims.x_dim, "task.y_dim", "at most task.x_dim for a GPT-style model", dims.y_dim)?;
        if let Some(c) = &self.curriculum {
            check(
                (1..=dims.x_dim).contains(&c.dims_start),
                "curriculum.dims_start",
                "in 1..=task.x_dim",
                c.dims_start,
            )?;
            let points = dims.context_len + 1;
            check(
                (1..=points).contains(&c.points_start),
                "curriculum.points_start",
                "in 1..=task.context_len + 1",
                c.points_start,
            )?;
            check(c.every >= 1, "curriculum.every", "an integer >= 1", c.every)?;
        }
        Ok(())
    }

    /// Fills derived defaults and checks every field.
    pub fn resolve(mut self) -> anyhow::Result<Self> {
        // The task checks its own keys; its resolved parameters (defaults filled in) are stored.
        let task = icl_tasks::build(&self.task)?;
        let dims = task.dims();
        self.task = task.config();
        check(
            !self.name.is_empty() && !self.name.contains(['/', '\\']) && self.name != "." && self.name != "..",
            "name",
            "a non-empty name without slashes, not `.` or `..`",
            &self.name,
        )?;
        let resolved = if self.gpt.is_some() {
            self.resolve_gpt(dims)?;
            self.resolve_train_eval(f64::INFINITY)?
        } else {
            check(self.curriculum.is_none(), "curriculum", "absent without a [gpt] table", "a [curriculum] table")?;
            self.resolve_vo2023(dims)?;
            let clip = if self.model.layers <= 2 { 0.001 } else { 10.0 };
            self.resolve_train_eval(clip)?
        };
        // Sizes that each pass their own check can still multiply to more memory than exists.
        resolved.memory().check()?;
        Ok(resolved)
    }

    /// Bytes of the model's activations on `batch` prompts of `n` context pairs, with or without
    /// a backward pass ([`crate::budget::activation_bytes`]).
    pub fn activation_memory(&self, batch: usize, n: usize, backward: bool) -> u128 {
        let dims = Dims { context_len: n, ..self.dims() };
        let (tokens, layers, heads, per_token, width) = match &self.gpt {
            Some(g) => (2 * (n + 1), g.layers, g.heads, 16, g.width),
            None => {
                let m = &self.model;
                let per_token = 6 + if m.mlp { 8 } else { 0 } + if m.input_mlp { 8 } else { 0 };
                (m.tokens.shape(dims).0, m.layers, m.heads, per_token, m.width(dims).max(m.key_size.unwrap_or(1)))
            }
        };
        crate::budget::activation_bytes(batch, tokens, width, layers, heads, per_token, backward)
    }

    /// Parameters of the model, counted from the config (the GPT-style model's read-in,
    /// positions and read-out included).
    pub fn parameter_count(&self) -> u128 {
        let dims = self.dims();
        let sq = |a: usize, b: usize| a as u128 * b as u128;
        match &self.gpt {
            Some(g) => {
                let positions = 2 * (dims.context_len + 1);
                sq(g.layers, 12 * g.width * g.width + 13 * g.width)
                    + sq(dims.x_dim + 1, g.width)
                    + sq(positions, g.width)
                    + sq(g.width + 1, 1)
            }
            None => {
                let m = &self.model;
                let (w, k, h) = (m.width(dims), m.key_size.unwrap_or(1), m.heads);
                let attention = sq(4 * w, h * k);
                let mlp = if m.mlp { sq(8 * w, w) } else { 0 };
                let norms = if m.layer_norm { 4 * w as u128 } else { 0 };
                let features = m.embed.map_or(0, |e| sq(self.model.tokens.shape(dims).1, e))
                    + if m.input_mlp { sq(8 * w, w) + 5 * w as u128 } else { 0 };
                m.param_layers() as u128 * (attention + mlp + norms) + features
            }
        }
    }

    /// What training and evaluating this config holds in memory at once (see [`crate::budget`]):
    /// the training batches in f64 and as f32 tokens (the data thread keeps up to five), the
    /// evaluation set and its tokens, parameters with gradients and Adam's moments (and the
    /// snapshots kept), the activations of a training step and of the evaluation, a fixed pool of
    /// training prompts, and the reference fit on the evaluation set.
    pub fn memory(&self) -> crate::budget::Budget {
        use crate::budget::prompt_bytes;
        let dims = self.dims();
        let n = dims.context_len;
        let (batch, tasks) = (self.train.batch, self.eval.tasks);
        let params = self.parameter_count();
        let evaluations = (self.train.steps / self.eval.every.max(1) + 2) as u128;
        // GPT-style runs evaluate in chunks of 1,024 prompts without gradients; von Oswald et al.'s
        // models evaluate the whole set with ∂ŷ/∂x_q (a backward pass).
        let eval_activations = match self.gpt {
            Some(_) => self.activation_memory(tasks.min(1024), n, false),
            None => self.activation_memory(tasks, n, true),
        };
        let mut b = crate::budget::Budget::new();
        b.add("train.batch (prompts in f64, five batches of f32 tokens)", prompt_bytes(batch, n, dims) * 7 / 2)
            .add("train.batch (activations of a training step)", self.activation_memory(batch, n, true))
            .add("eval.tasks (prompts in f64 and f32)", prompt_bytes(tasks, n, dims) * 3 / 2)
            .add("eval.tasks (activations of an evaluation)", eval_activations)
            .add(
                "eval.tasks (reference fit in each prompt's eigenbasis)",
                tasks as u128 * (dims.x_dim as u128 * (dims.x_dim + n) as u128 + n as u128) * 8 * 4,
            )
            .add("model (parameters, gradients, Adam's moments)", params * 4 * 5);
        if self.train.snapshots {
            b.add("train.snapshots (the weights at every evaluation)", params * 4 * evaluations);
        }
        if let (Some(k), PoolInputs::Fixed) = (self.train.task_pool, self.train.pool_inputs) {
            b.add("train.task_pool (fixed prompts)", prompt_bytes(k, n, dims));
        }
        b
    }

    /// Checks von Oswald et al.'s transformer and fills its derived defaults.
    fn resolve_vo2023(&mut self, dims: Dims) -> anyhow::Result<()> {
        let m = &mut self.model;
        check((1..=1000).contains(&m.layers), "model.layers", "an integer in 1..=1000", m.layers)?;
        check((1..=64).contains(&m.heads), "model.heads", "an integer in 1..=64", m.heads)?;
        let width = m.width(dims);
        check(m.pos_enc <= 4096, "model.pos_enc", "an integer in 0..=4096", m.pos_enc)?;
        if m.tokens == crate::layout::TokenLayout::Classic {
            check(
                dims.y_dim <= dims.x_dim,
                "task.y_dim",
                "at most task.x_dim with model.tokens = \"classic\"",
                dims.y_dim,
            )?;
        }
        let defaulted = m.key_size.is_none();
        let key_size = *m.key_size.get_or_insert(width);
        if defaulted {
            check(
                (1..=4096).contains(&key_size),
                "model.key_size",
                "an integer in 1..=4096: its default is the token width (task.x_dim + task.y_dim, or model.embed); make the task smaller, or set model.embed or model.key_size",
                key_size,
            )?;
        }
        check((1..=4096).contains(&key_size), "model.key_size", "an integer in 1..=4096", key_size)?;
        let init = *m.init_scale.get_or_insert(0.002 / m.layers as f64);
        check(init.is_finite() && init >= 0.0, "model.init_scale", "a finite number >= 0", init)?;
        if let Some(c) = m.token_clip {
            check(positive_finite(c), "model.token_clip", "a finite number > 0", c)?;
        }
        if let Some(e) = m.embed {
            check((dims.y_dim + 1..=4096).contains(&e), "model.embed", "an integer in task.y_dim+1..=4096", e)?;
        }
        if let Some(f) = &m.fixed_attention {
            check(f.learner == "gd", "model.fixed_attention.learner", "\"gd\"", &f.learner)?;
            check(positive_finite(f.eta), "model.fixed_attention.eta", "a finite number > 0", f.eta)?;
            check(
                m.has_feature_map(),
                "model.fixed_attention",
                "set only with model.embed or model.input_mlp (otherwise nothing is trained)",
                "set without either",
            )?;
            let plain = m.heads == 1
                && !m.softmax
                && !m.first_layer_softmax
                && !m.layer_norm
                && !m.mlp
                && m.pos_enc == 0
                && m.tokens == crate::layout::TokenLayout::Constructed;
            check(
                plain,
                "model.fixed_attention",
                "set only for one linear attention head in the constructed layout, without LayerNorm, MLP blocks or positional encodings",
                "set for another model",
            )?;
            check(key_size == width, "model.key_size", "the residual width with model.fixed_attention", key_size)?;
        }
        Ok(())
    }

    /// Checks training and evaluation settings; `default_clip` is the family's gradient clipping.
    /// What in this model the fused engine (`crate::fused_lsa`: linear self-attention only)
    /// cannot train, if anything.
    pub fn fused_unsupported(&self) -> Option<&'static str> {
        let m = &self.model;
        let unsupported = [
            (m.softmax, "softmax attention"),
            (m.first_layer_softmax, "softmax attention"),
            (m.layer_norm, "LayerNorm"),
            (m.mlp, "MLP blocks"),
            (m.pos_enc > 0, "positional encodings"),
            (m.has_feature_map(), "a learned feature map before attention"),
            (m.fixed_attention.is_some(), "fixed attention"),
            (self.gpt.is_some(), "GPT-style models"),
        ];
        unsupported.iter().find(|(on, _)| *on).map(|(_, what)| *what)
    }

    /// The engine that trains this (resolved) config: `train.engine`, with `auto` decided (for
    /// GPT-style models `auto` is libtorch: their fused step, [`crate::fused_gpt`], is opt-in).
    pub fn engine(&self) -> Engine {
        match self.train.engine {
            Engine::Auto if self.train.device == "cpu" && self.fused_unsupported().is_none() => Engine::Fused,
            Engine::Auto => Engine::Libtorch,
            explicit => explicit,
        }
    }

    fn resolve_train_eval(mut self, default_clip: f64) -> anyhow::Result<Self> {
        let t = &mut self.train;
        check((1..=10_000_000).contains(&t.steps), "train.steps", "an integer in 1..=10000000", t.steps)?;
        check((1..=1_000_000).contains(&t.batch), "train.batch", "an integer in 1..=1000000", t.batch)?;
        check(positive_finite(t.lr), "train.lr", "a finite number > 0", t.lr)?;
        check((0.0..1.0).contains(&t.beta1), "train.beta1", "in [0, 1)", t.beta1)?;
        check((0.0..1.0).contains(&t.beta2), "train.beta2", "in [0, 1)", t.beta2)?;
        check(positive_finite(t.eps), "train.eps", "a finite number > 0", t.eps)?;
        let clip = *t.grad_clip.get_or_insert(default_clip);
        check(clip > 0.0, "train.grad_clip", "a number > 0 (inf: no clipping)", clip)?;
        crate::device::parse_device(&t.device).context("train.device")?;
        check((1..=1024).contains(&t.threads), "train.threads", "an integer in 1..=1024", t.threads)?;
        if let Some(k) = t.task_pool {
            check((1..=1 << 24).contains(&k), "train.task_pool", "an integer in 1..=16777216", k)?;
            check(
                self.gpt.is_none() || self.curriculum.is_none(),
                "train.task_pool",
                "unset for GPT-style runs with a curriculum (each stage redraws its tasks)",
                k,
            )?;
            if self.train.pool_inputs == PoolInputs::Fixed {
                check(
                    k <= 1 << 20,
                    "train.task_pool",
                    "at most 1048576 with pool_inputs = \"fixed\" (stored prompts)",
                    k,
                )?;
            } else {
                self.task().pooled(1, 0)?; // the task must support a pool of hidden functions
            }
        } else if self.train.pool_inputs == PoolInputs::Fixed {
            anyhow::bail!("train.pool_inputs: \"fixed\" needs train.task_pool (the number of prompts to repeat)");
        }
        if self.train.snapshots {
            check(self.gpt.is_none(), "train.snapshots", "false for GPT-style runs (not kept there yet)", true)?;
            let evals = self.train.steps / self.eval.every.max(1) + 2;
            check(
                evals <= 1000,
                "train.snapshots",
                "true only with at most 1000 evaluations (raise eval.every)",
                evals,
            )?;
        }
        if self.train.engine == Engine::Fused {
            // GPT-style models have their own fused step (crate::fused_gpt), taken only when asked.
            if let Some(what) = self.fused_unsupported().filter(|_| self.gpt.is_none()) {
                anyhow::bail!("train.engine: \"fused\" cannot train this model: the fused engine trains linear self-attention only (this model has {what}); use \"auto\" or \"libtorch\"");
            }
            check(self.train.device == "cpu", "train.engine", "\"auto\" or \"libtorch\" off the CPU", "fused")?;
        }
        if self.train.data == DataPath::Device {
            check(
                self.gpt.is_some(),
                "train.data",
                "\"host\" for this model (device-side batches exist for GPT-style runs)",
                "device",
            )?;
            check(self.train.task_pool.is_none(), "train.data", "\"host\" with train.task_pool", "device")?;
            crate::device_data::GaussianLinearSampler::for_task(&self.task).context("train.data")?;
        }
        let task_name = self.task.name.clone();
        let e = &mut self.eval;
        e.gd_tuning.get_or_insert(if task_name == "linear" { GdTuning::Grid } else { GdTuning::Search });
        check(e.every >= 1, "eval.every", "an integer >= 1", e.every)?;
        check((1..=10_000_000).contains(&e.tasks), "eval.tasks", "an integer in 1..=10000000", e.tasks)?;
        check((1..=1_000_000).contains(&e.fit_steps), "eval.fit_steps", "an integer in 1..=1000000", e.fit_steps)?;
        check(positive_finite(e.fit_lr), "eval.fit_lr", "a finite number > 0", e.fit_lr)?;
        check((1..=1_000_000).contains(&e.fit_batch), "eval.fit_batch", "an integer in 1..=1000000", e.fit_batch)?;
        if let Some(k) = e.gd_steps {
            check((1..=1000).contains(&k), "eval.gd_steps", "an integer in 1..=1000", k)?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_settings() {
        let c = RunConfig::from_toml_str("").unwrap();
        assert_eq!(c.train.grad_clip, Some(0.001));
        assert_eq!(c.model.init_scale, Some(0.002));
        assert_eq!(c.model.key_size, Some(11));
        let deep = RunConfig::from_toml_str("[model]\nlayers = 4").unwrap();
        assert_eq!(deep.train.grad_clip, Some(10.0));
        assert_eq!(deep.model.init_scale, Some(0.0005));
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = RunConfig::preset("vo2023-fig2").unwrap();
        assert_eq!(RunConfig::from_toml_str(&c.to_toml()).unwrap(), c);
    }
}
