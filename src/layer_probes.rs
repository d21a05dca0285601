//! `icl-lab probe-layers`: linear probes of every layer's hidden states (Akyürek et al. 2023 §5).
//! For each model (and its controls: the untrained twin, control-task runs), each seed, each n and
//! each layer (0 = the input tokens), the residual stream is read through the activation cache and
//! a ridge probe ([`icl_probes::activation_probe`]) decodes the task's hidden w, Xᵀy, w_OLS and
//! w_ridge from (a) the query token and (b) all tokens; it is fitted on fresh prompts and scored
//! on held-out ones (R², normalised error). Rows carry learner `linear_probe` with params
//! `{target, features}`.

use std::path::{Path, PathBuf};

use ndarray::{s, Array2, Ix3};
use serde::{Deserialize, Serialize};

use icl_probes::activation_probe::{linear_probe, targets, TARGETS};
use icl_probes::measure::Measurement;
use icl_tasks::{Params, Prompts, Task, TaskConfig};

use crate::rng::seeded_rng;
use crate::tournament::{Entrant, LoadedEntrant, Role};

/// Feature sets read from a layer's residual stream (B, T, D).
pub const FEATURES: [&str; 2] = ["query", "all_tokens"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerProbeOptions {
    /// Prompts the probes are fitted on (the last fifth chooses λ).
    pub fit_prompts: usize,
    /// Held-out prompts they are scored on.
    pub test_prompts: usize,
    pub n_values: Vec<usize>,
    pub seed: u64,
}

impl LayerProbeOptions {
    pub fn for_task(task: &dyn Task) -> Self {
        Self { fit_prompts: 2048, test_prompts: 1024, n_values: vec![task.dims().context_len], seed: 0 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerProbeReport {
    pub name: String,
    pub task: TaskConfig,
    pub options: LayerProbeOptions,
    pub entrants: Vec<Entrant>,
    pub measurements: Vec<Measurement>,
}

/// The residual stream after `layer` applied layers (0: the input tokens), (B, T, D).
fn hidden_states(
    e: &LoadedEntrant,
    seed_index: usize,
    layer: usize,
    prompts: &Prompts,
) -> anyhow::Result<ndarray::Array3<f64>> {
    let model = e.learner(seed_index, layer.max(1))?;
    model.with_model(|vs, net| {
        let kind = vs.variables().values().next().map_or(tch::Kind::Float, |v| v.kind());
        let (tokens, _) = crate::layout::tensors(net.config().tokens, prompts, kind, vs.device());
        let name = if layer == 0 { "tokens".to_string() } else { crate::cache::resid_post(layer - 1) };
        let mut cache = crate::cache::ActivationCache::names(&[name.as_str()]);
        let _ = tch::no_grad(|| net.forward(&tokens, Some(&mut cache)));
        Ok(cache.array(&name)?.into_dimensionality::<Ix3>()?)
    })
}

fn features(states: &ndarray::Array3<f64>, which: &str) -> Array2<f64> {
    let (b, t, d) = states.dim();
    match which {
        "query" => states.slice(s![.., t - 1, ..]).to_owned(), // (B, D)
        _ => states.to_owned().into_shape_with_order((b, t * d)).expect("(B, T, D) → (B, T·D)"),
    }
}

/// Probes every layer of every entrant; `on_progress` gets a short description of each step.
pub fn run(
    name: &str,
    task: &dyn Task,
    entrants: &[LoadedEntrant],
    opts: &LayerProbeOptions,
    on_progress: &dyn Fn(&str),
) -> anyhow::Result<LayerProbeReport> {
    let n_max = opts.n_values.iter().copied().max().unwrap_or(task.dims().context_len);
    let fit_all = task.sample_n(&mut seeded_rng(opts.seed, 0), opts.fit_prompts, n_max);
    let test_all = task.sample_n(&mut seeded_rng(opts.seed, 1), opts.test_prompts, n_max);
    let tuning = task.sample_n(&mut seeded_rng(opts.seed, 2), 4096, n_max);
    let mut rows = Vec::new();
    for &n in &opts.n_values {
        let (fit_p, test_p, tune_p) = (fit_all.prefix(n), test_all.prefix(n), tuning.prefix(n));
        let goals: Vec<(&str, Array2<f64>, Array2<f64>)> = TARGETS
            .iter()
            .filter_map(|t| match (targets(t, &fit_p, Some(&tune_p)), targets(t, &test_p, Some(&tune_p))) {
                (Ok(a), Ok(b)) => Some((*t, a, b)),
                _ => None, // e.g. no hidden w for this task
            })
            .collect();
        for e in entrants {
            for (i, &seed) in e.entrant.seeds.iter().enumerate() {
                for layer in 0..=e.entrant.layers {
                    on_progress(&format!("{} seed {seed}, n = {n}, layer {layer}", e.entrant.model));
                    let (fit_h, test_h) = (hidden_states(e, i, layer, &fit_p)?, hidden_states(e, i, layer, &test_p)?);
                    for which in FEATURES {
                        let (fit_f, test_f) = (features(&fit_h, which), features(&test_h, which));
                        for (target, fit_t, test_t) in &goals {
                            let score = linear_probe((&fit_f, fit_t), (&test_f, test_t))?;
                            let mut params = Params::new();
                            params.insert("target".into(), (*target).into());
                            params.insert("features".into(), which.into());
                            params.insert("lambda".into(), score.lambda.into());
                            for (metric, value) in [("r2", score.r2), ("normalised_error", score.normalised_error)] {
                                let mut m =
                                    Measurement::new(task.name(), "linear_probe", params.clone(), metric, value);
                                m.model = Some(e.entrant.model.clone());
                                m.seed = Some(seed);
                                m.layer = Some(layer);
                                m.n_context = Some(n);
                                rows.push(m);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(LayerProbeReport {
        name: name.into(),
        task: task.config(),
        options: opts.clone(),
        entrants: entrants.iter().map(|e| e.entrant.clone()).collect(),
        measurements: rows,
    })
}

impl LayerProbeReport {
    /// Mean over seeds of `metric` for (model, layer, target, features) at the largest n.
    pub fn value(&self, model: &str, layer: usize, target: &str, features: &str, metric: &str) -> (f64, f64, f64) {
        let n_max = self.options.n_values.iter().copied().max();
        let v: Vec<f64> = self
            .measurements
            .iter()
            .filter(|m| {
                m.model.as_deref() == Some(model)
                    && m.layer == Some(layer)
                    && m.metric == metric
                    && m.n_context == n_max
                    && m.params.get("target").and_then(|t| t.as_str()) == Some(target)
                    && m.params.get("features").and_then(|t| t.as_str()) == Some(features)
            })
            .map(|m| m.value)
            .collect();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, lo, hi)
    }
}

/// Writes `<reports>/<name>.{json,md}` and `<figures>/<name>/r2.{png,svg}` (R² by layer, one
/// chart per target, all-token features; a line per model and control).
pub fn write(
    report: &LayerProbeReport,
    reports: &Path,
    figures: &Path,
    command: &str,
    preface: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    let json = reports.join(format!("{}.json", report.name));
    crate::io::write_atomic(&json, &serde_json::to_vec(report)?)?;
    let fig_dir = figures.join(&report.name);
    std::fs::create_dir_all(&fig_dir)?;
    let charts = TARGETS
        .iter()
        .map(|target| crate::plot::Chart {
            title: format!("probe R² of {target} (all tokens)"),
            x_label: "layer (0 = input tokens)".into(),
            y_label: "held-out R²".into(),
            y_range: Some((-0.1, 1.05)),
            series: report
                .entrants
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    let mut s = crate::plot::Series {
                        label: e.model.clone(),
                        color: k,
                        dashed: e.role != Role::Trained,
                        ..Default::default()
                    };
                    for layer in 0..=e.layers {
                        let (mean, lo, hi) = report.value(&e.model, layer, target, "all_tokens", "r2");
                        s.points.push((layer as f64, mean));
                        if e.seeds.len() > 1 {
                            s.band.push((layer as f64, lo, hi));
                        }
                    }
                    s
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let mut files = vec![json];
    files.extend(crate::plot::render(&crate::plot::Panel { charts, chart_size: None }, &fig_dir, "r2")?);
    let md = reports.join(format!("{}.md", report.name));
    crate::io::write_atomic(&md, markdown(report, command, preface).as_bytes())?;
    files.push(md);
    Ok(files)
}

fn markdown(r: &LayerProbeReport, command: &str, preface: &str) -> String {
    let o = &r.options;
    let mut s = format!(
        "# Probes of hidden states: `{}`\n\n{preface}Made by `{command}`. Task `{}`. Ridge probes (closed form, λ chosen on a fifth of the fitting prompts) fitted on {} prompts and scored on {} held-out prompts, at n = {} in-context examples; R² is 1 − SSE/SST on the held-out prompts (0 = no better than the mean target, 1 = exact). Features: the query token's hidden state, or all tokens' (a linear map of all tokens contains Akyürek et al.'s attention pooling followed by a linear map). Mean over seeds [min, max].\n\n",
        r.name,
        r.task.name,
        o.fit_prompts,
        o.test_prompts,
        o.n_values.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    );
    for features in FEATURES {
        s.push_str(&format!(
            "## R² from {}\n\n| model | layer |",
            if features == "query" { "the query token" } else { "all tokens" }
        ));
        for t in TARGETS {
            s.push_str(&format!(" {t} |"));
        }
        s.push_str("\n|---|---|");
        s.push_str(&"---|".repeat(TARGETS.len()));
        s.push('\n');
        for e in &r.entrants {
            for layer in 0..=e.layers {
                s.push_str(&format!("| {} | {layer} |", e.model));
                for t in TARGETS {
                    let (mean, lo, hi) = r.value(&e.model, layer, t, features, "r2");
                    if e.seeds.len() > 1 {
                        s.push_str(&format!(" {mean:.3} [{lo:.3}, {hi:.3}] |"));
                    } else {
                        s.push_str(&format!(" {mean:.3} |"));
                    }
                }
                s.push('\n');
            }
        }
        s.push('\n');
    }
    s.push_str(&format!("![probe R² by layer](../figures/{}/r2.png)\n\nEvery number is in `reports/{}.json` (`measurements`: learner `linear_probe`, params `target` and `features`, metrics `r2` and `normalised_error`).\n", r.name, r.name));
    s
}
