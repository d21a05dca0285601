//! Garg et al. 2022 Fig. 2: a GPT-style transformer trained on linear regression
//! ([`crate::models::gpt`], [`crate::train_gpt`]) against least squares, 3-nearest neighbours and
//! averaging, as normalised error (squared error ÷ d; the zero predictor scores 1) against the
//! number of in-context examples n, with 90% bootstrap intervals over the evaluation prompts and
//! the closed forms of least squares and averaging for isotropic inputs.
//!
//! The default is the paper's setting (d = 20, n ≤ 40, the `standard` 12-layer model, 500,000
//! steps of Adam 1e-4 with the curriculum): GPU-scale. `--quick` trains a small model at d = 5
//! (n ≤ 10) on a CPU in minutes; the report says what it changes.

use std::time::Instant;

use serde::Serialize;

use icl_probes::curve::CurveOptions;
use icl_probes::measure::Measurement;
use icl_tasks::LearnerSpec;

use super::garg2022_baselines::{add_closed_form_lines, closed_form};
use super::{file_list, train_seeds, write_report, FigureOptions};
use crate::config::RunConfig;
use crate::curve::RunOnCurve;
use crate::plot::{curve_chart, render, Panel};

pub const NAME: &str = "garg2022-fig2";

/// The figure's run config: the paper's (`presets/garg2022-fig2.toml`) or the quick one.
pub fn config(quick: bool) -> anyhow::Result<RunConfig> {
    let mut c = RunConfig::preset(NAME)?;
    if quick {
        // d = 5, n ≤ 10 = 2d; a 3-layer model of width 32 (Garg's `tiny` is 3 layers, width 64);
        // the curriculum scaled down (dims 2 → 5, points 5 → 11, every 1,000 steps); lr 1e-3
        // instead of 1e-4 so that 12,000 steps suffice.
        c.name = format!("{NAME}-quick");
        c.task = c.task.with("x_dim", 5).with("context_len", 10);
        c.gpt = Some(crate::models::GptConfig { layers: 3, heads: 2, width: 32 });
        c.curriculum = Some(crate::config::Curriculum {
            dims_start: 2,
            dims_step: 1,
            points_start: 5,
            points_step: 2,
            every: 1000,
        });
        c.train.steps = 12_000;
        c.train.lr = 1e-3;
        c.eval.every = 1000;
        c.eval.tasks = 1000;
    }
    c.resolve()
}

/// The config the figure trains: [`config`] with `--steps` applied (a run name of its own, so
/// shortened runs never pass for full ones). garg2022-ood evaluates the same runs.
pub fn trained_config(opts: &FigureOptions) -> anyhow::Result<RunConfig> {
    let mut config = config(opts.quick)?;
    if let Some(steps) = opts.steps {
        anyhow::ensure!(steps >= 1, "--steps: must be at least 1");
        config.name = format!("{}-{steps}steps", config.name);
        config.train.steps = steps;
        config = config.resolve()?;
    }
    Ok(config)
}

/// One trained seed.
#[derive(Clone, Debug, Serialize)]
pub struct TrainedSeed {
    pub seed: u64,
    pub steps_done: usize,
    pub status: crate::train::RunStatus,
    /// ½·MSE at the query on the evaluation set after training.
    pub final_loss: f64,
    pub wall_s: f64,
}

/// The figure's claims, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Checks {
    pub d: usize,
    /// The transformer's normalised error at n = 2d, per seed, and the seeds' mean.
    pub transformer_at_2d: Vec<f64>,
    pub transformer_at_2d_mean: f64,
    pub averaging_at_2d: f64,
    pub least_squares_at_2d: f64,
    /// The mean at n = 2d is below 0.1 and below averaging's.
    pub below_tenth_and_averaging: bool,
    /// n = 1…N where the seeds' mean lies between least squares (minus its interval) and
    /// averaging (plus its interval), of all n.
    pub between_least_squares_and_averaging: usize,
    pub n_points: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct PaperNumber {
    pub what: String,
    pub paper: f64,
    pub ours: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fig2Report {
    pub figure: &'static str,
    pub quick: bool,
    /// `--steps` replaced the setting's number of training steps.
    pub steps_overridden: bool,
    pub config: RunConfig,
    pub seeds: Vec<TrainedSeed>,
    pub prompts: usize,
    pub wall_seconds: f64,
    pub checks: Checks,
    pub paper: Vec<PaperNumber>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let config = trained_config(opts)?;
    let runs = train_seeds(&config, opts)?;
    let task = config.task();
    let dims = task.dims();
    let prompts = 1280;
    let curve_opts = CurveOptions {
        prompts,
        tuning_prompts: 1024,
        n_values: (0..=dims.context_len).collect(),
        seed: 0,
        ..Default::default()
    };
    let learners = vec![
        LearnerSpec::new("least_squares"),
        LearnerSpec::new("knn").with("k", 3),
        LearnerSpec::new("averaging"),
        LearnerSpec::new("zero"),
    ];
    let on_curve: Vec<RunOnCurve> = runs.iter().map(|r| RunOnCurve::load(&r.dir)).collect::<anyhow::Result<_>>()?;
    crate::warnln!("{NAME}: the learning curve at n = 0…{} ({prompts} prompts)", dims.context_len);
    let mut measurements = crate::curve::measure(task.as_ref(), &learners, &on_curve, false, &curve_opts)?;
    let d = dims.x_dim;
    let task_name = task.name();
    let closed: Vec<Measurement> = ["least_squares", "averaging"]
        .iter()
        .flat_map(|learner| {
            (1..=dims.context_len).map(move |n| {
                let (value, _) = closed_form(learner, d as f64, n as f64).expect("listed");
                let mut m =
                    Measurement::new(task_name, learner, Default::default(), "closed_form_normalised_error", value);
                m.n_context = Some(n);
                m
            })
        })
        .collect();
    let checks = checks(&measurements, d, dims.context_len);
    let mut chart = curve_chart(&measurements, &title(&config, opts.quick), 1.5);
    add_closed_form_lines(&mut chart, &closed, &["least_squares", "averaging"]);
    let files =
        render(&Panel { charts: vec![chart], chart_size: Some((860, 600)) }, &opts.figures_root.join(NAME), "curve")?;
    measurements.extend(closed);
    // The paper's numbers are for d = 20; the quick run's are at its own n = d and 2d (d = 5).
    let at = |n: usize| mean_model_error(&measurements, n);
    let paper = vec![
        PaperNumber { what: format!("transformer, n = d (ours: n = {d})"), paper: 0.02, ours: at(d) },
        PaperNumber { what: format!("transformer, n = 2d (ours: n = {})", 2 * d), paper: 0.0006, ours: at(2 * d) },
    ];
    let seeds = runs
        .iter()
        .map(|r| TrainedSeed {
            seed: r.metrics.seed,
            steps_done: r.metrics.steps_done,
            status: r.metrics.status,
            final_loss: r.metrics.rows.last().map_or(f64::NAN, |row| row.loss),
            wall_s: r.metrics.wall_s,
        })
        .collect();
    let report = Fig2Report {
        figure: NAME,
        quick: opts.quick,
        steps_overridden: opts.steps.is_some(),
        config,
        seeds,
        prompts,
        wall_seconds: start.elapsed().as_secs_f64(),
        checks,
        paper,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report))
}

fn title(config: &RunConfig, quick: bool) -> String {
    let g = config.gpt.as_ref().expect("a GPT-style figure");
    format!(
        "Linear regression, d = {}: GPT-style transformer ({} layers, width {}{}) vs baselines",
        config.dims().x_dim,
        g.layers,
        g.width,
        if quick { ", quick" } else { "" }
    )
}

fn is_model(m: &Measurement) -> bool {
    m.learner == "model" && m.metric == "normalised_error"
}

/// The seeds' mean normalised error at n.
fn mean_model_error(rows: &[Measurement], n: usize) -> f64 {
    let values: Vec<f64> = rows.iter().filter(|m| is_model(m) && m.n_context == Some(n)).map(|m| m.value).collect();
    super::mean(&values)
}

fn learner_row<'a>(rows: &'a [Measurement], learner: &str, n: usize) -> Option<&'a Measurement> {
    rows.iter().find(|m| m.learner == learner && m.metric == "normalised_error" && m.n_context == Some(n))
}

fn checks(rows: &[Measurement], d: usize, n_max: usize) -> Checks {
    let n2 = (2 * d).min(n_max);
    let per_seed: Vec<f64> = rows.iter().filter(|m| is_model(m) && m.n_context == Some(n2)).map(|m| m.value).collect();
    let mean = super::mean(&per_seed);
    let value = |learner: &str, n: usize| learner_row(rows, learner, n).map_or(f64::NAN, |m| m.value);
    let between = (1..=n_max)
        .filter(|&n| {
            let t = mean_model_error(rows, n);
            let ls = learner_row(rows, "least_squares", n).map_or(f64::NAN, |m| m.lo.unwrap_or(m.value));
            let avg = learner_row(rows, "averaging", n).map_or(f64::NAN, |m| m.hi.unwrap_or(m.value));
            t >= ls - 1e-12 && t <= avg
        })
        .count();
    Checks {
        d,
        transformer_at_2d: per_seed,
        transformer_at_2d_mean: mean,
        averaging_at_2d: value("averaging", n2),
        least_squares_at_2d: value("least_squares", n2),
        below_tenth_and_averaging: mean < 0.1 && mean < value("averaging", n2),
        between_least_squares_and_averaging: between,
        n_points: n_max,
    }
}

fn markdown(r: &Fig2Report) -> String {
    let dims = r.config.dims();
    let g = r.config.gpt.as_ref().expect("a GPT-style figure");
    let mut md = format!("# Garg et al. 2022, Fig. 2 — {NAME}{}\n\n", if r.quick { " (quick)" } else { "" });
    md += &format!(
        "Linear regression (x, w ~ N(0, I_d), d = {}), a GPT-style transformer ({} layers, {} heads, width {}) \
         trained on {} steps{} of batch {} (Adam lr {}), {} seed(s); normalised error = squared error ÷ d at the \
         query, mean and 90% bootstrap interval over {} prompts per n.\n\n",
        dims.x_dim,
        g.layers,
        g.heads,
        g.width,
        r.config.train.steps,
        if r.config.curriculum.is_some() { " with the curriculum" } else { "" },
        r.config.train.batch,
        r.config.train.lr,
        r.seeds.len(),
        r.prompts,
    );
    if r.quick {
        md += "**Quick setting**, not the paper's: d = 5 and n ≤ 10 (paper: d = 20, n ≤ 40), a 3-layer model of \
               width 32 (paper: 12 layers, width 256), 12,000 steps at lr 1e-3 (paper: 500,000 at 1e-4), the \
               curriculum scaled to d = 5 (dims 2 → 5, points 5 → 11, every 1,000 steps).\n\n";
    }
    if r.steps_overridden {
        md += &format!(
            "**Steps set by `--steps`**: {} training steps instead of the setting's {}.\n\n",
            r.config.train.steps,
            config(r.quick).map_or(0, |c| c.train.steps)
        );
    }
    let unfinished: Vec<String> = r
        .seeds
        .iter()
        .filter(|s| s.status != crate::train::RunStatus::Complete)
        .map(|s| format!("seed {} stopped at step {} of {}", s.seed, s.steps_done, r.config.train.steps))
        .collect();
    if !unfinished.is_empty() {
        md += &format!("**Not fully trained**: {} (the curve uses its last checkpoint).\n\n", unfinished.join("; "));
    }
    md += "| seed | steps | status | final ½·MSE (eval set) |\n|---|---|---|---|\n";
    for s in &r.seeds {
        md += &format!("| {} | {} | {:?} | {:.4} |\n", s.seed, s.steps_done, s.status, s.final_loss);
    }
    let c = &r.checks;
    md += &format!(
        "\n## The claims\n\n- At n = 2d = {}: transformer {:.4} (seeds: {}), averaging {:.4}, least squares {:.4}. \
         Below 0.1 and below averaging: **{}**.\n- The transformer's mean lies between least squares and averaging \
         (each with its interval) at {} of n = 1…{}.\n",
        2 * c.d,
        c.transformer_at_2d_mean,
        c.transformer_at_2d.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", "),
        c.averaging_at_2d,
        c.least_squares_at_2d,
        if c.below_tenth_and_averaging { "yes" } else { "no" },
        c.between_least_squares_and_averaging,
        c.n_points
    );
    if !r.paper.is_empty() {
        md += &format!(
            "\n## Beside the paper\n\n{}| | paper (d = 20) | ours (d = {}) |\n|---|---|---|\n",
            if r.quick {
                "The quick model is smaller, shorter-trained and at d = 5, so the numbers are beside each other, not like for like.\n\n"
            } else {
                ""
            },
            dims.x_dim
        );
        for p in &r.paper {
            md += &format!("| {} | {} | {:.4} |\n", p.what, p.paper, p.ours);
        }
    }
    md += "\n## The curve\n\n| n | transformer (mean of seeds) | least squares | 3-NN | averaging |\n|---|---|---|---|---|\n";
    let step = if dims.context_len > 20 { 5 } else { 1 };
    let cell = |learner: &str, n: usize| {
        learner_row(&r.measurements, learner, n).map_or("—".to_string(), |m| match (m.lo, m.hi) {
            (Some(lo), Some(hi)) => format!("{:.4} [{lo:.4}, {hi:.4}]", m.value),
            _ => format!("{:.4}", m.value),
        })
    };
    for n in (0..=dims.context_len).filter(|n| n % step == 0 || *n == dims.x_dim) {
        md += &format!(
            "| {n} | {:.4} | {} | {} | {} |\n",
            mean_model_error(&r.measurements, n),
            cell("least_squares", n),
            cell("knn", n),
            cell("averaging", n)
        );
    }
    md += &format!("\nFigure: {}\n", r.figures.join(", "));
    md
}
