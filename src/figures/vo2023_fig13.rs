//! von Oswald et al. 2023, Figure 13 (App. A.10): GD++ as a curvature correction. A GD++ step
//! preconditions every input, xᵢ ← (I − γ Σⱼ xⱼxⱼᵀ) xᵢ, which maps each eigenvalue of the inputs'
//! C = Σᵢ xᵢxᵢᵀ to λ(1 − γλ)² and so lowers the condition number κ(C) that slows plain GD. The
//! claim to test: a trained deep linear-attention model transforms its tokens' x-parts the same
//! way, layer by layer.
//!
//! For the recurrent 2- and 3-layer and the 5-separate-layer models of Fig. 3 (the same runs) we
//! read each layer's residual stream through the activation cache (`layers.{l}.resid_post`), take
//! the context tokens' first d entries, and compute κ of their C per prompt, beside κ after each
//! step of the fitted GD++ (the run's own reference) and the untrained model (random init, same
//! readout) as the control. GD leaves the inputs alone: its κ is the input's at every step.

use std::time::Instant;

use ndarray::{s, ArrayView2, Axis, Ix3};
use serde::Serialize;
use tch::{Device, Kind};

use icl_probes::gdpp::trajectory;
use icl_probes::measure::Measurement;
use icl_probes::spectrum::{condition_number, input_eigenvalues, median};

use super::{file_list, mean, mean_band, train_seeds, write_report, FigureOptions};
use crate::cache::{resid_post, ActivationCache};
use crate::evaluate::sample_prompts;
use crate::models::Model;
use crate::plot::{render, Chart, Panel, Series};
use crate::presets::model;

pub const NAME: &str = "vo2023-fig13";
const MODELS: [&str; 3] = ["lsa-2-rec", "lsa-3-rec", "lsa-5-sep"];
/// Prompts of the evaluation set whose spectra are taken.
const TASKS: usize = 2000;

/// κ and the normalised spectrum of every prompt's inputs at one layer.
struct LayerSpectra {
    kappa: Vec<f64>,
    /// λ_k / λ_max, ascending, per prompt.
    normalised: Vec<Vec<f64>>,
}

impl LayerSpectra {
    fn of<'a>(inputs: impl Iterator<Item = ArrayView2<'a, f64>>) -> Self {
        let mut out = Self { kappa: Vec::new(), normalised: Vec::new() };
        for xs in inputs {
            let eig = input_eigenvalues(xs);
            out.kappa.push(condition_number(&eig));
            let top = eig[eig.len() - 1];
            out.normalised.push(eig.iter().map(|l| l / top).collect());
        }
        out
    }

    fn median_kappa(&self) -> f64 {
        median(&self.kappa)
    }

    /// The mean over prompts of λ_k / λ_max, ascending.
    fn mean_spectrum(&self) -> Vec<f64> {
        let d = self.normalised.first().map_or(0, Vec::len);
        (0..d).map(|k| mean(&self.normalised.iter().map(|v| v[k]).collect::<Vec<_>>())).collect()
    }
}

/// The context inputs (x-parts of the context tokens) after every layer of `net`, read through the
/// activation cache: one (B, N, d) array per layer.
fn layer_inputs(net: &Model, prompts: &icl_tasks::Prompts) -> anyhow::Result<Vec<ndarray::Array3<f64>>> {
    let tokens = net.tokens(prompts, Kind::Float, Device::Cpu);
    let names: Vec<String> = (0..net.layers()).map(resid_post).collect();
    let mut cache = ActivationCache::names(&names);
    let _ = tch::no_grad(|| net.forward(&tokens, Some(&mut cache)));
    let (n, d) = (prompts.context_len(), prompts.x_dim());
    names
        .iter()
        .map(|name| {
            let h = cache.array(name)?.into_dimensionality::<Ix3>()?; // (B, N+1, d+o)
            Ok(h.slice(s![.., ..n, ..d]).to_owned()) // (B, N, d)
        })
        .collect()
}

fn per_layer_spectra(net: &Model, prompts: &icl_tasks::Prompts) -> anyhow::Result<Vec<LayerSpectra>> {
    Ok(layer_inputs(net, prompts)?.iter().map(|xs| LayerSpectra::of(xs.axis_iter(Axis(0)))).collect())
}

/// `reports/vo2023-fig13.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Fig13Report {
    pub figure: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub wall_seconds: f64,
    pub tasks: usize,
    pub models: Vec<ModelSpectra>,
    pub gates: std::collections::BTreeMap<String, bool>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// One model's condition numbers: index 0 is the input, index l the state after l layers / steps.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSpectra {
    pub key: String,
    pub label: String,
    pub run_name: String,
    pub layers: usize,
    /// The fitted GD++ the runs compare with (per applied layer).
    pub gdpp_etas: Vec<f64>,
    pub gdpp_gammas: Vec<f64>,
    /// Median κ over prompts.
    pub gdpp_kappa: Vec<f64>,
    /// Per seed.
    pub trained_kappa: Vec<Vec<f64>>,
    /// The untrained control (seed 0's initial weights).
    pub untrained_kappa: Vec<f64>,
    /// Mean λ_k/λ_max, ascending: the input, after the last GD++ step, after the last trained layer (seed 0).
    pub spectrum_input: Vec<f64>,
    pub spectrum_gdpp_last: Vec<f64>,
    pub spectrum_trained_last: Vec<f64>,
}

impl ModelSpectra {
    fn trained_mean(&self) -> Vec<f64> {
        (0..=self.layers).map(|l| mean(&self.trained_kappa.iter().map(|k| k[l]).collect::<Vec<_>>())).collect()
    }
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let mut models = Vec::new();
    let mut measurements = Vec::new();
    let mut kappa_charts = Vec::new();
    let mut spectrum_charts = Vec::new();
    for key in MODELS {
        let spec = model(key, opts.quick)?;
        let c = &spec.config;
        let runs = train_seeds(c, opts)?;
        let gdpp = runs[0]
            .metrics
            .reference("gd++")
            .ok_or_else(|| anyhow::anyhow!("{}: the run has no GD++ reference", c.name))?
            .clone();
        let prompts = sample_prompts(&c.task, TASKS, c.eval.seed)?;
        let input = LayerSpectra::of(prompts.xs.axis_iter(Axis(0)));
        // GD++: the token dynamics' transformed inputs after each step.
        let trajectories: Vec<_> = (0..prompts.batch())
            .map(|b| {
                trajectory(
                    prompts.xs.index_axis(Axis(0), b),
                    prompts.ys.index_axis(Axis(0), b),
                    &gdpp.etas,
                    &gdpp.gammas,
                )
            })
            .collect();
        let gdpp_layers: Vec<LayerSpectra> =
            (0..gdpp.etas.len()).map(|l| LayerSpectra::of(trajectories.iter().map(|t| t[l].xs.view()))).collect();
        let mut trained = Vec::new();
        for run in &runs {
            let (_vs, net) = crate::runs::load_model(&run.dir, c, Device::Cpu)?;
            trained.push(per_layer_spectra(&net, &prompts)?);
        }
        let (_vs, untrained_net) = crate::runs::initial_model(c, Device::Cpu)?;
        let untrained = per_layer_spectra(&untrained_net, &prompts)?;
        let with_input = |layers: &[LayerSpectra]| -> Vec<f64> {
            std::iter::once(input.median_kappa()).chain(layers.iter().map(LayerSpectra::median_kappa)).collect()
        };
        let entry = ModelSpectra {
            key: key.into(),
            label: spec.label.clone(),
            run_name: c.name.clone(),
            layers: gdpp.etas.len(),
            gdpp_etas: gdpp.etas.clone(),
            gdpp_gammas: gdpp.gammas.clone(),
            gdpp_kappa: with_input(&gdpp_layers),
            trained_kappa: trained.iter().map(|t| with_input(t)).collect(),
            untrained_kappa: with_input(&untrained),
            spectrum_input: input.mean_spectrum(),
            spectrum_gdpp_last: gdpp_layers.last().map(LayerSpectra::mean_spectrum).unwrap_or_default(),
            spectrum_trained_last: trained[0].last().map(LayerSpectra::mean_spectrum).unwrap_or_default(),
        };
        // Rows: median κ per layer, for GD++ (steps), each seed and the untrained control.
        let task_name = c.task.name.clone();
        let row = |learner: &str, layer: usize, value: f64| {
            let mut m = Measurement::new(&task_name, learner, Default::default(), "condition_number_median", value);
            m.layer = Some(layer);
            m
        };
        for (l, &k) in entry.gdpp_kappa.iter().enumerate() {
            let mut m = row("gd++", l, k);
            m.layer = None;
            m.params.insert("steps".into(), l.into());
            measurements.push(m);
        }
        for (run, kappa) in runs.iter().zip(&entry.trained_kappa) {
            for (l, &k) in kappa.iter().enumerate() {
                let mut m = row("model", l, k);
                m.model = Some(run.metrics.name.clone());
                m.seed = Some(run.metrics.seed);
                measurements.push(m);
            }
        }
        for (l, &k) in entry.untrained_kappa.iter().enumerate() {
            let mut m = row("untrained", l, k);
            m.model = Some(c.name.clone());
            m.seed = Some(c.seed);
            measurements.push(m);
        }

        let steps = |v: &[f64]| v.iter().enumerate().map(|(l, &k)| (l as f64, k)).collect::<Vec<_>>();
        let per_seed: Vec<Vec<(f64, f64)>> = entry.trained_kappa.iter().map(|k| steps(k)).collect();
        kappa_charts.push(Chart {
            title: spec.label.clone(),
            x_label: "layer / GD++ step (0 = the input)".into(),
            y_label: "median κ(Σ xᵢxᵢᵀ), log scale".into(),
            log_y: true,
            series: vec![
                mean_band("Trained TF", 0, &per_seed),
                Series {
                    label: "GD++".into(),
                    points: steps(&entry.gdpp_kappa),
                    dashed: true,
                    color: 2,
                    ..Default::default()
                },
                Series::flat("GD (inputs unchanged)", entry.gdpp_kappa[0], entry.layers as f64, 1),
                Series {
                    label: "untrained".into(),
                    points: steps(&entry.untrained_kappa),
                    dashed: true,
                    color: 5,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let ranks = |v: &[f64]| v.iter().enumerate().map(|(k, &x)| ((k + 1) as f64, x)).collect::<Vec<_>>();
        spectrum_charts.push(Chart {
            title: format!("{}: spectrum after the last layer", spec.label),
            x_label: "eigenvalue rank (ascending)".into(),
            y_label: "mean λ_k / λ_max, log scale".into(),
            log_y: true,
            series: vec![
                Series { label: "input".into(), points: ranks(&entry.spectrum_input), color: 1, ..Default::default() },
                Series {
                    label: "GD++".into(),
                    points: ranks(&entry.spectrum_gdpp_last),
                    dashed: true,
                    color: 2,
                    ..Default::default()
                },
                Series {
                    label: "Trained TF (seed 0)".into(),
                    points: ranks(&entry.spectrum_trained_last),
                    color: 0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        models.push(entry);
    }
    let dir = opts.figures_root.join(NAME);
    let mut files = render(&Panel { charts: kappa_charts, ..Default::default() }, &dir, "condition_number")?;
    files.extend(render(&Panel { charts: spectrum_charts, ..Default::default() }, &dir, "spectrum")?);
    let report = Fig13Report {
        figure: NAME,
        quick: opts.quick,
        seeds: opts.seed_count(),
        wall_seconds: start.elapsed().as_secs_f64(),
        tasks: TASKS,
        gates: gates(&models),
        models,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report, opts))
}

/// Whether κ falls at every GD++ step (the paper's claim about GD++), and whether every seed's last
/// layer leaves κ below the input's (the claim that the trained layers follow it).
fn gates(models: &[ModelSpectra]) -> std::collections::BTreeMap<String, bool> {
    let mut g = std::collections::BTreeMap::new();
    for m in models {
        let key = m.key.replace('-', "_");
        g.insert(format!("{key}_gdpp_kappa_falls_every_step"), m.gdpp_kappa.windows(2).all(|w| w[1] < w[0]));
        g.insert(format!("{key}_trained_kappa_below_input"), m.trained_kappa.iter().all(|k| k[m.layers] < k[0]));
    }
    g
}

fn markdown(s: &Fig13Report, opts: &FigureOptions) -> String {
    let mut out = String::from(
        "# von Oswald et al. 2023, Figure 13: GD++ lowers the condition number, and the trained layers follow\n\n",
    );
    out += &format!(
        "Made by `{}`{}: for each model of Fig. 3 (the same runs), the condition number κ = λ_max/λ_min of \
         C = Σᵢ xᵢxᵢᵀ over the {} context inputs of each of {} evaluation prompts — as the data enter, after each step of \
         the run's fitted GD++, and after each layer of the trained model (the x-part of the context tokens, read from \
         `layers.{{l}}.resid_post` through the activation cache) and of its untrained initialisation. Medians over \
         prompts; trained values are the mean over seeds with [min, max].\n\n",
        opts.command(NAME),
        if s.quick { " (quick: the models are the shortened Fig. 3 runs)" } else { "" },
        s.models.first().map_or(0, |m| m.spectrum_input.len()),
        s.tasks,
    );
    out += "The paper: GD++ improves the conditioning of the data step by step (its curvature correction), and the \
            trained models' layers transform their inputs the same way. Plain GD leaves the inputs, and κ, unchanged.\n\n";
    for m in &s.models {
        out += &format!(
            "## {}\n\n| after | GD++ κ | trained κ, mean [min, max] | untrained κ |\n|---|---|---|---|\n",
            m.label
        );
        let tm = m.trained_mean();
        for l in 0..=m.layers {
            let seeds: Vec<f64> = m.trained_kappa.iter().map(|k| k[l]).collect();
            let (lo, hi) = super::min_max(&seeds);
            out += &format!(
                "| {} | {:.2} | {:.2} [{lo:.2}, {hi:.2}] | {:.2} |\n",
                if l == 0 { "input".to_string() } else { format!("layer/step {l}") },
                m.gdpp_kappa[l],
                tm[l],
                m.untrained_kappa[l]
            );
        }
        let gamma_list: Vec<String> = m.gdpp_gammas.iter().map(|g| format!("{g:.3}")).collect();
        out += &format!("\nGD++ γ per step: {}.", gamma_list.join(", "));
        let falls = m.gdpp_kappa.windows(2).all(|w| w[1] < w[0]);
        let last = m.layers;
        out += &format!(
            " {} The trained model's last layer leaves κ at {:.2} against the input's {:.2} and GD++'s {:.2}{}; \
             the untrained model leaves it at {:.2}.\n\n",
            if falls {
                "κ falls at every GD++ step.".to_string()
            } else {
                "**κ does not fall at every GD++ step** here (a step with γ ≤ 0 or γλ large leaves it or raises it)."
                    .to_string()
            },
            tm[last],
            m.gdpp_kappa[0],
            m.gdpp_kappa[last],
            if tm[last] < m.gdpp_kappa[0] { "" } else { ": **the trained layers do not lower κ**" },
            m.untrained_kappa[last],
        );
    }
    out += "## Checks\n\n";
    for (k, v) in &s.gates {
        out += &format!("- {k}: {}\n", if *v { "pass" } else { "FAIL" });
    }
    out += "\n";
    out += &super::figures_line(&s.figures);
    out
}
