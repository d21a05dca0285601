//! `icl-lab tournament`: which algorithm does each layer of a trained model run? Every model,
//! read out after each of its layers (through the activation cache and the model's readout), is
//! compared at every number of in-context examples n with every learner its task names (plus any
//! the user adds), each fitted on tuning prompts separate from the evaluation prompts, by SPD,
//! ILWD, model cos and preds diff ([`icl_probes::tournament`]); the learners are ranked per
//! (model, layer).
//!
//! Controls ride along as contestants of their own: the same architecture untrained (its seed's
//! initial weights, same readout: Deutch et al. 2024 found such models score similarity
//! comparable to trained ones under some metrics) and models trained on a control task (e.g.
//! `linear` with `fixed_w = true`, Akyürek et al. 2023). Order sensitivity (Shen et al. 2024) is
//! measured for every contestant and learner as the spread of the prediction over random orders
//! of the same context.
//!
//! Iterative learners follow the depth: a learner whose spec sets `steps` is run, at the readout
//! after layer l, with `steps = l` (one GD step per layer is the hypothesis under test).

use std::path::{Path, PathBuf};

use anyhow::Context;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use icl_probes::contest::{Contestant, Field};
use icl_probes::learner::Learner;
use icl_probes::measure::Measurement;
use icl_probes::tournament::{rank, Ranking, METRICS};
use icl_probes::ProbeError;
use icl_tasks::{LearnerSpec, Task, TaskConfig};

use crate::config::RunConfig;
use crate::learners::ModelLearner;

pub use icl_probes::contest::{at_depth, TournamentOptions};

/// What a contestant is: a trained model, its untrained twin, or a model trained on a control task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Trained,
    Untrained,
    ControlTask,
}

/// One model (all its seeds) in the tournament.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entrant {
    /// The name its rows carry (`model` field): the run name, `<run> · untrained` for the control.
    pub model: String,
    pub role: Role,
    /// The trained model this is a control for, if it is one.
    pub control_of: Option<String>,
    pub layers: usize,
    pub seeds: Vec<u64>,
    pub dirs: Vec<String>,
}

/// The seed directories of `dir`: itself if it is a run directory (has config.toml), else its
/// subdirectories that have one (each is checked when it is loaded: an incomplete one is refused,
/// not skipped).
pub fn seed_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.join("config.toml").exists() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: not a run directory (no config.toml) and not readable", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.toml").exists())
        .collect();
    dirs.sort();
    anyhow::ensure!(!dirs.is_empty(), "{}: no run directories (folders with a config.toml) in it", dir.display());
    Ok(dirs)
}

/// A model's seeds loaded as learners (one per seed), with its entry.
pub struct LoadedEntrant {
    pub entrant: Entrant,
    configs: Vec<RunConfig>,
    dirs: Vec<PathBuf>,
}

impl LoadedEntrant {
    /// The runs in `dir` (a run directory or a folder of `seed-*` runs of one configuration).
    pub fn trained(dir: &Path, role: Role) -> anyhow::Result<Self> {
        Self::from_dirs(seed_dirs(dir)?, role)
    }

    /// The seed runs `dirs` of one configuration, each checked before use
    /// ([`crate::runs::open_run`]: complete, as its manifest says); two runs of one seed are refused.
    pub fn from_dirs(dirs: Vec<PathBuf>, role: Role) -> anyhow::Result<Self> {
        anyhow::ensure!(!dirs.is_empty(), "no run directories given");
        let dir = &dirs[0];
        let configs: Vec<RunConfig> =
            dirs.iter().map(|d| Ok(crate::runs::open_run(d)?.config)).collect::<anyhow::Result<_>>()?;
        let name = configs[0].name.clone();
        anyhow::ensure!(
            configs.iter().all(|c| c.name == name && c.model == configs[0].model && c.gpt == configs[0].gpt),
            "{}: the runs in it differ in name or model",
            dir.display()
        );
        for (i, c) in configs.iter().enumerate() {
            if let Some(j) = configs[..i].iter().position(|o| o.seed == c.seed) {
                anyhow::bail!(
                    "{} and {} are both seed {} of `{name}`: give each seed once",
                    dirs[j].display(),
                    dirs[i].display(),
                    c.seed
                );
            }
        }
        let entrant = Entrant {
            model: name,
            role,
            control_of: None,
            layers: configs[0].layers(),
            seeds: configs.iter().map(|c| c.seed).collect(),
            dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
        };
        Ok(Self { entrant, configs, dirs })
    }

    /// The config of its first seed (the seeds differ only in `seed`).
    pub fn config(&self) -> &RunConfig {
        &self.configs[0]
    }

    /// The untrained twin: the same configs, each seed's initial weights.
    pub fn untrained_twin(&self) -> Self {
        let mut entrant = self.entrant.clone();
        entrant.control_of = Some(entrant.model.clone());
        entrant.model = format!("{} · untrained", entrant.model);
        entrant.role = Role::Untrained;
        entrant.dirs.clear();
        Self { entrant, configs: self.configs.clone(), dirs: Vec::new() }
    }

    /// The model of seed `i` read out after `layer`.
    pub fn learner(&self, i: usize, layer: usize) -> anyhow::Result<ModelLearner> {
        let config = &self.configs[i];
        let model = match self.entrant.role {
            Role::Untrained => ModelLearner::untrained(&self.entrant.model, config)?,
            _ => {
                let mut m = ModelLearner::from_run(&self.dirs[i], config)?;
                m.run = self.entrant.model.clone();
                m
            }
        };
        Ok(model.at_layer(Some(layer)))
    }
}

/// The contestants of a comparison: each run folder of `run_dirs` with (unless `no_untrained`)
/// its untrained twin, then each control-task run; and the first run's config, whose task the
/// comparison uses. Shared by `icl-lab tournament` and `icl-lab probe-layers`.
pub fn load_entrants(
    run_dirs: &[PathBuf],
    control_task: &[PathBuf],
    no_untrained: bool,
) -> anyhow::Result<(Vec<LoadedEntrant>, RunConfig)> {
    anyhow::ensure!(!run_dirs.is_empty(), "no run directories given");
    let mut entrants = Vec::new();
    for dir in run_dirs {
        let e = LoadedEntrant::trained(dir, Role::Trained)?;
        let twin = (!no_untrained).then(|| e.untrained_twin());
        entrants.push(e);
        entrants.extend(twin);
    }
    for dir in control_task {
        entrants.push(LoadedEntrant::trained(dir, Role::ControlTask)?);
    }
    let config = entrants[0].configs[0].clone();
    Ok((entrants, config))
}

/// The task's own candidate learners for a comparison of `entrants`: those of the trained
/// entrants' training task, so that a run trained on a pool of tasks meets the posterior mean over
/// that pool (`dmmse`). A candidate tied to one pool applies only where every trained entrant was
/// trained on that pool; where they were not (seeds draw different pools), it is left out with a
/// warning rather than compared with models it was not drawn for.
pub fn default_candidates(entrants: &[LoadedEntrant]) -> Vec<LearnerSpec> {
    let trained: Vec<&RunConfig> =
        entrants.iter().filter(|e| e.entrant.role == Role::Trained).flat_map(|e| e.configs.iter()).collect();
    let Some(first) = trained.first() else { return Vec::new() };
    let mut specs = first.training_task().learners();
    let per_run = |spec: &LearnerSpec| spec.params.contains_key("pool_seed");
    if specs.iter().any(per_run) {
        let others: Vec<Vec<LearnerSpec>> = trained[1..].iter().map(|c| c.training_task().learners()).collect();
        specs.retain(|spec| {
            let shared = !per_run(spec) || others.iter().all(|o| o.contains(spec));
            if !shared {
                crate::warnln!(
                    "{}: left out, the runs were trained on different task pools (it applies to one run; \
                     `icl-lab curve` or raventos2023 compares each run with its own)",
                    spec.label()
                );
            }
            shared
        });
    }
    specs
}

/// A report name that stays inside the reports folder.
pub fn check_report_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.starts_with('.'),
        "--name: use letters, digits, '-', '_' and '.' only (got `{name}`)"
    );
    Ok(())
}

/// What `icl-lab tournament` writes to `reports/<name>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TournamentReport {
    pub name: String,
    pub task: TaskConfig,
    pub options: TournamentOptions,
    pub entrants: Vec<Entrant>,
    /// The candidate learners as specified (a spec with `steps` runs `steps = layer`).
    pub learners: Vec<LearnerSpec>,
    /// Candidates that could not be fitted at some layer, with why.
    pub skipped: Vec<String>,
    /// Rankings by each metric, per model and layer.
    pub ranking: Vec<Ranking>,
    pub measurements: Vec<Measurement>,
    /// The command that made it and a Markdown preface for the report (so `--rerender` can
    /// rebuild the Markdown and figure from the JSON alone).
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub preface: String,
}

/// What a tournament holds in memory at once ([`crate::budget`]): its evaluation, tuning and
/// query prompts; the evaluation prompts expanded to every fresh query (for implicit weights) at
/// the largest n; each model's activations on those, with the backward pass of ∂ŷ/∂x_q; and every
/// fitted candidate's answers per (layer, n).
pub fn memory(
    task: &dyn Task,
    entrants: &[LoadedEntrant],
    learners: &[LearnerSpec],
    opts: &TournamentOptions,
) -> crate::budget::Budget {
    use crate::budget::prompt_bytes;
    let dims = task.dims();
    let n_max = opts.n_values.iter().copied().max().unwrap_or(0);
    let max_layers = entrants.iter().map(|e| e.entrant.layers).max().unwrap_or(1);
    let expanded = opts.prompts.saturating_mul(opts.queries);
    let mut b = crate::budget::Budget::new();
    b.add("--prompts × --n (evaluation prompts)", prompt_bytes(opts.prompts, n_max, dims) * 2)
        .add("--tuning-prompts × --n (tuning prompts)", prompt_bytes(opts.tuning_prompts, n_max, dims) * 2)
        .add("--prompts × queries (each context with every fresh query)", prompt_bytes(expanded, n_max, dims));
    if let Some(e) = entrants.iter().max_by_key(|e| e.configs[0].activation_memory(expanded, n_max, true)) {
        b.add(
            format!("{} (activations on the expanded prompts)", e.entrant.model),
            e.configs[0].activation_memory(expanded, n_max, true),
        );
    }
    let answers = opts.prompts as u128 * ((dims.x_dim + 1) * (dims.y_dim + 1)) as u128 * 8;
    b.add(
        "candidates × layers × --n (fitted answers)",
        answers * learners.len() as u128 * max_layers as u128 * opts.n_values.len() as u128,
    );
    b
}

/// Runs the tournament. `on_progress` gets a short description of each step.
pub fn run(
    name: &str,
    task: &dyn Task,
    entrants: &[LoadedEntrant],
    learners: &[LearnerSpec],
    opts: &TournamentOptions,
    on_progress: &dyn Fn(&str),
) -> anyhow::Result<TournamentReport> {
    crate::learners::register();
    // Small models: one libtorch thread is fastest (and does not fight other jobs).
    tch::set_num_threads(1);
    let dims = task.dims();
    for e in entrants {
        let c = &e.configs[0];
        anyhow::ensure!(
            c.dims().x_dim == dims.x_dim && c.dims().y_dim == dims.y_dim,
            "{} was trained on d = {}, o = {}; the tournament's task has d = {}, o = {}",
            e.entrant.model,
            c.dims().x_dim,
            c.dims().y_dim,
            dims.x_dim,
            dims.y_dim
        );
    }
    memory(task, entrants, learners, opts).check()?;
    let max_layers = entrants.iter().map(|e| e.entrant.layers).max().unwrap_or(1);
    let (mut field, mut rows) = Field::fit(task, learners, opts, max_layers, on_progress)?;
    for e in entrants {
        for (i, &seed) in e.entrant.seeds.iter().enumerate() {
            // Loaded once per seed, read out after each layer in turn.
            let mut model = ModelContestant(e.learner(i, 1)?);
            rows.extend(field.measure(&mut model, &e.entrant.model, seed, e.entrant.layers, on_progress)?);
        }
    }
    Ok(TournamentReport {
        name: name.into(),
        task: task.config(),
        options: opts.clone(),
        entrants: entrants.iter().map(|e| e.entrant.clone()).collect(),
        learners: learners.to_vec(),
        skipped: field.skipped,
        ranking: rank_all(&rows),
        measurements: rows,
        command: String::new(),
        preface: String::new(),
    })
}

/// A trained (or untrained) libtorch model as a tournament contestant: read out through the
/// activation cache, ∂ŷ/∂y by autograd, and the token statement where its tokens have the
/// construction's layout.
struct ModelContestant(ModelLearner);

impl Contestant for ModelContestant {
    fn readout(&mut self, layer: usize, sensitivity: bool) -> &dyn Learner {
        self.0.layer = Some(layer);
        self.0.sensitivity = sensitivity;
        &self.0
    }

    fn influence(&mut self, prompts: &icl_tasks::Prompts, layer: usize) -> Result<Option<Array2<f64>>, ProbeError> {
        self.0
            .with_tokens(prompts, |net, tokens| crate::interventions::influence(net, tokens, Some(layer), Vec::new()))
            .map(Some)
            .map_err(|e| ProbeError::Unsupported(format!("{e:#}")))
    }

    fn token_residual(
        &mut self,
        prompts: &icl_tasks::Prompts,
        layer: usize,
        etas: &[f64],
        gammas: &[f64],
    ) -> Result<Option<f64>, ProbeError> {
        let residual = self.0.with_tokens(prompts, |net, tokens| -> anyhow::Result<Option<f64>> {
            let Some(net) = net.as_vo2023().filter(|n| n.config().tokens == crate::layout::TokenLayout::Constructed)
            else {
                return Ok(None);
            };
            Ok(Some(crate::probe::token_residual(net, tokens, prompts, layer, etas, gammas)?.1))
        });
        residual.map_err(|e| ProbeError::Unsupported(format!("{e:#}")))
    }
}

/// A ratio as "18×", "2.5×" or "0.14×".
fn times(ratio: f64) -> String {
    match ratio {
        r if r >= 10.0 => format!("{r:.0}×"),
        r if r >= 1.0 => format!("{r:.1}×"),
        r => format!("{r:.2}×"),
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// A candidate's mean score in a ranking (NaN if it was left out).
fn score_of(r: &Ranking, learner: &str) -> f64 {
    r.order.iter().find(|c| c.learner == learner).map_or(f64::NAN, |c| c.value)
}

/// The rankings by every metric of the tournament, per model and layer.
fn rank_all(rows: &[Measurement]) -> Vec<Ranking> {
    METRICS.iter().flat_map(|metric| rank(rows, metric)).collect()
}

impl TournamentReport {
    /// Recomputes the rankings from the measurement rows (the rows are the record; a report
    /// written before a ranking field existed gets it). Rows written before candidates carried
    /// their spec get it from the report's candidate list, where the family names one candidate;
    /// a report with two candidates of one family and rows without specs cannot be told apart
    /// and is refused.
    pub fn rerank(&mut self) -> anyhow::Result<()> {
        for m in self.measurements.iter_mut().filter(|m| m.spec.is_none() && m.learner != "model") {
            let mut same_family = self.learners.iter().filter(|s| s.name == m.learner);
            match (same_family.next(), same_family.next()) {
                (Some(spec), None) => m.spec = Some(spec.clone()),
                (Some(_), Some(_)) => anyhow::bail!(
                    "report `{}` predates candidate identities and has several `{}` candidates whose rows cannot be told apart; run the tournament again",
                    self.name,
                    m.learner
                ),
                (None, _) => {}
            }
        }
        self.ranking = rank_all(&self.measurements);
        Ok(())
    }

    /// The spec of candidate `id` (its label), if the report lists it.
    fn spec_of(&self, id: &str) -> Option<&LearnerSpec> {
        self.learners.iter().find(|s| s.label() == id)
    }

    /// The family of candidate `id` (`gd` for `gd(steps=1)`).
    fn family_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.spec_of(id).map_or(id, |s| s.name.as_str())
    }

    /// The best candidate's label, with the candidates tied with it ("gd++ (1 step) = gd (1 step)").
    fn best_with_ties(&self, r: &Ranking, layer: usize) -> String {
        std::iter::once(&r.order[0].learner)
            .chain(&r.tied_with_best)
            .map(|l| label(l, layer, &self.learners))
            .collect::<Vec<_>>()
            .join(" = ")
    }

    fn ranking_for(&self, model: &str, layer: usize, metric: &str) -> Option<&Ranking> {
        self.ranking.iter().find(|r| r.model == model && r.layer == Some(layer) && r.metric == metric)
    }

    /// The mean over seeds of `metric` for the model's row with `learner` (e.g. the
    /// permutation spread, learner `model`).
    fn model_value(&self, model: &str, layer: usize, learner: &str, metric: &str) -> f64 {
        let v: Vec<f64> = self
            .measurements
            .iter()
            .filter(|m| {
                m.model.as_deref() == Some(model)
                    && m.layer == Some(layer)
                    && m.learner == learner
                    && m.metric == metric
            })
            .map(|m| m.value)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// One line per model and layer: the best learner by SPD with its margin, by ILWD and by
    /// model cos, and the order sensitivity.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| model | layer | best by SPD (SPD/d) | runner-up (first not tied) | margin [min, max over seeds] | best by ILWD | best by model cos | best by influence cos | order spread |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for e in &self.entrants {
            for layer in 1..=e.layers {
                let Some(spd) = self.ranking_for(&e.model, layer, "spd") else { continue };
                let best = |metric: &str| {
                    self.ranking_for(&e.model, layer, metric).map_or("–".to_string(), |r| {
                        format!(
                            "{} ({}; margin {})",
                            self.best_with_ties(r, layer),
                            fmt(r.order[0].value),
                            fmt(r.beyond_tie.as_ref().map_or(f64::NAN, |m| m.mean))
                        )
                    })
                };
                let (rival, margin) = match &spd.beyond_tie {
                    Some(m) => (
                        format!("{} ({})", label(&m.against, layer, &self.learners), fmt(score_of(spd, &m.against))),
                        format!("{} [{}, {}]", fmt(m.mean), fmt(m.min), fmt(m.max)),
                    ),
                    None => ("– (all tied)".into(), "–".into()),
                };
                out.push_str(&format!(
                    "| {} | {layer} | **{}** ({}) | {rival} | {margin}, {}/{} seeds | {} | {} | {} | {} |\n",
                    e.model,
                    self.best_with_ties(spd, layer),
                    fmt(spd.order[0].value),
                    spd.seeds_agreeing,
                    spd.seeds,
                    best("ilwd"),
                    best("model_cos"),
                    best("influence_cos"),
                    fmt(self.model_value(&e.model, layer, "model", "permutation_spread")),
                ));
            }
        }
        out
    }

    /// The construction's statement about activations, per model and layer: the relative
    /// difference between the tokens and those l steps of GD / GD++ (the fitted candidates) imply.
    pub fn token_table(&self) -> String {
        let rows: Vec<&Measurement> = self.measurements.iter().filter(|m| m.metric == "token_residual").collect();
        if rows.is_empty() {
            return String::new();
        }
        // One column per GD / GD++ candidate, in the report's candidate order.
        let mut columns: Vec<String> =
            self.learners.iter().map(|s| s.label()).filter(|id| rows.iter().any(|m| m.candidate() == *id)).collect();
        for m in &rows {
            if !columns.contains(&m.candidate()) {
                columns.push(m.candidate());
            }
        }
        let mut out = format!(
            "\n## Every token against the construction\n\nAfter layer l, a model running l steps of GD from W₀ = 0 holds (xᵢ, yᵢ − W_l xᵢ) in each context token and (x_q, −W_l x_q) in the query token; GD++ also transforms the x-entries (von Oswald et al. Prop. 1, App. A.10). ‖tokens − that‖ / ‖that‖ at n = N, mean over seeds, with the fitted GD / GD++ candidates of each depth (a trained model may scale its tokens differently and still predict well, so this is the strict test):\n\n| model | layer |{}\n|---|---|{}\n",
            columns.iter().map(|c| format!(" vs {} |", column_label(c, &self.learners))).collect::<String>(),
            "---|".repeat(columns.len()),
        );
        for e in &self.entrants {
            for layer in 1..=e.layers {
                let mean_of = |id: &str| {
                    let v: Vec<f64> = rows
                        .iter()
                        .filter(|m| {
                            m.model.as_deref() == Some(e.model.as_str())
                                && m.layer == Some(layer)
                                && m.candidate() == *id
                        })
                        .map(|m| m.value)
                        .collect();
                    if v.is_empty() {
                        f64::NAN
                    } else {
                        v.iter().sum::<f64>() / v.len() as f64
                    }
                };
                let values: Vec<f64> = columns.iter().map(|c| mean_of(c)).collect();
                if values.iter().any(|v| v.is_finite()) {
                    let cells: String = values.iter().map(|v| format!(" {} |", fmt(*v))).collect();
                    out.push_str(&format!("| {} | {layer} |{cells}\n", e.model));
                }
            }
        }
        out
    }

    /// SPD/d by layer (rows) and candidate (columns, by identity), mean over n and seeds, for one model.
    pub fn spd_matrix(&self, model: &str, layers: usize) -> (Vec<String>, Vec<Vec<f64>>) {
        let mut names: Vec<String> = Vec::new();
        for r in self.ranking.iter().filter(|r| r.model == model && r.metric == "spd") {
            for l in &r.order {
                if !names.contains(&l.learner) {
                    names.push(l.learner.clone());
                }
            }
        }
        names.sort();
        let values = (1..=layers)
            .map(|layer| {
                let r = self.ranking_for(model, layer, "spd");
                names
                    .iter()
                    .map(|n| r.and_then(|r| r.order.iter().find(|l| &l.learner == n)).map_or(f64::NAN, |l| l.value))
                    .collect()
            })
            .collect();
        (names, values)
    }
}

impl TournamentReport {
    /// Plain sentences per trained model: the best candidate by SPD at its output layer, by how
    /// much, in how many seeds, and what its controls score; where the best is not GD, it says so.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.entrants.iter().filter(|e| e.role == Role::Trained) {
            let Some(r) = self.ranking_for(&e.model, e.layers, "spd") else { continue };
            let best = label(&r.order[0].learner, e.layers, &self.learners);
            // The best-scoring GD candidate (there may be several specs of the family).
            let gd = r.order.iter().find(|l| self.family_of(&l.learner) == "gd");
            let mut line = format!(
                "`{}` at its output (layer {}): closest to **{}** (SPD/d {})",
                e.model,
                e.layers,
                self.best_with_ties(r, e.layers),
                fmt(r.order[0].value)
            );
            if !r.tied_with_best.is_empty() {
                // Candidates whose mean is the best's to rounding make the same predictions here
                // (1-step GD++ is GD): a tie, not a win, so the margin is to the next one.
                line.push_str(" — tied: the same mean SPD to 1e-9");
            }
            match &r.beyond_tie {
                Some(m) => {
                    line.push_str(&format!(
                        "; next {} ({}), margin {} [{}, {}] over seeds",
                        label(&m.against, e.layers, &self.learners),
                        fmt(score_of(r, &m.against)),
                        fmt(m.mean),
                        fmt(m.min),
                        fmt(m.max)
                    ));
                }
                None => line.push_str("; every candidate ties"),
            }
            line.push_str(&format!(", best in {}/{} seeds.", r.seeds_agreeing, r.seeds));
            let gd_ties = r.tied_with_best.iter().any(|l| self.family_of(l) == "gd");
            if self.family_of(&r.order[0].learner) != "gd" && !gd_ties {
                if let Some(gd) = gd {
                    line.push_str(&format!(
                        " Not GD: {} scores SPD/d {} ({:.1}× the best).",
                        label(&gd.learner, e.layers, &self.learners),
                        fmt(gd.value),
                        gd.value / r.order[0].value
                    ));
                }
            }
            for c in self.entrants.iter().filter(|c| c.control_of.as_deref() == Some(&e.model)) {
                if let Some(cr) = self.ranking_for(&c.model, c.layers, "spd") {
                    let same = cr.order.iter().find(|l| l.learner == r.order[0].learner);
                    line.push_str(&format!(
                        " Untrained control: closest to {} ({}); its SPD/d to {best} is {}{}.",
                        label(&cr.order[0].learner, c.layers, &self.learners),
                        fmt(cr.order[0].value),
                        same.map_or("–".into(), |l| fmt(l.value)),
                        same.map_or(String::new(), |l| format!(
                            " ({} the trained model's)",
                            times(l.value / r.order[0].value)
                        ))
                    ));
                }
            }
            out.push(line);
        }
        for e in self.entrants.iter().filter(|e| e.role == Role::ControlTask) {
            if let Some(r) = self.ranking_for(&e.model, e.layers, "spd") {
                out.push(format!(
                    "`{}` (control task) at layer {}: closest to {} (SPD/d {}), its loss on the real task {}.",
                    e.model,
                    e.layers,
                    label(&r.order[0].learner, e.layers, &self.learners),
                    fmt(r.order[0].value),
                    fmt(self.model_value(&e.model, e.layers, "model", "loss"))
                ));
            }
        }
        out
    }
}

/// How candidate `id` (its spec's label) reads at `layer`: its short label, with `steps` given
/// as the layer's count where it follows the depth (`gd(steps=1)` at layer 3 reads
/// `gd (3 steps)`, `knn(k=8)` reads `knn(k=8)`).
pub(crate) fn label(id: &str, layer: usize, specs: &[LearnerSpec]) -> String {
    match specs.iter().find(|s| s.label() == id) {
        Some(s) if s.params.contains_key("steps") => {
            format!("{} ({layer} step{})", s.without("steps").short_label(), if layer == 1 { "" } else { "s" })
        }
        Some(s) => s.short_label(),
        None => id.to_string(),
    }
}

/// Candidate `id` as a column over layers: its short label without a `steps` that follows the
/// depth (`gd` for `gd(steps=1)`).
pub(crate) fn column_label(id: &str, specs: &[LearnerSpec]) -> String {
    match specs.iter().find(|s| s.label() == id) {
        Some(s) => s.without("steps").short_label(),
        None => id.to_string(),
    }
}

/// Writes `<reports>/<name>.json`, `<reports>/<name>.md` and the heatmap
/// `<figures>/<name>/spd.{png,svg}`; returns the paths.
pub fn write(report: &TournamentReport, reports: &Path, figures: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let json = reports.join(format!("{}.json", report.name));
    // Compact: a tournament has tens of thousands of rows.
    crate::io::write_atomic(&json, &serde_json::to_vec(report)?)?;
    let fig_dir = figures.join(&report.name);
    std::fs::create_dir_all(&fig_dir)?;
    let maps: Vec<crate::plot::LabelledHeatmap> = report
        .entrants
        .iter()
        .map(|e| {
            let (columns, values) = report.spd_matrix(&e.model, e.layers);
            crate::plot::LabelledHeatmap {
                title: e.model.clone(),
                row_labels: (1..=e.layers).map(|l| format!("layer {l}")).collect(),
                column_labels: columns.iter().map(|c| column_label(c, &report.learners)).collect(),
                values,
            }
        })
        .collect();
    let mut files = vec![json];
    files.extend(crate::plot::render_labelled_heatmaps(
        &maps,
        2,
        &fig_dir,
        "spd",
        "SPD/d (log colour; lower = closer)",
    )?);
    let md = reports.join(format!("{}.md", report.name));
    crate::io::write_atomic(&md, markdown(report, &report.command, &report.preface).as_bytes())?;
    files.push(md);
    Ok(files)
}

fn markdown(r: &TournamentReport, command: &str, preface: &str) -> String {
    let o = &r.options;
    let mut s = format!("# Tournament `{}`: which learner does each layer match?\n\n{preface}", r.name);
    s += &format!(
        "Made by `{command}`. Task `{}` ({}). Each model is read out after every layer and compared with each candidate learner on {} evaluation prompts at n ∈ {{{}}} in-context examples; candidates are fitted per n on {} separate tuning prompts; a candidate whose spec sets `steps` runs as many steps as the layer read. SPD and ILWD are divided by d (Akyürek et al. 2023); ILWD fits a model's implicit weights at {} fresh queries per context; model cos is von Oswald et al.'s (∂ŷ/∂x_q); influence cos is the cosine of the model's ∂ŷ/∂yⱼ with a linear-in-y candidate's smoother s(X, x_q) (P4 of `icl-lab interventions`: unlike model cos it separates learners that differ by a scale, unlike SPD it is about how the prediction uses each label). Rankings average over n, then over seeds; candidates whose mean equals the best's to 1e-9 are tied with it (they predict alike here: one GD++ step is one GD step) and the margin is to the first candidate not tied, runner-up − best per seed (mean, [min, max]); \"k/S seeds\" counts the seeds whose own best is the overall best. Order spread: the standard deviation of the prediction over {} random orders of the same context (n = {}), mean over prompts (the candidates' own spreads are rows of the JSON; a learner that treats its context as a set scores 0).\n\n",
        r.task.name,
        serde_json::to_string(&r.task.params).unwrap_or_default(),
        o.prompts,
        o.n_values.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
        o.tuning_prompts,
        o.queries,
        o.orders,
        o.n_values.iter().max().copied().unwrap_or(0),
    );
    s.push_str(&contestants_markdown(&r.entrants, &r.learners));
    if !r.skipped.is_empty() {
        s.push_str("\nNot fitted (left out of the ranking where listed):\n\n");
        for k in &r.skipped {
            s.push_str(&format!("- {k}\n"));
        }
    }
    s.push_str("\n## Findings\n\n");
    for f in r.findings() {
        s.push_str(&format!("- {f}\n"));
    }
    s.push_str("\n## Ranking per layer\n\n");
    s.push_str(&r.table());
    s.push_str(&r.token_table());
    s.push_str(&format!("\n![SPD by layer and learner](../figures/{}/spd.png)\n", r.name));
    s.push_str(&format!("\nEvery number is in `reports/{}.json` (`measurements`, metrics `spd`, `ilwd`, `model_cos`, `preds_diff`, `influence_cos`, `loss`, `permutation_spread`; `ranking` per model, layer and metric).\n", r.name));
    s
}

/// The Markdown list of contestants (role, layers, seeds) and the candidates, as the tournament
/// and interventions reports open.
pub(crate) fn contestants_markdown(entrants: &[Entrant], learners: &[LearnerSpec]) -> String {
    let mut s = String::from("Contestants:\n\n");
    for e in entrants {
        let role = match (e.role, &e.control_of) {
            (Role::Trained, _) => "trained".to_string(),
            (Role::Untrained, Some(of)) => format!("control: `{of}` at its initial weights"),
            (Role::ControlTask, _) => "control: trained on the control task".to_string(),
            (Role::Untrained, None) => "control: untrained".to_string(),
        };
        s.push_str(&format!("- `{}` — {role}; {} layer(s); seeds {:?}\n", e.model, e.layers, e.seeds));
    }
    s.push_str(&format!(
        "\nCandidates: {}.\n",
        learners.iter().map(|l| format!("`{}`", l.short_label())).collect::<Vec<_>>().join(", ")
    ));
    s
}
