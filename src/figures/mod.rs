//! Figures of the papers we reproduce. A figure is a named preset (its run config lives in
//! `presets/` and `crate::presets`) plus a function that trains the seeds it needs, probes them and
//! renders `figures/<name>/*.png|svg` and `reports/<name>.{md,json}` from what was computed.

pub mod ahn2023;
pub mod akyurek2023_interventions;
pub mod akyurek2023_phases;
pub mod akyurek2023_probes;
pub mod bai2023_selection;
pub mod fu2023_newton;
pub mod garg2022_baselines;
pub mod garg2022_families;
pub mod garg2022_fig2;
pub mod garg2022_ood;
pub mod raventos2023;
pub mod shared;
pub mod vo2023_all;
pub mod vo2023_depth;
pub mod vo2023_fig11;
pub mod vo2023_fig13;
pub mod vo2023_fig15;
pub mod vo2023_fig16;
pub mod vo2023_fig2;
pub mod vo2023_fig4;
pub mod vo2023_fig5;
pub mod vo2023_interventions;
pub mod vo2023_rollout;
pub mod vo2023_tournament;
pub mod vo2023_weights;

use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;

use crate::config::RunConfig;
use crate::plot::Series;
use crate::train::{run_progress_bar, train, RunOutcome, TrainOptions};

/// What every `icl-lab reproduce <figure>` takes.
#[derive(Clone, Debug)]
pub struct FigureOptions {
    /// Seeds 0..n; `None`: the figure's default.
    pub seeds: Option<usize>,
    /// Shortened training, minutes on a CPU; reports say so.
    pub quick: bool,
    /// Parallel training jobs (one model per worker, one libtorch thread each).
    pub jobs: usize,
    pub force: bool,
    pub device: Option<String>,
    /// Training steps instead of the setting's (figures in [`STEPS_OVERRIDABLE`] only).
    pub steps: Option<usize>,
    pub runs_root: PathBuf,
    pub figures_root: PathBuf,
    pub reports_root: PathBuf,
}

type Reproduce = fn(&FigureOptions) -> anyhow::Result<serde_json::Value>;

/// A reproducible figure.
pub struct Figure {
    pub name: &'static str,
    pub about: &'static str,
    /// Seeds when `--seeds` is not given.
    pub default_seeds: usize,
    pub run: Reproduce,
}

/// Every figure.
pub const FIGURES: &[Figure] = &[
    Figure {
        name: "vo2023-fig1",
        about: "Fig. 1, right panel: the trained 1-layer model repeated 50 times with dampening λ = 0.75 vs 50 GD steps (Fig. 10's runs)",
        default_seeds: 5,
        run: vo2023_rollout::reproduce_fig1,
    },
    Figure {
        name: "vo2023-fig2",
        about: "von Oswald et al. 2023 Fig. 2: 1-layer linear self-attention vs 1 step of GD",
        default_seeds: 1,
        run: vo2023_fig2::reproduce,
    },
    Figure {
        name: "vo2023-fig3",
        about: "Fig. 3: recurrent 2- (and 3-) layer and 5 separate layers vs GD and GD++",
        default_seeds: 5,
        run: |o| vo2023_depth::reproduce(&vo2023_depth::FIG3, o),
    },
    Figure {
        name: "vo2023-fig4",
        about: "Fig. 4: sine waves; an MLP feature map + 1 linear attention layer vs the meta-learned MLP + 1 step of GD",
        default_seeds: 3,
        run: vo2023_fig4::reproduce,
    },
    Figure {
        name: "vo2023-fig5",
        about: "Fig. 5: classic tokens, 2 layers with a softmax first layer, reach 1-step GD; copy analysis",
        default_seeds: 5,
        run: vo2023_fig5::reproduce,
    },
    Figure {
        name: "vo2023-fig6",
        about: "Fig. 6: out of distribution (input and teacher scale) for 1, 2 and 5 layers",
        default_seeds: 5,
        run: |o| vo2023_depth::reproduce(&vo2023_depth::FIG6, o),
    },
    Figure {
        name: "vo2023-fig7",
        about: "Fig. 7: 10 recurrent layers vs GD and GD++",
        default_seeds: 5,
        run: |o| vo2023_depth::reproduce(&vo2023_depth::FIG7, o),
    },
    Figure {
        name: "vo2023-fig8",
        about: "Fig. 8: 12 separate layers with MLPs and 4-head linear self-attention vs GD++ (GPU-scale; --quick on a CPU)",
        default_seeds: 5,
        run: |o| vo2023_depth::reproduce(&vo2023_depth::FIG8, o),
    },
    Figure {
        name: "vo2023-fig9",
        about: "Fig. 9: trained weight products (1 layer, 3 recurrent layers) beside the construction",
        default_seeds: 5,
        run: vo2023_weights::reproduce,
    },
    Figure {
        name: "vo2023-fig10",
        about: "Fig. 10: a trained layer rolled out 50 times with dampening, vs GD",
        default_seeds: 5,
        run: vo2023_rollout::reproduce,
    },
    Figure {
        name: "vo2023-fig11",
        about: "Fig. 11: the 2-head softmax model split per head into constant and linear terms: do the constant terms cancel?",
        default_seeds: 5,
        run: vo2023_fig11::reproduce,
    },
    Figure {
        name: "vo2023-fig12",
        about: "Fig. 12: softmax attention with 1 vs 2 heads",
        default_seeds: 5,
        run: |o| vo2023_depth::reproduce(&vo2023_depth::FIG12, o),
    },
    Figure {
        name: "vo2023-fig13",
        about: "Fig. 13: the condition number of the inputs after each GD++ step and each trained layer (2, 3 recurrent; 5 separate), with the untrained control",
        default_seeds: 5,
        run: vo2023_fig13::reproduce,
    },
    Figure {
        name: "vo2023-fig14",
        about: "Fig. 14: LayerNorm with 1 and 2 layers",
        default_seeds: 5,
        run: |o| vo2023_depth::reproduce(&vo2023_depth::FIG14, o),
    },
    Figure {
        name: "vo2023-fig15",
        about: "Fig. 15: where each seed leaves the loss plateau (Fig. 3's recurrent runs), and the 2-layer model trained on 8,192 tasks: pool vs fresh-task loss",
        default_seeds: 5,
        run: vo2023_fig15::reproduce,
    },
    Figure {
        name: "vo2023-fig16",
        about: "Fig. 16: the 1-layer model trained on K distinct tasks (a pool of W's, or K fixed prompts), its loss and alignment with GD on fresh tasks against K",
        default_seeds: 3,
        run: vo2023_fig16::reproduce,
    },
    Figure {
        name: "vo2023-tournament",
        about: "which learner each layer of the vo2023 models matches (SPD, ILWD, model cos), with untrained, control-task and order controls",
        default_seeds: 3,
        run: vo2023_tournament::reproduce,
    },
    Figure {
        name: "vo2023-interventions",
        about: "the four intervention protocols (knockout, iterate interchange, activation patching, influence profiles) on the vo2023-tournament models, with untrained and control-task twins",
        default_seeds: 3,
        run: vo2023_interventions::reproduce,
    },
    Figure {
        name: "raventos2023",
        about: "Raventós et al. 2023 / Lu et al. 2025: models trained on M tasks against dMMSE (the pool's posterior) and ridge (the prior's) as M grows; where they cross",
        default_seeds: 3,
        run: raventos2023::reproduce,
    },
    Figure {
        name: "bai2023-selection",
        about: "Bai et al. 2023: one model trained on two noise levels against ridge at every λ (the frontier) and the Bayes errors",
        default_seeds: 3,
        run: bai2023_selection::reproduce,
    },
    Figure {
        name: "garg2022-fig2",
        about: "Garg et al. 2022 Fig. 2: a GPT-style transformer on linear regression vs least squares, 3-NN and averaging",
        default_seeds: 2,
        run: garg2022_fig2::reproduce,
    },
    Figure {
        name: "garg2022-ood",
        about: "Garg et al. 2022 §4: the garg2022-fig2 transformer (same runs) under input and teacher scaling, context in one orthant, query = a context input",
        default_seeds: 2,
        run: garg2022_ood::reproduce,
    },
    Figure {
        name: "akyurek2023-phases",
        about: "Akyürek et al. 2023 Fig. 3: which learner (GD, ridge, least squares) GPT-style models of depth 1, 2, 4, 8 match, by the tournament with untrained twins",
        default_seeds: 1,
        run: akyurek2023_phases::reproduce,
    },
    Figure {
        name: "akyurek2023-interventions",
        about: "knockouts, activation-patching maps and influence profiles by layer for the akyurek2023-phases GPT-style models, with untrained twins",
        default_seeds: 1,
        run: akyurek2023_interventions::reproduce,
    },
    Figure {
        name: "garg2022-families",
        about: "Garg et al. 2022 §5: GPT-style transformers on sparse linear regression, decision trees and 2-layer ReLU networks vs each class's baselines",
        default_seeds: 2,
        run: garg2022_families::reproduce,
    },
    Figure {
        name: "akyurek2023-probes",
        about: "Akyürek et al. 2023 §5: linear and MLP probes of w, Xᵀy, w_OLS, w_ridge from every layer of the 8-layer GPT-style model, its untrained twin and a control-task model",
        default_seeds: 2,
        run: akyurek2023_probes::reproduce,
    },
    Figure {
        name: "fu2023-newton",
        about: "Fu et al. 2023: on ill-conditioned inputs (κ = 100), which number of Newton iterations vs GD steps each layer of a GPT-style model matches (residual cosine), with its untrained twin",
        default_seeds: 2,
        run: fu2023_newton::reproduce,
    },
    Figure {
        name: "garg2022-baselines",
        about: "Garg et al. 2022: every reference learner on linear, sparse, tree and ReLU-net tasks (d = 20), with closed forms",
        default_seeds: 1,
        run: garg2022_baselines::reproduce,
    },
    Figure {
        name: "ahn2023",
        about: "Ahn et al. 2023 / Zhang, Frei & Bartlett 2023: LSA on non-isotropic inputs learns preconditioned GD (Γ⁻¹)",
        default_seeds: 3,
        run: ahn2023::reproduce,
    },
    Figure {
        name: "vo2023-all",
        about: "every figure above, and reports/vo2023.md indexing them",
        default_seeds: 5,
        run: vo2023_all::reproduce,
    },
];

pub fn find(name: &str) -> anyhow::Result<&'static Figure> {
    FIGURES.iter().find(|f| f.name == name).with_context(|| {
        let names: Vec<_> = FIGURES.iter().map(|f| f.name).collect();
        format!("unknown figure `{name}` (known: {})", names.join(", "))
    })
}

/// The figures that honour `--steps`.
pub const STEPS_OVERRIDABLE: &[&str] = &[garg2022_fig2::NAME, garg2022_ood::NAME];

pub fn reproduce(name: &str, opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let figure = find(name)?;
    if opts.steps.is_some() && !STEPS_OVERRIDABLE.contains(&name) {
        anyhow::bail!(
            "--steps: `{name}` trains the paper's steps (figures that take --steps: {})",
            STEPS_OVERRIDABLE.join(", ")
        );
    }
    let opts = FigureOptions { seeds: Some(opts.seeds.unwrap_or(figure.default_seeds)), ..opts.clone() };
    (figure.run)(&opts)
}

impl FigureOptions {
    pub fn seed_count(&self) -> usize {
        self.seeds.unwrap_or(1)
    }

    /// The `icl-lab reproduce` command that makes figure `name` with these options (for reports).
    pub fn command(&self, name: &str) -> String {
        format!("icl-lab reproduce {name}{} --seeds {}", if self.quick { " --quick" } else { "" }, self.seed_count())
    }
}

/// Runs `work` with a spinner labelled `label` that shows the latest progress message it reports.
pub fn with_spinner<T>(label: &str, work: impl FnOnce(&dyn Fn(&str)) -> T) -> T {
    let bar = crate::progress::spinner(label);
    let out = work(&|what: &str| {
        bar.set_message(what.to_string());
        bar.tick();
    });
    bar.finish_and_clear();
    out
}

/// Trains seeds 0..n of `config` in parallel (runs already complete are reused).
pub fn train_seeds(config: &RunConfig, opts: &FigureOptions) -> anyhow::Result<Vec<RunOutcome>> {
    let configs: Vec<RunConfig> = (0..opts.seed_count() as u64)
        .map(|seed| {
            let mut c = config.clone();
            c.seed = seed;
            if let Some(d) = &opts.device {
                c.train.device = d.clone();
            }
            c.resolve()
        })
        .collect::<anyhow::Result<_>>()?;
    // The references depend on the config and the evaluation set, not on the seed: fit once,
    // or take them from a complete run when every seed is reused anyway.
    let stored = (!opts.force)
        .then(|| {
            let runs: Option<Vec<_>> = configs
                .iter()
                .map(|c| crate::train::load_complete_run(&crate::train::run_dir(&opts.runs_root, c), c))
                .collect();
            runs.and_then(|r| r.into_iter().next()).map(|m| m.references)
        })
        .flatten();
    let references = match stored {
        Some(r) => Some(r),
        None if config.gpt.is_some() => None, // GPT-style runs compare with no fitted reference while training
        None => {
            let eval = crate::evaluate::sample_prompts(&config.task, config.eval.tasks, config.eval.seed)?;
            Some(crate::references::references_for(&configs[0], &eval)?)
        }
    };
    let bars = crate::progress::multi();
    if configs.len() > 1 && configs[0].engine() == crate::config::Engine::Fused && configs[0].gpt.is_none() {
        // Seeds of the fused engine train together, one step loop for all (bit for bit as alone).
        let seed_bars: Vec<_> = configs.iter().map(|c| bars.add(run_progress_bar(c))).collect();
        let options = TrainOptions { force: opts.force, progress: None, references: references.clone() };
        return crate::train::train_together(&configs, &opts.runs_root, options, opts.jobs.max(1), &seed_bars)
            .into_iter()
            .collect();
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.jobs.max(1)).build()?;
    pool.install(|| {
        configs
            .par_iter()
            .map(|c| {
                let bar = bars.add(run_progress_bar(c));
                train(
                    c,
                    &opts.runs_root,
                    TrainOptions { force: opts.force, progress: Some(bar), references: references.clone() },
                )
            })
            .collect()
    })
}

pub use crate::runs::load_run;

/// Keys of a report that hold timings or run-reuse counts: they differ on every rerun, so they go
/// to `reports/.timings/<name>.json` (ignored by git) instead of the report, which then changes
/// only when a number does.
pub const TIMING_KEYS: &[&str] =
    &["wall_seconds", "wall_s", "training_seconds_summed_over_seeds", "training_seconds_mean", "reused_runs"];

/// Moves every [`TIMING_KEYS`] entry out of `value` (at any depth) into the returned list of
/// (JSON pointer, value).
fn take_timings(value: &mut serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for key in TIMING_KEYS {
                if let Some(v) = map.remove(*key) {
                    out.push((format!("{path}/{key}"), v));
                }
            }
            for (k, v) in map.iter_mut() {
                take_timings(v, &format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                take_timings(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Writes `reports/<name>.json` (the summary, without timings) and `reports/<name>.md` (its
/// Markdown rendering); the timings go to `reports/.timings/<name>.json`. Returns the report as
/// JSON, timings included (what `reproduce --json` prints).
pub fn write_report<R: serde::Serialize>(
    reports_root: &Path,
    name: &str,
    report: &R,
    markdown: &str,
) -> anyhow::Result<serde_json::Value> {
    let value = serde_json::to_value(report)?;
    let mut stable = value.clone();
    let mut timings = Vec::new();
    take_timings(&mut stable, "", &mut timings);
    let timings: serde_json::Map<String, serde_json::Value> = timings.into_iter().collect();
    crate::io::write_json_atomic(&reports_root.join(".timings").join(format!("{name}.json")), &timings)?;
    crate::io::write_json_atomic(&reports_root.join(format!("{name}.json")), &stable)?;
    crate::io::write_atomic(&reports_root.join(format!("{name}.md")), markdown.as_bytes())?;
    Ok(value)
}

/// Paths of rendered files, for a report's `figures` list.
/// The line that ends a report: "Figures: `a.png`, `a.svg`, …" (with its newline).
pub fn figures_line(files: &[String]) -> String {
    format!("Figures: {}\n", files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "))
}

/// (min, max) of `xs`; (inf, −inf) for none.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

pub fn file_list(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

/// Mean over seeds with a min–max band, for curves sampled at the same x in every seed.
pub fn mean_band(label: &str, color: usize, per_seed: &[Vec<(f64, f64)>]) -> Series {
    let n = per_seed.iter().map(Vec::len).min().unwrap_or(0);
    let mut s = Series { label: label.into(), color, ..Default::default() };
    for i in 0..n {
        let x = per_seed[0][i].0;
        let ys: Vec<f64> = per_seed.iter().map(|c| c[i].1).collect();
        let mean = ys.iter().sum::<f64>() / ys.len() as f64;
        s.points.push((x, mean));
        if per_seed.len() > 1 {
            let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            s.band.push((x, lo, hi));
        }
    }
    s
}

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Population standard deviation (0 for one value).
pub fn std(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
}
