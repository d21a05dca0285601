//! `icl-lab interventions`: the four intervention protocols of
//! ../shared/reference/interventions-and-bayes.md §3 as measurement rows, for every model × seed ×
//! layer × n, with each model's untrained twin and control-task models beside it. The model side
//! runs through the activation cache ([`crate::interventions`]); the learner side is the token
//! recursion and the smoothers of [`icl_probes::interventions`].
//!
//! - `P1` knockout: layer l skipped vs the learner with step l removed (`spd_vs_knocked_learner`),
//!   vs the intact learner (`spd_vs_intact_learner`), and the loss change;
//! - `P2:y` / `P2:all` iterate interchange (von Oswald et al.'s token layout): the context tokens'
//!   y (or all) channels after layer l from source prompt B into base prompt A, vs the learner's
//!   counterfactual (`spd_vs_counterfactual`) and the controls "nothing happened"
//!   (`spd_vs_base_clean`) and "everything copied" (`spd_vs_source_clean`);
//! - `P3` activation patching at the largest n: the fraction of the loss recovered
//!   (`recovered`) per hook row (`layer` 0: the input tokens, l: after layer l) and token
//!   `position`, for the model and, where it has a token-level form, the GD construction;
//! - `P4` influence profiles: the model's ∂ŷ/∂yⱼ read out after each layer against each
//!   linear-in-y candidate's smoother (`influence_cos`, `influence_rel_dist`).
//!
//! Beside them, without a protocol, each model's output is compared with each candidate by SPD/d
//! (`spd`, as in `icl-lab tournament`): the correlational verdict the interventions test.
//! Candidates are fitted per n on tuning prompts separate from the evaluation prompts; a
//! candidate whose spec sets `steps` runs as many steps as the layer (P1 and P2 use the model's
//! depth). Values are means over prompts with a 90% bootstrap interval.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};
use tch::Kind;

use icl_probes::contest::{CandidateGrid, Skips};
use icl_probes::interventions::{linear_smoother, row_cosines, row_relative_distances, Channels, Recursion, Smoother};
use icl_probes::learner::Learner;
use icl_probes::measure::{bootstrap_mean, mean_min_max, Measurement};
use icl_probes::tournament::{rank, Ranking};
use icl_tasks::{LearnerSpec, Prompts, Task, TaskConfig};

use crate::interventions as iv;
use crate::models::Model;
use crate::rng::seeded_rng;
use crate::tournament::{Entrant, LoadedEntrant, Role};

/// RNG streams of the protocols' seed: the evaluation (base) and tuning prompts are the
/// tournament's streams, so that `spd` rows match `icl-lab tournament`'s on the same seed and
/// prompt counts; the source prompts of P2 and the corrupting tasks of P3 are their own.
const EVAL_STREAM: u64 = 0;
const TUNING_STREAM: u64 = 1;
const SOURCE_STREAM: u64 = 4;

/// The protocols, as the rows' `protocol` field names them.
pub const PROTOCOLS: [&str; 5] = ["P1", "P2:y", "P2:all", "P3", "P4"];

/// How the protocols are measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProtocolOptions {
    /// Evaluation prompts per n (P2's source prompts and P3's corruptions are as many).
    pub prompts: usize,
    /// Prompts the candidates are fitted on, per n.
    pub tuning_prompts: usize,
    /// The numbers of in-context examples (P3 runs at the largest).
    pub n_values: Vec<usize>,
    pub seed: u64,
    /// Bootstrap resamples of each row's 90% interval.
    pub resamples: usize,
}

impl ProtocolOptions {
    pub fn for_task(task: &dyn Task) -> Self {
        let n = task.dims().context_len;
        Self { prompts: 256, tuning_prompts: 1024, n_values: vec![n], seed: 0, resamples: 1000 }
    }
}

/// What `icl-lab interventions` writes to `reports/<name>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterventionsReport {
    pub name: String,
    pub task: TaskConfig,
    pub options: ProtocolOptions,
    pub entrants: Vec<Entrant>,
    /// The candidate learners as specified (a spec with `steps` runs `steps = layer`).
    pub learners: Vec<LearnerSpec>,
    /// Candidates or protocols left out somewhere, with why.
    pub skipped: Vec<String>,
    pub measurements: Vec<Measurement>,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub preface: String,
}

/// What the protocols keep of a fitted candidate at one (depth, n) ([`CandidateGrid`]).
struct Answered {
    /// Predictions (B, o) on the evaluation prompts.
    preds: Array2<f64>,
    /// Its smoother (B, N) where it is linear in y on these prompts (scalar labels only).
    smoother: Option<Array2<f64>>,
    /// Its token recursion (GD, GD++) with as many steps as the depth.
    recursion: Option<Recursion>,
}

/// Per prompt, ‖a − b‖² / d: SPD/d's summands (the mean over prompts is `tournament::spd`).
fn per_prompt_spd(a: &Array2<f64>, b: &Array2<f64>, d: usize) -> Vec<f64> {
    (a - b).outer_iter().map(|r| r.dot(&r) / d as f64).collect()
}

/// Per prompt, ½‖ŷ_a − y‖² − ½‖ŷ_b − y‖²: the loss change from b to a.
fn per_prompt_loss_change(p: &Prompts, a: &Array2<f64>, b: &Array2<f64>) -> Vec<f64> {
    p.squared_errors(a).iter().zip(p.squared_errors(b)).map(|(x, y)| 0.5 * (x - y)).collect()
}

/// The corruption of P3: base prompts `a` with the labels another task gives their inputs —
/// the source prompt's hidden function applied to a's inputs where the task has one (y = W x),
/// else the source prompt's labels.
pub fn corrupted(a: &Prompts, source: &Prompts) -> Prompts {
    let mut c = a.clone();
    match &source.w {
        Some(w) => {
            for i in 0..a.batch() {
                let wi = w.index_axis(Axis(0), i); // (o, d)
                let xs = a.xs.index_axis(Axis(0), i); // (n, d)
                c.ys.index_axis_mut(Axis(0), i).assign(&xs.dot(&wi.t())); // (n, o)
            }
        }
        None => c.ys.assign(&source.ys),
    }
    c
}

/// The GD construction (von Oswald et al. Prop. 1) a model of this config's depth and task
/// would be (its η set by the caller): one recurrent linear head on the constructed tokens. None
/// where the model's token layout has no such form.
fn construction_config(config: &crate::config::RunConfig) -> Option<crate::config::RunConfig> {
    let mut c = config.clone();
    if c.model.tokens != crate::layout::TokenLayout::Constructed || c.model.has_feature_map() || c.gpt.is_some() {
        return None;
    }
    c.model.recurrent = true;
    c.model.heads = 1;
    c.model.softmax = false;
    c.model.first_layer_softmax = false;
    c.model.layer_norm = false;
    c.model.mlp = false;
    c.model.pos_enc = 0;
    c.model.key_size = Some(c.token_width());
    Some(c)
}

/// What the protocols hold in memory at once: the evaluation, source, corrupted and tuning
/// prompts at the largest n, and the largest model's activations with a backward pass on a few
/// batches (clean, intervened, the P2 source, P4's gradient).
pub fn memory(task: &dyn Task, entrants: &[LoadedEntrant], opts: &ProtocolOptions) -> crate::budget::Budget {
    use crate::budget::prompt_bytes;
    let dims = task.dims();
    let n_max = opts.n_values.iter().copied().max().unwrap_or(0);
    let mut b = crate::budget::Budget::new();
    b.add("--prompts × --n (evaluation, source and corrupted prompts)", prompt_bytes(opts.prompts, n_max, dims) * 3)
        .add("--tuning-prompts × --n (tuning prompts)", prompt_bytes(opts.tuning_prompts, n_max, dims) * 2);
    if let Some(e) = entrants.iter().max_by_key(|e| e.config().activation_memory(opts.prompts, n_max, true)) {
        b.add(
            format!("{} (activations of four batches)", e.entrant.model),
            e.config().activation_memory(opts.prompts, n_max, true) * 4,
        );
    }
    b
}

/// Runs P1–P4 (and the output comparison) for every entrant. `on_progress` gets a short
/// description of each step.
pub fn run(
    name: &str,
    task: &dyn Task,
    entrants: &[LoadedEntrant],
    learners: &[LearnerSpec],
    opts: &ProtocolOptions,
    on_progress: &dyn Fn(&str),
) -> anyhow::Result<InterventionsReport> {
    crate::learners::register();
    tch::set_num_threads(1);
    let dims = task.dims();
    anyhow::ensure!(!entrants.is_empty(), "no models given");
    for e in entrants {
        let c = e.config().dims();
        anyhow::ensure!(
            c.x_dim == dims.x_dim && c.y_dim == dims.y_dim,
            "{} was trained on d = {}, o = {}; the protocols' task has d = {}, o = {}",
            e.entrant.model,
            c.x_dim,
            c.y_dim,
            dims.x_dim,
            dims.y_dim
        );
    }
    anyhow::ensure!((1..=100_000).contains(&opts.prompts), "--prompts: must be in 1..=100000 (got {})", opts.prompts);
    anyhow::ensure!(
        (1..=1_000_000).contains(&opts.tuning_prompts),
        "--tuning-prompts: must be in 1..=1000000 (got {})",
        opts.tuning_prompts
    );
    anyhow::ensure!((10..=100_000).contains(&opts.resamples), "--resamples: must be in 10..=100000");
    memory(task, entrants, opts).check()?;
    let n_max = opts.n_values.iter().copied().max().context("no numbers of in-context examples")?;
    let eval = task.sample_n(&mut seeded_rng(opts.seed, EVAL_STREAM), opts.prompts, n_max);
    let source = task.sample_n(&mut seeded_rng(opts.seed, SOURCE_STREAM), opts.prompts, n_max);
    let tuning = task.sample_n(&mut seeded_rng(opts.seed, TUNING_STREAM), opts.tuning_prompts, n_max);
    let max_layers = entrants.iter().map(|e| e.entrant.layers).max().unwrap_or(1);
    let task_name = task.name().to_string();
    let mut skips = Skips::default();

    // Candidates per (depth, n); layer-independent ones at depth 1 only.
    let candidates = CandidateGrid::fit(
        learners,
        &eval,
        &tuning,
        &opts.n_values,
        max_layers,
        "depth",
        &mut skips,
        on_progress,
        |given, learner, prompts, depth, skips| {
            let preds = match learner.predict(prompts) {
                Ok(p) => p.preds,
                Err(e) => return Ok(Err(e)),
            };
            let smoother = if dims.y_dim == 1 {
                match linear_smoother(learner, prompts)? {
                    Smoother::Linear(s) => Some(s),
                    Smoother::Zero => {
                        skips.push(format!(
                            "{} (P4): its smoother is 0 (it ignores the labels), no direction to compare",
                            given.short_label()
                        ));
                        None
                    }
                    Smoother::NotLinear => {
                        skips.push(format!("{} (P4): not linear in y, so it has no smoother", given.short_label()));
                        None
                    }
                }
            } else {
                None
            };
            let recursion = Recursion::of_learner(learner).filter(|r| r.len() == depth);
            Ok(Ok(Answered { preds, smoother, recursion }))
        },
    )?;
    let candidates_at = |depth: usize, n: usize| candidates.at(depth, n);
    let skipped = skips.0;

    let resamples = opts.resamples;
    // A row: the mean of per-prompt `values` with its bootstrap interval.
    let row = |learner: &str,
               params: icl_tasks::Params,
               spec: Option<&LearnerSpec>,
               protocol: Option<&str>,
               metric: &str,
               values: &[f64]|
     -> Measurement {
        let (value, lo, hi) = bootstrap_mean(values, 0.9, resamples, opts.seed);
        let mut m = Measurement::new(&task_name, learner, params, metric, value);
        m.spec = spec.cloned();
        m.protocol = protocol.map(str::to_string);
        m.lo = Some(lo);
        m.hi = Some(hi);
        m
    };
    let mut rows: Vec<Measurement> = Vec::new();
    // Learner-side rows (no model) once per (candidate, depth, layer, n, protocol, metric).
    let mut learner_rows_done: BTreeSet<String> = BTreeSet::new();

    for e in entrants {
        let depth = e.entrant.layers;
        let model_name = e.entrant.model.clone();
        for (i, &seed) in e.entrant.seeds.iter().enumerate() {
            on_progress(&format!("{model_name} seed {seed}"));
            let model = e.learner(i, depth)?;
            let tag = |mut m: Measurement, layer: usize, n: usize| {
                m.model = Some(model_name.clone());
                m.seed = Some(seed);
                m.layer = Some(layer);
                m.n_context = Some(n);
                m
            };
            let measured = model.with_model(|vs, net| -> anyhow::Result<(Vec<Measurement>, Vec<Measurement>)> {
                let kind = vs.variables().values().next().map_or(Kind::Float, |v| v.kind());
                let device = vs.device();
                let mut mine = Vec::new();
                let mut learner_side = Vec::new();
                let interchange_layout = net.layout() == crate::layout::TokenLayout::Constructed
                    && net.as_vo2023().is_some_and(|m| !m.config().has_feature_map());
                for &n in &opts.n_values {
                    let (a, b) = (eval.prefix(n), source.prefix(n));
                    let (ta, tb) = (net.tokens(&a, kind, device), net.tokens(&b, kind, device));
                    let clean_a = iv::predict(net, &ta, Vec::new())?;
                    let clean_b = iv::predict(net, &tb, Vec::new())?;
                    let here = candidates_at(depth, n);
                    // The output comparison (the tournament's SPD/d at the output layer).
                    let losses: Vec<f64> = a.squared_errors(&clean_a).iter().map(|v| 0.5 * v).collect();
                    mine.push(tag(row("model", model.params(), None, None, "loss", &losses), depth, n));
                    for c in &here {
                        let v = per_prompt_spd(&clean_a, &c.extra.preds, dims.x_dim);
                        mine.push(tag(
                            row(c.learner.name(), c.learner.params(), Some(&c.spec), None, "spd", &v),
                            depth,
                            n,
                        ));
                    }
                    // P1: knock out each layer.
                    for l in 1..=depth {
                        on_progress(&format!("{model_name} seed {seed}: P1 layer {l}, n = {n}"));
                        let knocked = iv::predict(net, &ta, iv::knockout(net, l - 1))?;
                        let v = per_prompt_loss_change(&a, &knocked, &clean_a);
                        mine.push(tag(row("model", model.params(), None, Some("P1"), "loss_change", &v), l, n));
                        for c in here.iter().filter(|c| c.extra.recursion.is_some()) {
                            let rec = c.extra.recursion.as_ref().expect("filtered");
                            let knocked_learner = rec.knockout(&a, l - 1)?;
                            let (name, params) = (c.learner.name(), c.learner.params());
                            let v = per_prompt_spd(&knocked, &knocked_learner, dims.x_dim);
                            mine.push(tag(
                                row(name, params.clone(), Some(&c.spec), Some("P1"), "spd_vs_knocked_learner", &v),
                                l,
                                n,
                            ));
                            let v = per_prompt_spd(&knocked, &c.extra.preds, dims.x_dim);
                            mine.push(tag(
                                row(name, params.clone(), Some(&c.spec), Some("P1"), "spd_vs_intact_learner", &v),
                                l,
                                n,
                            ));
                            let v = per_prompt_loss_change(&a, &knocked_learner, &c.extra.preds);
                            let mut m = row(name, params, Some(&c.spec), Some("P1"), "loss_change", &v);
                            m.layer = Some(l);
                            m.n_context = Some(n);
                            learner_side.push(m);
                        }
                    }
                    // P2: the iterate interchange after each layer but the last (after the last,
                    // nothing reads the context).
                    if interchange_layout {
                        for l in 1..depth {
                            for (protocol, channels) in [("P2:y", Channels::Y), ("P2:all", Channels::All)] {
                                on_progress(&format!("{model_name} seed {seed}: {protocol} after layer {l}, n = {n}"));
                                let patch = iv::interchange(net, &tb, l - 1, channels)?;
                                let patched = iv::predict(net, &ta, vec![patch])?;
                                for (metric, reference) in
                                    [("spd_vs_base_clean", &clean_a), ("spd_vs_source_clean", &clean_b)]
                                {
                                    let v = per_prompt_spd(&patched, reference, dims.x_dim);
                                    mine.push(tag(
                                        row("model", model.params(), None, Some(protocol), metric, &v),
                                        l,
                                        n,
                                    ));
                                }
                                for c in here.iter().filter(|c| c.extra.recursion.is_some()) {
                                    let rec = c.extra.recursion.as_ref().expect("filtered");
                                    let cf = rec.interchange(&a, &b, l - 1, channels)?;
                                    let (name, params) = (c.learner.name(), c.learner.params());
                                    let v = per_prompt_spd(&patched, &cf, dims.x_dim);
                                    mine.push(tag(
                                        row(
                                            name,
                                            params.clone(),
                                            Some(&c.spec),
                                            Some(protocol),
                                            "spd_vs_counterfactual",
                                            &v,
                                        ),
                                        l,
                                        n,
                                    ));
                                    let v = per_prompt_spd(&cf, &c.extra.preds, dims.x_dim);
                                    let mut m = row(
                                        name,
                                        params,
                                        Some(&c.spec),
                                        Some(protocol),
                                        "spd_counterfactual_vs_base",
                                        &v,
                                    );
                                    m.layer = Some(l);
                                    m.n_context = Some(n);
                                    learner_side.push(m);
                                }
                            }
                        }
                    }
                    // P4: the model's influence profile after each layer against each smoother.
                    if dims.y_dim == 1 {
                        for l in 1..=depth {
                            on_progress(&format!("{model_name} seed {seed}: P4 layer {l}, n = {n}"));
                            let s_model = iv::influence(net, &ta, Some(l), Vec::new())?;
                            for c in candidates_at(l, n) {
                                let Some(s) = &c.extra.smoother else { continue };
                                let (name, params) = (c.learner.name(), c.learner.params());
                                let cos = row_cosines(s_model.view(), s.view());
                                mine.push(tag(
                                    row(name, params.clone(), Some(&c.spec), Some("P4"), "influence_cos", &cos),
                                    l,
                                    n,
                                ));
                                let rel: Vec<f64> = row_relative_distances(s_model.view(), s.view())
                                    .into_iter()
                                    .filter(|v| v.is_finite())
                                    .collect();
                                if !rel.is_empty() {
                                    mine.push(tag(
                                        row(name, params, Some(&c.spec), Some("P4"), "influence_rel_dist", &rel),
                                        l,
                                        n,
                                    ));
                                }
                            }
                        }
                    }
                    // P3 at the largest n: patching maps of the model (and the construction).
                    if n == n_max {
                        on_progress(&format!("{model_name} seed {seed}: P3"));
                        let corrupt = corrupted(&a, &b);
                        let tc = net.tokens(&corrupt, kind, device);
                        let targets = crate::layout::array2_to_tensor(&a.yq, kind, device);
                        let map = iv::patching_map(net, &ta, &tc, &targets)?;
                        mine.extend(map_rows(&map, |m| tag(m, 0, n), &task_name, "model", model.params(), None));
                    }
                }
                Ok((mine, learner_side))
            });
            let (mine, learner_side) = measured.with_context(|| format!("{model_name} seed {seed}"))?;
            rows.extend(mine);
            for m in learner_side {
                let key = format!(
                    "{}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}",
                    m.candidate(),
                    serde_json::to_string(&m.params).unwrap_or_default(),
                    m.layer,
                    m.n_context,
                    m.protocol,
                    m.metric,
                    m.position,
                    depth
                );
                if learner_rows_done.insert(key) {
                    rows.push(m);
                }
            }
        }
    }
    // P3 for the learner where it has a token-level form: the GD construction of each depth with
    // the fitted GD candidate's η, on the same clean and corrupted prompts.
    let (a, b) = (eval.prefix(n_max), source.prefix(n_max));
    let corrupt = corrupted(&a, &b);
    let mut depths_done = BTreeSet::new();
    for e in entrants {
        let depth = e.entrant.layers;
        let Some(mut cc) = construction_config(e.config()) else { continue };
        if !depths_done.insert(depth) {
            continue;
        }
        cc.model.layers = depth;
        for c in candidates_at(depth, n_max).into_iter().filter(|c| c.learner.name() == "gd") {
            let Some(rec) = &c.extra.recursion else { continue };
            on_progress(&format!("P3 of the GD construction, {depth} layer(s)"));
            let (_vs, constructed) =
                crate::construct::gd_model(&cc, &[rec.steps[0].0], Kind::Double, tch::Device::Cpu)?;
            let constructed = Model::from(constructed);
            let tok = |p: &Prompts| constructed.tokens(p, Kind::Double, tch::Device::Cpu);
            let targets = crate::layout::array2_to_tensor(&a.yq, Kind::Double, tch::Device::Cpu);
            let map = iv::patching_map(&constructed, &tok(&a), &tok(&corrupt), &targets)?;
            rows.extend(map_rows(
                &map,
                |mut m| {
                    m.n_context = Some(n_max);
                    m
                },
                &task_name,
                c.learner.name(),
                c.learner.params(),
                Some(&c.spec),
            ));
        }
    }
    Ok(InterventionsReport {
        name: name.into(),
        task: task.config(),
        options: opts.clone(),
        entrants: entrants.iter().map(|e| e.entrant.clone()).collect(),
        learners: learners.to_vec(),
        skipped,
        measurements: rows,
        command: String::new(),
        preface: String::new(),
    })
}

/// P3's rows of one patching map: `recovered` per hook row (`layer` 0: the input tokens, l: after
/// layer l) and `position`, then `loss_clean` and `loss_corrupted` (no layer); `tag` adds the
/// model, seed and n. Means over the prompts (no interval: seeds give the spread).
fn map_rows(
    map: &iv::PatchingMap,
    tag: impl Fn(Measurement) -> Measurement,
    task: &str,
    learner: &str,
    params: icl_tasks::Params,
    spec: Option<&LearnerSpec>,
) -> Vec<Measurement> {
    let base = |metric: &str, value: f64| {
        let mut m = tag(Measurement::new(task, learner, params.clone(), metric, value));
        m.spec = spec.cloned();
        m.protocol = Some("P3".into());
        m
    };
    let mut out = Vec::new();
    for (r, values) in map.recovered.outer_iter().enumerate() {
        for (p, &v) in values.iter().enumerate() {
            let mut m = base("recovered", v);
            m.layer = Some(r);
            m.position = Some(p);
            out.push(m);
        }
    }
    for (metric, v) in [("loss_clean", map.loss_clean), ("loss_corrupted", map.loss_corrupted)] {
        let mut m = base(metric, v);
        m.layer = None;
        out.push(m);
    }
    out
}

/// Mean [min, max] over seeds, or `–` with none.
fn stat(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let (mean, lo, hi) = mean_min_max(values);
    if values.len() == 1 {
        fmt(mean)
    } else {
        format!("{} [{}, {}]", fmt(mean), fmt(lo), fmt(hi))
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 0.01 && v.abs() < 1000.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// A selection of rows for [`InterventionsReport::per_seed`].
#[derive(Clone, Copy)]
struct Sel<'a> {
    /// The model's name (None: learner-side rows).
    model: Option<&'a str>,
    protocol: Option<&'a str>,
    /// [`Measurement::candidate`]: a spec's label, `model` for the model's own rows.
    candidate: &'a str,
    metric: &'a str,
    /// Layers to average over (None: every layer the rows have).
    layer: Option<usize>,
    /// Learner-side rows: only those of a learner run with this many steps (the model's depth).
    steps: Option<usize>,
}

impl InterventionsReport {
    fn rows<'a>(&'a self, s: Sel<'a>) -> impl Iterator<Item = &'a Measurement> + 'a {
        self.measurements.iter().filter(move |m| {
            m.model.as_deref() == s.model
                && m.protocol.as_deref() == s.protocol
                && m.metric == s.metric
                && m.candidate() == s.candidate
                && s.layer.is_none_or(|l| m.layer == Some(l))
                && s.steps.is_none_or(|k| m.params.get("steps").and_then(|v| v.as_u64()) == Some(k as u64))
        })
    }

    /// Per seed (in seed order), the mean of the selected rows over n and layers.
    fn per_seed(&self, s: Sel) -> Vec<f64> {
        let mut by_seed: BTreeMap<Option<u64>, Vec<f64>> = BTreeMap::new();
        for m in self.rows(s) {
            by_seed.entry(m.seed).or_default().push(m.value);
        }
        by_seed.values().map(|v| v.iter().sum::<f64>() / v.len() as f64).collect()
    }

    /// The lowest lower and the highest upper bound of the selected rows' 90% intervals.
    fn interval_span(&self, s: Sel) -> (f64, f64) {
        self.rows(s).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), m| {
            (lo.min(m.lo.unwrap_or(m.value)), hi.max(m.hi.unwrap_or(m.value)))
        })
    }

    /// The candidates (spec labels) whose fitted learner has a token recursion (GD, GD++).
    fn recursion_candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in self.measurements.iter().filter(|m| m.protocol.as_deref() == Some("P1") && m.spec.is_some()) {
            let c = m.candidate();
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    fn ranking(&self, protocol: Option<&str>, metric: &str, model: &str, layer: usize) -> Option<Ranking> {
        let rows: Vec<Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.protocol.as_deref() == protocol && m.model.as_deref() == Some(model))
            .cloned()
            .collect();
        rank(&rows, metric).into_iter().find(|r| r.layer == Some(layer))
    }

    /// A candidate as the reports name it at `layer` (its steps following the depth).
    fn label(&self, id: &str, layer: usize) -> String {
        crate::tournament::label(id, layer, &self.learners)
    }

    fn best_with_ties(&self, r: &Ranking, layer: usize) -> String {
        let mut names = vec![self.label(&r.order[0].learner, layer)];
        names.extend(r.tied_with_best.iter().map(|l| self.label(l, layer)));
        names.join(" = ")
    }

    fn twin_of(&self, model: &str) -> Option<&Entrant> {
        self.entrants.iter().find(|c| c.role == Role::Untrained && c.control_of.as_deref() == Some(model))
    }

    /// Plain sentences per model: the output verdict, what each protocol says, and whether they
    /// agree; where a model is not doing what its outputs suggest, it says so.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let recursions = self.recursion_candidates();
        for e in self.entrants.iter().filter(|e| e.role != Role::Untrained) {
            let l_out = e.layers;
            let twin = self.twin_of(&e.model);
            let mut lines = Vec::new();
            let control = if e.role == Role::ControlTask { " (control task)" } else { "" };
            let output = self.ranking(None, "spd", &e.model, l_out);
            let p4 = self.ranking(Some("P4"), "influence_cos", &e.model, l_out);
            let mut head = format!("**`{}`**{control}, {} layer(s):", e.model, l_out);
            if let Some(r) = &output {
                head.push_str(&format!(
                    " outputs closest to **{}** (SPD/d {}, best in {}/{} seeds)",
                    self.best_with_ties(r, l_out),
                    fmt(r.order[0].value),
                    r.seeds_agreeing,
                    r.seeds
                ));
            }
            lines.push(head);
            // P4 at the output.
            if let Some(r4) = &p4 {
                let p4_sel = |model: &'_ str, cand: &'_ str, metric: &'static str| -> Vec<f64> {
                    self.per_seed(Sel {
                        model: Some(model),
                        protocol: Some("P4"),
                        candidate: cand,
                        metric,
                        layer: Some(l_out),
                        steps: None,
                    })
                };
                let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
                // Candidates tied by cosine point the same way (1-step GD and averaging differ by a
                // scale): the relative distance tells them apart.
                let tied: Vec<&String> = std::iter::once(&r4.order[0].learner).chain(&r4.tied_with_best).collect();
                let closest_set = self.p4_closest(r4);
                let closest: &String = closest_set[0];
                let closest_label = closest_set.iter().map(|c| self.label(c, l_out)).collect::<Vec<_>>().join(" = ");
                let best_cos = r4.order[0].value;
                let matches = best_cos >= 0.5;
                let mut s = if !matches {
                    format!(
                        "P4: its influence profile ∂ŷ/∂y matches **no candidate's smoother** (highest cos {} < 0.5, {})",
                        stat(&p4_sel(&e.model, &r4.order[0].learner, "influence_cos")),
                        self.best_with_ties(r4, l_out)
                    )
                } else if tied.len() > 1 {
                    format!(
                        "P4: its influence profile ∂ŷ/∂y points like the smoothers of {} (cos {}), and by relative distance is closest to **{}**'s ({}; {})",
                        self.best_with_ties(r4, l_out),
                        stat(&p4_sel(&e.model, closest, "influence_cos")),
                        closest_label,
                        stat(&p4_sel(&e.model, closest, "influence_rel_dist")),
                        tied.iter()
                            .filter(|c| !closest_set.contains(c))
                            .map(|c| format!(
                                "{} {}",
                                self.label(c, l_out),
                                fmt(mean(&p4_sel(&e.model, c, "influence_rel_dist")))
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    format!(
                        "P4: its influence profile ∂ŷ/∂y is closest to **{}**'s smoother (cos {}; relative distance {})",
                        closest_label,
                        stat(&p4_sel(&e.model, closest, "influence_cos")),
                        stat(&p4_sel(&e.model, closest, "influence_rel_dist"))
                    )
                };
                if let Some(gd) = r4.order.iter().find(|c| self.family(&c.learner) == "gd") {
                    let cand = gd.learner.as_str();
                    let sel = Sel {
                        model: Some(&e.model),
                        protocol: Some("P4"),
                        candidate: cand,
                        metric: "influence_cos",
                        layer: Some(l_out),
                        steps: None,
                    };
                    let (lo, _) = self.interval_span(sel);
                    s.push_str(&format!(
                        "; with {} cos {}",
                        self.label(cand, l_out),
                        stat(&p4_sel(&e.model, cand, "influence_cos"))
                    ));
                    if let Some(t) = twin {
                        let (_, thi) = self.interval_span(Sel { model: Some(&t.model), ..sel });
                        s.push_str(&format!(
                            ", untrained twin {} — {}",
                            stat(&p4_sel(&t.model, cand, "influence_cos")),
                            if lo > thi {
                                format!("above it: every trained seed's 90% interval (lowest {}) lies above every twin seed's (highest {})", fmt(lo), fmt(thi))
                            } else {
                                format!("**not separated** from it (trained intervals reach down to {}, the twin's up to {})", fmt(lo), fmt(thi))
                            }
                        ));
                    }
                }
                match &output {
                    Some(r) if self.family(&r.order[0].learner) == "zero" => s.push_str(
                        ". The outputs are closest to predicting 0, which has no influence profile: P4 cannot confirm or refute that verdict.",
                    ),
                    Some(r) => {
                        let out_best: Vec<&String> = std::iter::once(&r.order[0].learner).chain(&r.tied_with_best).collect();
                        if !matches {
                            s.push_str(&format!(
                                ". **Does not confirm** the output verdict ({}): the prediction does not depend on the labels the way any candidate's does.",
                                self.best_with_ties(r, l_out)
                            ));
                        } else if out_best.iter().any(|c| closest_set.contains(c)) {
                            s.push_str(". **Agrees** with the output verdict.");
                        } else if out_best.iter().any(|c| tied.contains(c)) {
                            s.push_str(&format!(
                                ". **Agrees in direction** with the output verdict ({}), whose smoother points the same way but is farther in scale.",
                                self.best_with_ties(r, l_out)
                            ));
                        } else {
                            s.push_str(&format!(
                                ". **Disagrees** with the output verdict ({}): the outputs look like one learner, the way they depend on the labels like another.",
                                self.best_with_ties(r, l_out)
                            ));
                        }
                    }
                    None => s.push('.'),
                }
                lines.push(s);
            }
            // P1 and P2, per token-recursion candidate.
            let kinds: [(&str, &str, &str); 3] = [
                ("P1", "spd_vs_knocked_learner", "spd_vs_intact_learner"),
                ("P2:y", "spd_vs_counterfactual", "spd_vs_base_clean"),
                ("P2:all", "spd_vs_counterfactual", "spd_vs_base_clean"),
            ];
            for (protocol, hyp, _) in kinds {
                let per: Vec<(String, Vec<f64>)> = recursions
                    .iter()
                    .map(|c| {
                        let v = self.per_seed(Sel {
                            model: Some(&e.model),
                            protocol: Some(protocol),
                            candidate: c,
                            metric: hyp,
                            layer: None,
                            steps: None,
                        });
                        (c.clone(), v)
                    })
                    .filter(|(_, v)| !v.is_empty())
                    .collect();
                if per.is_empty() {
                    continue;
                }
                let model_sel = |metric: &'static str, model: &str| {
                    self.per_seed(Sel {
                        model: Some(model),
                        protocol: Some(protocol),
                        candidate: "model",
                        metric,
                        layer: None,
                        steps: None,
                    })
                };
                if protocol == "P1" && l_out == 1 {
                    // One layer: the knocked model reads out its input tokens and the learner with
                    // its one step removed predicts 0; only the loss change says anything.
                    lines.push(format!(
                        "P1: knocking out its one layer changes the loss by {} (a learner with its one step removed predicts 0).",
                        stat(&model_sel("loss_change", &e.model))
                    ));
                    continue;
                }
                let mut s = match protocol {
                    "P1" => "P1, each layer knocked out in turn (mean over layers):".to_string(),
                    p => format!(
                        "{p}, the context tokens' {} channels after each layer but the last from another prompt:",
                        if p == "P2:y" { "y" } else { "x and y" }
                    ),
                };
                for (c, v) in &per {
                    let label = self.label(c, l_out);
                    if protocol == "P1" {
                        let intact = self.per_seed(Sel {
                            model: Some(&e.model),
                            protocol: Some(protocol),
                            candidate: c,
                            metric: "spd_vs_intact_learner",
                            layer: None,
                            steps: None,
                        });
                        let closer = v.iter().zip(&intact).filter(|(a, b)| a < b).count();
                        s.push_str(&format!(
                            " SPD/d to {label} with the step removed {} vs to the intact {label} {} (closer to the knocked learner in {closer}/{} seeds);",
                            stat(v),
                            stat(&intact),
                            v.len()
                        ));
                    } else {
                        let base = model_sel("spd_vs_base_clean", &e.model);
                        let src = model_sel("spd_vs_source_clean", &e.model);
                        let wins = (0..v.len()).filter(|&i| v[i] < base[i] && v[i] < src[i]).count();
                        s.push_str(&format!(
                            " SPD/d to {label}'s counterfactual {} (closer than both controls in {wins}/{} seeds);",
                            stat(v),
                            v.len()
                        ));
                    }
                }
                if protocol != "P1" {
                    s.push_str(&format!(
                        " controls: \"nothing happened\" {}, \"everything copied\" {};",
                        stat(&model_sel("spd_vs_base_clean", &e.model)),
                        stat(&model_sel("spd_vs_source_clean", &e.model))
                    ));
                    // The size of the effect the hypothesis predicts.
                    for (c, _) in &per {
                        let eff = self.per_seed(Sel {
                            model: None,
                            protocol: Some(protocol),
                            candidate: c,
                            metric: "spd_counterfactual_vs_base",
                            layer: None,
                            steps: Some(l_out),
                        });
                        s.push_str(&format!(" {} predicts a change of {};", self.label(c, l_out), stat(&eff)));
                    }
                } else {
                    s.push_str(&format!(" the model's loss changes by {};", stat(&model_sel("loss_change", &e.model))));
                }
                if per.len() >= 2 {
                    let seeds = per[0].1.len();
                    let best_per_seed: Vec<usize> = (0..seeds)
                        .map(|i| {
                            (0..per.len())
                                .min_by(|&a, &b| {
                                    per[a]
                                        .1
                                        .get(i)
                                        .unwrap_or(&f64::INFINITY)
                                        .total_cmp(per[b].1.get(i).unwrap_or(&f64::INFINITY))
                                })
                                .expect("≥ 2")
                        })
                        .collect();
                    let (mean_best, _) = per
                        .iter()
                        .enumerate()
                        .map(|(k, (_, v))| (k, v.iter().sum::<f64>() / v.len() as f64))
                        .fold((0usize, f64::INFINITY), |(bk, bv), (k, v)| if v < bv { (k, v) } else { (bk, bv) });
                    let agreeing = best_per_seed.iter().filter(|&&k| k == mean_best).count();
                    let tie = per.iter().all(|(_, v)| {
                        v.iter().zip(&per[mean_best].1).all(|(a, b)| icl_probes::tournament::same_score(*a, *b))
                    });
                    if tie {
                        s.push_str(" the candidates tie here.");
                    } else {
                        s.push_str(&format!(
                            " **{}** explains it best ({agreeing}/{seeds} seeds)",
                            self.label(&per[mean_best].0, l_out)
                        ));
                        // Against the output verdict, where that is a learner these protocols test.
                        match &output {
                            Some(r) => {
                                let out_best: Vec<&String> =
                                    std::iter::once(&r.order[0].learner).chain(&r.tied_with_best).collect();
                                if out_best.contains(&&per[mean_best].0) {
                                    s.push_str(", as the outputs say.");
                                } else if out_best.iter().any(|c| per.iter().any(|(p, _)| p == *c)) {
                                    s.push_str(&format!(
                                        " — **not** the learner the outputs are closest to ({}).",
                                        self.best_with_ties(r, l_out)
                                    ));
                                } else {
                                    s.push_str(&format!(
                                        "; the outputs are closest to {}, which has no token recursion for {protocol} to test.",
                                        self.best_with_ties(r, l_out)
                                    ));
                                }
                            }
                            None => s.push('.'),
                        }
                    }
                } else {
                    s.pop();
                    s.push('.');
                }
                if let Some(t) = twin {
                    let c = &per[0].0;
                    let tv = self.per_seed(Sel {
                        model: Some(&t.model),
                        protocol: Some(protocol),
                        candidate: c,
                        metric: hyp,
                        layer: None,
                        steps: None,
                    });
                    if !tv.is_empty() {
                        s.push_str(&format!(" Untrained twin: to {} {}.", self.label(c, l_out), stat(&tv)));
                    }
                }
                lines.push(s);
            }
            // P3: where the clean run's information sits.
            let p3 = |model: &str| -> Option<String> {
                let q = self.query_recovery(model);
                if q.is_empty() {
                    return None;
                }
                let g = |metric: &'static str| {
                    self.per_seed(Sel {
                        model: Some(model),
                        protocol: Some("P3"),
                        candidate: "model",
                        metric,
                        layer: None,
                        steps: None,
                    })
                };
                let (clean, corrupted) = (g("loss_clean"), g("loss_corrupted"));
                let losses = format!("½·MSE clean {}, corrupted {}", stat(&clean), stat(&corrupted));
                // Less than 5% of the corrupted loss to recover: the fractions are noise.
                Some(if !self.p3_has_gap(model) {
                    format!("corrupting the labels barely changes its loss ({losses}): nothing to recover, the map is noise")
                } else {
                    format!(
                        "patching the clean query token recovers {} of the loss (input tokens, then after each layer; {losses})",
                        q.iter().map(|v| stat(v)).collect::<Vec<_>>().join(" → ")
                    )
                })
            };
            if let Some(mine) = p3(&e.model) {
                let mut s = format!("P3: {mine}");
                if let Some(theirs) = twin.and_then(|t| p3(&t.model)) {
                    s.push_str(&format!("; untrained twin: {theirs}"));
                }
                s.push('.');
                lines.push(s);
            }
            out.push(lines.join("\n  - "));
        }
        out
    }

    fn family(&self, id: &str) -> String {
        self.learners.iter().find(|s| s.label() == id).map_or_else(|| id.to_string(), |s| s.name.clone())
    }

    /// P3: whether corrupting the labels raises the model's loss by at least 5% in every seed (else
    /// there is nothing to recover and its fractions are noise).
    fn p3_gap(&self, model: &str) -> f64 {
        let g = |metric: &'static str| {
            self.per_seed(Sel {
                model: Some(model),
                protocol: Some("P3"),
                candidate: "model",
                metric,
                layer: None,
                steps: None,
            })
        };
        g("loss_clean")
            .iter()
            .zip(&g("loss_corrupted"))
            .map(|(a, b)| (b - a) / b.abs().max(1e-12))
            .fold(f64::INFINITY, f64::min)
    }

    fn p3_has_gap(&self, model: &str) -> bool {
        self.p3_gap(model) >= 0.05
    }

    /// P3: per hook row, the per-seed fraction recovered by patching the query position.
    fn query_recovery(&self, model: &str) -> Vec<Vec<f64>> {
        let rows: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| {
                m.model.as_deref() == Some(model) && m.protocol.as_deref() == Some("P3") && m.metric == "recovered"
            })
            .collect();
        let Some(last) = rows.iter().filter_map(|m| m.position).max() else { return Vec::new() };
        let layers = rows.iter().filter_map(|m| m.layer).max().unwrap_or(0);
        (0..=layers)
            .map(|l| rows.iter().filter(|m| m.layer == Some(l) && m.position == Some(last)).map(|m| m.value).collect())
            .collect()
    }

    /// P3's map of `model` (None with `learner`: the construction of that candidate and depth),
    /// mean over seeds: (rows: input tokens, after layer 1…, columns: positions).
    fn p3_map(&self, model: Option<&str>, steps: Option<usize>) -> Vec<Vec<f64>> {
        let rows: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| {
                m.model.as_deref() == model
                    && m.protocol.as_deref() == Some("P3")
                    && m.metric == "recovered"
                    && (model.is_some() || m.params.get("steps").and_then(|v| v.as_u64()) == steps.map(|s| s as u64))
            })
            .collect();
        let (Some(hr), Some(pos)) =
            (rows.iter().filter_map(|m| m.layer).max(), rows.iter().filter_map(|m| m.position).max())
        else {
            return Vec::new();
        };
        let mut sum = vec![vec![0.0; pos + 1]; hr + 1];
        let mut count = vec![vec![0usize; pos + 1]; hr + 1];
        for m in rows {
            let (l, p) = (m.layer.expect("P3 rows"), m.position.expect("P3 rows"));
            sum[l][p] += m.value;
            count[l][p] += 1;
        }
        sum.iter()
            .zip(&count)
            .map(|(s, c)| s.iter().zip(c).map(|(v, &k)| if k == 0 { f64::NAN } else { v / k as f64 }).collect())
            .collect()
    }

    /// P4's table of `model`: per layer (rows), each candidate's influence cos (mean over n and seeds).
    fn p4_matrix(&self, model: &str, layers: usize) -> (Vec<String>, Vec<Vec<f64>>) {
        let mut columns: Vec<String> = Vec::new();
        for m in self.measurements.iter().filter(|m| m.protocol.as_deref() == Some("P4") && m.metric == "influence_cos")
        {
            let c = m.candidate();
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
        let values = (1..=layers)
            .map(|l| {
                columns
                    .iter()
                    .map(|c| {
                        let v = self.per_seed(Sel {
                            model: Some(model),
                            protocol: Some("P4"),
                            candidate: c,
                            metric: "influence_cos",
                            layer: Some(l),
                            steps: None,
                        });
                        if v.is_empty() {
                            f64::NAN
                        } else {
                            v.iter().sum::<f64>() / v.len() as f64
                        }
                    })
                    .collect()
            })
            .collect();
        (columns, values)
    }

    /// P4's verdict at a ranking's layer: the candidates tied with the best by cosine (their
    /// smoothers point the same way: 1-step GD and averaging differ by a scale) narrowed to those
    /// nearest by relative distance, itself to ties (one GD++ step is one GD step).
    fn p4_closest<'r>(&self, r4: &'r Ranking) -> Vec<&'r String> {
        let layer = r4.layer.unwrap_or(1);
        let rel_of = |c: &str| {
            let v = self.per_seed(Sel {
                model: Some(&r4.model),
                protocol: Some("P4"),
                candidate: c,
                metric: "influence_rel_dist",
                layer: Some(layer),
                steps: None,
            });
            if v.is_empty() {
                f64::INFINITY
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let tied: Vec<&String> = std::iter::once(&r4.order[0].learner).chain(&r4.tied_with_best).collect();
        let best = tied.iter().map(|c| rel_of(c)).fold(f64::INFINITY, f64::min);
        let mut set: Vec<&String> =
            tied.iter().copied().filter(|c| icl_probes::tournament::same_score(rel_of(c), best)).collect();
        if set.is_empty() {
            set.push(&r4.order[0].learner);
        }
        set
    }

    /// One line per model: what the outputs say and what each protocol says (the findings give
    /// the numbers and intervals).
    pub fn summary_table(&self) -> String {
        let recursions = self.recursion_candidates();
        let mut out = String::from(
            "| model | layers | outputs closest to (SPD/d) | P4: ∂ŷ/∂y closest to (cos) | P1: knockouts explained by | P2:y: interchange explained by |\n|---|---|---|---|---|---|\n",
        );
        let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
        for e in &self.entrants {
            let l = e.layers;
            let outputs = self
                .ranking(None, "spd", &e.model, l)
                .map_or("–".into(), |r| format!("{} ({})", self.best_with_ties(&r, l), fmt(r.order[0].value)));
            let p4 = self.ranking(Some("P4"), "influence_cos", &e.model, l).map_or("–".into(), |r| {
                if r.order[0].value < 0.5 {
                    format!("none ({})", fmt(r.order[0].value))
                } else {
                    let set = self.p4_closest(&r);
                    format!(
                        "{} ({})",
                        set.iter().map(|c| self.label(c, l)).collect::<Vec<_>>().join(" = "),
                        fmt(r.order[0].value)
                    )
                }
            });
            let explained = |protocol: &str, metric: &str| -> String {
                let scores: Vec<(&String, f64)> = recursions
                    .iter()
                    .map(|c| {
                        let v = self.per_seed(Sel {
                            model: Some(&e.model),
                            protocol: Some(protocol),
                            candidate: c,
                            metric,
                            layer: None,
                            steps: None,
                        });
                        (c, mean(&v))
                    })
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                let Some(&(best, v)) = scores.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else { return "–".into() };
                if scores.len() > 1 && scores.iter().all(|(_, w)| icl_probes::tournament::same_score(*w, v)) {
                    return format!("tie ({})", fmt(v));
                }
                format!("{} ({})", self.label(best, l), fmt(v))
            };
            let p1 = if l == 1 { "– (one layer)".to_string() } else { explained("P1", "spd_vs_knocked_learner") };
            out.push_str(&format!(
                "| `{}` | {l} | {outputs} | {p4} | {p1} | {} |\n",
                e.model,
                explained("P2:y", "spd_vs_counterfactual")
            ));
        }
        out
    }

    /// The P1/P2 table: per model, per token-recursion candidate, mean over seeds.
    fn p1_p2_table(&self) -> String {
        let recursions = self.recursion_candidates();
        if recursions.is_empty() {
            return String::new();
        }
        let mut s = String::from(
            "| model | candidate | P1: to knocked learner | P1: to intact learner | P2:y: to counterfactual | P2:y: nothing happened | P2:y: everything copied | P2:all: to counterfactual |\n|---|---|---|---|---|---|---|---|\n",
        );
        for e in &self.entrants {
            for c in &recursions {
                let g = |protocol: &str, cand: &str, metric: &str| {
                    stat(&self.per_seed(Sel {
                        model: Some(&e.model),
                        protocol: Some(protocol),
                        candidate: cand,
                        metric,
                        layer: None,
                        steps: None,
                    }))
                };
                if g("P1", c, "spd_vs_knocked_learner") == "–" {
                    continue;
                }
                s.push_str(&format!(
                    "| `{}` | {} | {} | {} | {} | {} | {} | {} |\n",
                    e.model,
                    self.label(c, e.layers),
                    g("P1", c, "spd_vs_knocked_learner"),
                    g("P1", c, "spd_vs_intact_learner"),
                    g("P2:y", c, "spd_vs_counterfactual"),
                    g("P2:y", "model", "spd_vs_base_clean"),
                    g("P2:y", "model", "spd_vs_source_clean"),
                    g("P2:all", c, "spd_vs_counterfactual"),
                ));
            }
        }
        s
    }
}

/// Writes `<reports>/<name>.{json,md}` and `<figures>/<name>/{p3,p4}.{png,svg}`; returns the paths.
pub fn write(report: &InterventionsReport, reports: &Path, figures: &Path) -> anyhow::Result<Vec<PathBuf>> {
    crate::tournament::check_report_name(&report.name)?;
    let json = reports.join(format!("{}.json", report.name));
    crate::io::write_atomic(&json, &serde_json::to_vec(report)?)?;
    let fig_dir = figures.join(&report.name);
    std::fs::create_dir_all(&fig_dir).with_context(|| format!("creating {}", fig_dir.display()))?;
    let mut files = vec![json];
    // P3: each model's map, then each construction's.
    let mut maps = Vec::new();
    let hook_labels = |rows: usize| -> Vec<String> {
        (0..rows).map(|r| if r == 0 { "input".to_string() } else { format!("after layer {r}") }).collect()
    };
    let pos_labels = |cols: usize| -> Vec<String> {
        (0..cols).map(|p| if p + 1 == cols { "query".to_string() } else { format!("{p}") }).collect()
    };
    for e in &report.entrants {
        let values = report.p3_map(Some(&e.model), None);
        if values.is_empty() {
            continue;
        }
        maps.push(crate::plot::LabelledHeatmap {
            title: if report.p3_has_gap(&e.model) {
                e.model.clone()
            } else {
                format!("{} (corrupting barely changes its loss: noise)", e.model)
            },
            row_labels: hook_labels(values.len()),
            column_labels: pos_labels(values[0].len()),
            values,
        });
    }
    let mut depths: Vec<usize> = report.entrants.iter().map(|e| e.layers).collect();
    depths.sort();
    depths.dedup();
    for d in depths {
        let values = report.p3_map(None, Some(d));
        if values.is_empty() {
            continue;
        }
        maps.push(crate::plot::LabelledHeatmap {
            title: format!("GD construction, {d} layer(s)"),
            row_labels: hook_labels(values.len()),
            column_labels: pos_labels(values[0].len()),
            values,
        });
    }
    if !maps.is_empty() {
        files.extend(crate::plot::render_labelled_heatmaps_scaled(
            &maps,
            2,
            &fig_dir,
            "p3",
            "P3: fraction of the loss recovered by patching one clean activation (mean over seeds)",
            Some((0.0, 1.0)),
        )?);
    }
    let p4: Vec<crate::plot::LabelledHeatmap> = report
        .entrants
        .iter()
        .filter_map(|e| {
            let (columns, values) = report.p4_matrix(&e.model, e.layers);
            (!columns.is_empty()).then(|| crate::plot::LabelledHeatmap {
                title: e.model.clone(),
                row_labels: (1..=e.layers).map(|l| format!("layer {l}")).collect(),
                column_labels: columns.iter().map(|c| crate::tournament::column_label(c, &report.learners)).collect(),
                values,
            })
        })
        .collect();
    if !p4.is_empty() {
        files.extend(crate::plot::render_labelled_heatmaps_scaled(
            &p4,
            2,
            &fig_dir,
            "p4",
            "P4: cosine of the model's ∂ŷ/∂y with each learner's smoother (mean over n and seeds)",
            Some((0.0, 1.0)),
        )?);
    }
    let md = reports.join(format!("{}.md", report.name));
    crate::io::write_atomic(&md, markdown(report).as_bytes())?;
    files.push(md);
    Ok(files)
}

fn markdown(r: &InterventionsReport) -> String {
    let o = &r.options;
    let mut s = format!(
        "# Interventions `{}`: do the layers behave like a learner's steps when changed?\n\n{}",
        r.name, r.preface
    );
    s += &format!(
        "Made by `{}`. Task `{}` ({}). {} evaluation prompts at n ∈ {{{}}}; candidates fitted per n on {} separate tuning prompts (a candidate with `steps` runs as many steps as the layer; P1 and P2 use the model's depth). Each row is a mean over prompts with a 90% bootstrap interval ({} resamples); below, mean [min, max] over seeds. SPD/d is the squared prediction difference over d, as in the tournament.\n\n",
        if r.command.is_empty() { "icl-lab interventions" } else { &r.command },
        r.task.name,
        serde_json::to_string(&r.task.params).unwrap_or_default(),
        o.prompts,
        o.n_values.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
        o.tuning_prompts,
        o.resamples
    );
    s.push_str("The protocols (../shared/reference/interventions-and-bayes.md §3):\n\n- **P1 knockout**: layer l skipped (its attention and MLP outputs zeroed, the residual passes through) against the learner with step l removed and against the intact learner.\n- **P2 iterate interchange** (von Oswald et al.'s token layout only): after layer l the context tokens' y channel (`P2:y`; Prop. 1: yᵢ − w_lᵀxᵢ) or all channels (`P2:all`) come from another prompt; the hypothesis predicts the learner's recursion continued from the patched tokens. Controls: the model's clean output on the base prompt (\"nothing happened\") and on the source prompt (\"everything copied\").\n- **P3 activation patching** at the largest n: corrupted prompts carry the labels another task gives the same inputs; one clean activation (input token, or the residual stream after a layer, at one position) is copied in; the map is the fraction of the loss it recovers, beside the GD construction's.\n- **P4 influence profile**: the model's ∂ŷ/∂yⱼ (autograd), read out after each layer, against each linear-in-y learner's smoother s(X, x_q): cosine and relative distance per prompt.\n\n");
    s.push_str(&crate::tournament::contestants_markdown(&r.entrants, &r.learners));
    if !r.skipped.is_empty() {
        s.push_str("\nLeft out:\n\n");
        for k in &r.skipped {
            s.push_str(&format!("- {k}\n"));
        }
    }
    s.push_str("\n## Summary\n\n");
    s.push_str(&r.summary_table());
    s.push_str("\nP1 and P2 name the GD-family candidate whose counterfactual is closest to the intervened model (SPD/d, mean over layers, n and seeds); P4 names the candidate whose smoother is nearest (cosine, then relative distance among those tied in direction), \"none\" where no smoother reaches cos 0.5.\n");
    s.push_str("\n## Findings\n\n");
    for f in r.findings() {
        s.push_str(&format!("- {f}\n"));
    }
    let table = r.p1_p2_table();
    if !table.is_empty() {
        s.push_str("\n## P1 and P2: SPD/d of the intervened model (mean over layers and n)\n\n");
        s.push_str(&table);
    }
    s.push_str(&format!("\n## P3 and P4\n\n![P3 patching maps](../figures/{0}/p3.png)\n\n![P4 influence cosines](../figures/{0}/p4.png)\n", r.name));
    s.push_str(&format!(
        "\nEvery number is in `reports/{}.json` (`measurements`: `protocol` P1, P2:y, P2:all, P3, P4 or none for the output comparison; metrics `spd`, `loss`, `loss_change`, `spd_vs_knocked_learner`, `spd_vs_intact_learner`, `spd_vs_counterfactual`, `spd_vs_base_clean`, `spd_vs_source_clean`, `spd_counterfactual_vs_base`, `recovered` with `layer` and `position`, `loss_clean`, `loss_corrupted`, `influence_cos`, `influence_rel_dist`; rows without a model are the learners').\n",
        r.name
    ));
    s
}
