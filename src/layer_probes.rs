//! `icl-lab probe-layers`: linear probes of every layer's hidden states (Akyürek et al. 2023 §5).
//! For each model (and its controls: the untrained twin, control-task runs), each seed, each n and
//! each layer (0 = the input tokens), the residual stream is read through the activation cache and
//! a ridge probe ([`icl_probes::activation_probe`]) decodes the task's hidden w, Xᵀy, w_OLS and
//! w_ridge from (a) the query token and (b) all tokens; it is fitted on fresh prompts and scored
//! on held-out ones (R², normalised error). Rows carry learner `linear_probe` with params
//! `{target, features}`.

use std::path::{Path, PathBuf};

use ndarray::{s, Array2, Array3, Ix3};
use serde::{Deserialize, Serialize};

use icl_probes::activation_probe::{linear_probe, targets, ProbeScore, TARGETS};
use icl_probes::measure::Measurement;
use icl_tasks::{Params, Prompts, Task, TaskConfig};

use crate::rng::seeded_rng;
use crate::tournament::{Entrant, LoadedEntrant, Role};

/// A 2-layer GELU MLP probe (Akyürek et al. 2023 App. E use width 512; 128 here, for CPU): features
/// standardised with the fitting rows' statistics, Adam lr 1e-3 on mini-batches of 256, the
/// weights with the lowest validation error (last fifth of the fitting rows, checked every 50
/// steps) kept; scored on the held-out rows like the linear probe.
pub fn mlp_probe(
    train: (&Array2<f64>, &Array2<f64>),
    held_out: (&Array2<f64>, &Array2<f64>),
    steps: usize,
    seed: u64,
) -> anyhow::Result<ProbeScore> {
    use tch::nn::{Module, OptimizerConfig};
    use tch::{nn, Device, Kind, Tensor};
    let to_tensor = |a: &Array2<f64>| crate::layout::array_to_tensor(a, Kind::Float, Device::Cpu);
    let (x, y) = (to_tensor(train.0), to_tensor(train.1));
    let mean = x.mean_dim(0, true, Kind::Float);
    let std = x.std_dim(0, false, true).clamp_min(1e-8);
    let t_mean = y.mean_dim(0, true, Kind::Float);
    let standard = |f: &Tensor| (f - &mean) / &std;
    let rows = train.0.nrows();
    let split = rows - rows / 5;
    let x_std = standard(&x);
    let (fit_x, val_x) = (x_std.narrow(0, 0, split as i64), x_std.narrow(0, split as i64, (rows - split) as i64));
    let (fit_y, val_y) = (y.narrow(0, 0, split as i64), y.narrow(0, split as i64, (rows - split) as i64));
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let (m, k) = (train.0.ncols() as i64, train.1.ncols() as i64);
    let net = nn::seq()
        .add(nn::linear(vs.root() / "0", m, 128, Default::default()))
        .add_fn(|t| t.gelu("none"))
        // A zero read-out: at step 0 the probe predicts the mean target (R² = 0), so the kept
        // (best validated) weights are never worse than the mean on the validation rows.
        .add(nn::linear(
            vs.root() / "1",
            128,
            k,
            nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true },
        ));
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    let mut best: (f64, Vec<Tensor>) = (f64::INFINITY, Vec::new());
    let mut order_rng = crate::rng::seeded_rng(seed, 7);
    let batch = 256.min(split);
    for step in 0..=steps {
        if step % 50 == 0 || step == steps {
            let val = tch::no_grad(|| (net.forward(&val_x) + &t_mean - &val_y).square().mean(Kind::Float));
            let val = f64::try_from(val)?;
            if val < best.0 {
                best = (val, vs.trainable_variables().iter().map(|v| v.detach().copy()).collect());
            }
        }
        if step == steps {
            break;
        }
        let start = rand::Rng::random_range(&mut order_rng, 0..=(split - batch)) as i64;
        let (bx, by) = (fit_x.narrow(0, start, batch as i64), fit_y.narrow(0, start, batch as i64));
        let loss = (net.forward(&bx) + &t_mean - by).square().mean(Kind::Float);
        opt.backward_step(&loss);
    }
    tch::no_grad(|| {
        for (v, b) in vs.trainable_variables().iter_mut().zip(&best.1) {
            v.copy_(b);
        }
    });
    let pred = tch::no_grad(|| net.forward(&standard(&to_tensor(held_out.0))) + &t_mean);
    let pred = crate::cache::tensor_to_array(&pred)?.into_dimensionality::<ndarray::Ix2>()?;
    Ok(ProbeScore::of(&pred, held_out.1, &train.1.mean_axis(ndarray::Axis(0)).expect("rows"), 0.0))
}

/// Feature sets read from a layer's residual stream (B, T, D).
pub const FEATURES: [&str; 2] = ["query", "all_tokens"];
/// The feature set of the attention-pooling probe (all tokens, pooled by learned weights).
pub const POOLED: &str = "attention_pool";

/// Akyürek et al. 2023's attention-pooling probe (§5, App. E) with a linear read-out: learned
/// position scores s (one per token), α = softmax(s), the pooled state h̄ = Σ_t α_t h_t of the
/// standardised states, ŷ = h̄ W + (the fitting targets' mean). Adam (lr 0.01) on full batches of
/// four fifths of the fitting prompts from s = 0 (uniform pooling) and W = 0; the parameters with
/// the lowest error on the last fifth (checked every 10 steps) are kept, and scored on the
/// held-out prompts. A linear map of all tokens contains this probe (fixed α, then W), so the
/// all-tokens ridge probe bounds it from above; the pooled one is the paper's.
pub fn pooled_probe(
    train: (&Array3<f64>, &Array2<f64>),
    held_out: (&Array3<f64>, &Array2<f64>),
    steps: usize,
    seed: u64,
) -> anyhow::Result<ProbeScore> {
    use tch::nn::OptimizerConfig;
    use tch::{nn, Device, Kind, Tensor};
    let (x, y) = (
        crate::layout::array_to_tensor(train.0, Kind::Float, Device::Cpu), // (B, T, D)
        crate::layout::array_to_tensor(train.1, Kind::Float, Device::Cpu), // (B, k)
    );
    let mean = x.mean_dim([0, 1].as_slice(), true, Kind::Float); // (1, 1, D)
    let std = x.std_dim([0, 1].as_slice(), false, true).clamp_min(1e-8);
    let t_mean = y.mean_dim(0, true, Kind::Float);
    let standard = |f: &Tensor| (f - &mean) / &std;
    let rows = x.size()[0];
    let split = rows - rows / 5;
    let x_std = standard(&x);
    let (fit_x, val_x) = (x_std.narrow(0, 0, split), x_std.narrow(0, split, rows - split));
    let (fit_y, val_y) = (y.narrow(0, 0, split), y.narrow(0, split, rows - split));
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let (t, d, k) = (x.size()[1], x.size()[2], y.size()[1]);
    let scores = vs.root().zeros("s", &[t]);
    let w = vs.root().zeros("w", &[d, k]);
    // (B, T, D) pooled over T by α = softmax(s): (B, D), then (B, k).
    let predict = |h: &Tensor| h.transpose(1, 2).matmul(&scores.softmax(0, Kind::Float)).matmul(&w) + &t_mean;
    let mut opt = nn::Adam::default().build(&vs, 1e-2)?;
    let mut best = (f64::INFINITY, scores.detach().copy(), w.detach().copy());
    for step in 0..=steps {
        if step % 10 == 0 || step == steps {
            let val = f64::try_from(tch::no_grad(|| (predict(&val_x) - &val_y).square().mean(Kind::Float)))?;
            if val < best.0 {
                best = (val, scores.detach().copy(), w.detach().copy());
            }
        }
        if step == steps {
            break;
        }
        let loss = (predict(&fit_x) - &fit_y).square().mean(Kind::Float);
        opt.backward_step(&loss);
    }
    let pred = tch::no_grad(|| {
        let pooled = standard(&crate::layout::array_to_tensor(held_out.0, Kind::Float, Device::Cpu))
            .transpose(1, 2)
            .matmul(&best.1.softmax(0, Kind::Float));
        pooled.matmul(&best.2) + &t_mean
    });
    let pred = crate::cache::tensor_to_array(&pred)?.into_dimensionality::<ndarray::Ix2>()?;
    Ok(ProbeScore::of(&pred, held_out.1, &train.1.mean_axis(ndarray::Axis(0)).expect("rows"), 0.0))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerProbeOptions {
    /// Prompts the probes are fitted on (the last fifth chooses λ).
    pub fit_prompts: usize,
    /// Held-out prompts they are scored on.
    pub test_prompts: usize,
    pub n_values: Vec<usize>,
    pub seed: u64,
    /// Adam steps of the MLP probe on all tokens (0: linear probes only).
    pub mlp_steps: usize,
    /// Adam steps of the attention-pooling probe (0: none).
    #[serde(default)]
    pub pool_steps: usize,
}

impl LayerProbeOptions {
    pub fn for_task(task: &dyn Task) -> Self {
        Self {
            fit_prompts: 2048,
            test_prompts: 1024,
            n_values: vec![task.dims().context_len],
            seed: 0,
            mlp_steps: 1000,
            pool_steps: 300,
        }
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

/// The residual stream of `model` on `prompts` before the first layer (index 0: the input
/// tokens) and after each applied layer (index l), (B, T, D) each, from one forward pass.
fn hidden_states(
    model: &crate::learners::ModelLearner,
    prompts: &Prompts,
) -> anyhow::Result<Vec<ndarray::Array3<f64>>> {
    model.with_tokens(prompts, |net, tokens| {
        let names: Vec<String> =
            std::iter::once("tokens".to_string()).chain((0..net.layers()).map(crate::cache::resid_post)).collect();
        let mut cache = crate::cache::ActivationCache::names(&names);
        let _ = tch::no_grad(|| net.forward(tokens, Some(&mut cache)));
        names.iter().map(|n| Ok(cache.array(n)?.into_dimensionality::<Ix3>()?)).collect()
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
/// What probing holds in memory at once ([`crate::budget`]): the fit, test and tuning prompts,
/// and every layer's hidden states of the largest model on the fit and test prompts (f32, then
/// as f64 features).
pub fn memory(task: &dyn Task, entrants: &[LoadedEntrant], opts: &LayerProbeOptions) -> crate::budget::Budget {
    use crate::budget::prompt_bytes;
    let dims = task.dims();
    let n_max = opts.n_values.iter().copied().max().unwrap_or(dims.context_len);
    let prompts = opts.fit_prompts + opts.test_prompts;
    let mut b = crate::budget::Budget::new();
    b.add("--fit-prompts + --test-prompts + tuning (prompts)", prompt_bytes(prompts + 4096, n_max, dims) * 2);
    if let Some(c) = entrants.iter().map(|e| e.config()).max_by_key(|c| c.activation_memory(prompts, n_max, true)) {
        b.add(
            format!("--fit-prompts + --test-prompts (hidden states of `{}`)", c.name),
            c.activation_memory(prompts, n_max, true) * 3,
        );
    }
    b
}

pub fn run(
    name: &str,
    task: &dyn Task,
    entrants: &[LoadedEntrant],
    opts: &LayerProbeOptions,
    on_progress: &dyn Fn(&str),
) -> anyhow::Result<LayerProbeReport> {
    // Small models and probes: one libtorch thread is fastest (and does not fight other jobs).
    tch::set_num_threads(1);
    let n_max = opts.n_values.iter().copied().max().unwrap_or(task.dims().context_len);
    memory(task, entrants, opts).check()?;
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
                let model = e.learner(i, 1)?;
                let (fit_states, test_states) = (hidden_states(&model, &fit_p)?, hidden_states(&model, &test_p)?);
                for layer in 0..=e.entrant.layers {
                    on_progress(&format!("{} seed {seed}, n = {n}, layer {layer}", e.entrant.model));
                    let (fit_h, test_h) = (&fit_states[layer], &test_states[layer]);
                    let pooled = (opts.pool_steps > 0).then_some(POOLED);
                    for which in FEATURES.into_iter().chain(pooled) {
                        let flat = (which != POOLED).then(|| (features(fit_h, which), features(test_h, which)));
                        for (target, fit_t, test_t) in &goals {
                            let scores = match &flat {
                                None => vec![(
                                    "pooled_probe",
                                    pooled_probe((fit_h, fit_t), (test_h, test_t), opts.pool_steps, opts.seed)?,
                                )],
                                Some((fit_f, test_f)) => {
                                    let mut scores =
                                        vec![("linear_probe", linear_probe((fit_f, fit_t), (test_f, test_t))?)];
                                    if which == "all_tokens" && opts.mlp_steps > 0 {
                                        scores.push((
                                            "mlp_probe",
                                            mlp_probe((fit_f, fit_t), (test_f, test_t), opts.mlp_steps, opts.seed)?,
                                        ));
                                    }
                                    scores
                                }
                            };
                            for (probe, score) in scores {
                                let mut params = Params::new();
                                params.insert("target".into(), (*target).into());
                                params.insert("features".into(), which.into());
                                if probe == "linear_probe" {
                                    params.insert("lambda".into(), score.lambda.into());
                                }
                                for (metric, value) in [("r2", score.r2), ("normalised_error", score.normalised_error)]
                                {
                                    let mut m = Measurement::new(task.name(), probe, params.clone(), metric, value);
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
    /// Mean over seeds [min, max] of `metric` for (model, layer, probe, target, features) at the
    /// largest n; `probe` is `linear_probe` or `mlp_probe`.
    pub fn value(
        &self,
        model: &str,
        layer: usize,
        probe: &str,
        target: &str,
        features: &str,
        metric: &str,
    ) -> (f64, f64, f64) {
        let n_max = self.options.n_values.iter().copied().max();
        let v: Vec<f64> = self
            .measurements
            .iter()
            .filter(|m| {
                m.model.as_deref() == Some(model)
                    && m.learner == probe
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
    let chart_probe = if report.options.mlp_steps > 0 { "mlp_probe" } else { "linear_probe" };
    let charts = TARGETS
        .iter()
        .map(|target| crate::plot::Chart {
            title: format!(
                "{} R² of {target} (all tokens)",
                if chart_probe == "mlp_probe" { "MLP probe" } else { "linear probe" }
            ),
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
                        let (mean, lo, hi) = report.value(&e.model, layer, chart_probe, target, "all_tokens", "r2");
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
        "# Probes of hidden states: `{}`\n\n{preface}Made by `{command}`. Task `{}`. Ridge probes (closed form, λ chosen on a fifth of the fitting prompts) and 2-layer GELU MLP probes on all tokens (width 128, Adam, {} steps, best validated weights; 0 = none) fitted on {} prompts and scored on {} held-out prompts, at n = {} in-context examples; R² is 1 − SSE/SST on the held-out prompts (0 = no better than the mean target, 1 = exact). Features: the query token's hidden state, or all tokens' (a linear map of all tokens contains Akyürek et al.'s attention pooling followed by a linear map). Mean over seeds [min, max].\n\n",
        r.name,
        r.task.name,
        o.mlp_steps,
        o.fit_prompts,
        o.test_prompts,
        o.n_values.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    );
    let mut sections = vec![("linear_probe", "query"), ("linear_probe", "all_tokens")];
    if o.mlp_steps > 0 {
        sections.push(("mlp_probe", "all_tokens"));
    }
    if o.pool_steps > 0 {
        sections.push(("pooled_probe", POOLED));
    }
    for (probe, features) in sections {
        s.push_str(&format!(
            "## {} probe, R² from {}\n\n| model | layer |",
            match probe {
                "mlp_probe" => "MLP",
                "pooled_probe" => "Attention-pooling (linear read-out)",
                _ => "Linear",
            },
            match features {
                "query" => "the query token",
                "attention_pool" => "all tokens pooled by learned position weights (Akyürek et al.)",
                _ => "all tokens",
            }
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
                    let (mean, lo, hi) = r.value(&e.model, layer, probe, t, features, "r2");
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
    s.push_str(&format!("![probe R² by layer](../figures/{}/r2.png)\n\nEvery number is in `reports/{}.json` (`measurements`: learner `linear_probe`, `mlp_probe` or `pooled_probe`, params `target` and `features`, metrics `r2` and `normalised_error`).\n", r.name, r.name));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn the_mlp_probe_learns_a_smooth_target_and_scores_on_held_out_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut draw = |rows: usize| {
            let f: Array2<f64> = Array2::from_shape_fn((rows, 4), |_| StandardNormal.sample(&mut rng));
            // A smooth non-linear target: t = (f₀ f₁, f₂ + sin f₃).
            let t = Array2::from_shape_fn((rows, 2), |(i, j)| {
                if j == 0 {
                    f[[i, 0]] * f[[i, 1]]
                } else {
                    f[[i, 2]] + f[[i, 3]].sin()
                }
            });
            (f, t)
        };
        let (train, test) = (draw(2000), draw(500));
        let mlp = mlp_probe((&train.0, &train.1), (&test.0, &test.1), 2000, 0).unwrap();
        assert!(mlp.r2 > 0.8, "{mlp:?}");
        let linear = linear_probe((&train.0, &train.1), (&test.0, &test.1)).unwrap();
        assert!(linear.r2 < mlp.r2 - 0.2, "the product is not linear: linear {linear:?}, MLP {mlp:?}");
    }

    #[test]
    fn the_pooling_probe_learns_where_to_look() {
        // States (B, T = 5, D = 3); the target is the first entry of token 1. Uniform pooling
        // explains a fifth of it; the learned position weights must find token 1, which the query
        // token (the last) knows nothing about.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut draw = |rows: usize| {
            let h: Array3<f64> = Array3::from_shape_fn((rows, 5, 3), |_| StandardNormal.sample(&mut rng));
            let t = Array2::from_shape_fn((rows, 1), |(i, _)| h[[i, 1, 0]]);
            (h, t)
        };
        let (train, test) = (draw(2000), draw(500));
        let pooled = pooled_probe((&train.0, &train.1), (&test.0, &test.1), 600, 0).unwrap();
        assert!(pooled.r2 > 0.9, "{pooled:?}");
        let query =
            linear_probe((&features(&train.0, "query"), &train.1), (&features(&test.0, "query"), &test.1)).unwrap();
        assert!(query.r2 < 0.05, "{query:?}");
    }
}
