//! Bai, Chen, Wang, Xiong & Mei 2023 ("Transformers as statisticians"), in-context algorithm
//! selection: one model trained on a mixture of two noise levels, against ridge at every λ (the
//! frontier of what a single fixed penalty reaches at both levels) and the Bayes errors.
//!
//! Setting (interventions-and-bayes.md §4): x ~ N(0, I_d), w ~ N(0, I/d) (‖w‖ ≈ 1), N = d
//! in-context examples, σ ∈ {0.1, 0.5} with equal prior, so the per-level Bayes predictor is ridge
//! with λ = dσ² (0.2 and 5 at d = 20). Models: von Oswald et al.'s linear self-attention with five
//! separate layers (trained by the fused engine; Vladymyrov et al. 2024 report that deep linear
//! transformers adapt to the noise level), trained on the mixture and, as its specialists, on each
//! level alone. The question: does the mixture-trained model reach an (error at σ₁, error at σ₂)
//! point that no single λ reaches?

use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

use icl_probes::learner::Learner;
use icl_probes::learners::{AdaRidge, BayesRidge, Ridge, RidgePath};
use icl_probes::measure::Measurement;
use icl_tasks::{Prompts, Shift, ShiftKind};

use super::{file_list, mean, min_max, train_seeds, write_report, FigureOptions};
use crate::config::RunConfig;
use crate::learners::ModelLearner;
use crate::plot::{render, Chart, Panel, Series};

pub const NAME: &str = "bai2023-selection";
const LEVELS: [f64; 2] = [0.1, 0.5];
/// Evaluation prompts per level, from `EVAL_SEED`.
const PROMPTS: usize = 4096;
const EVAL_SEED: u64 = 10;
/// λ grid of the ridge frontier: log-spaced from 2.5 decades below the smaller Bayes λ to 2.5
/// above the larger (each λ costs O(d) per prompt on [`RidgePath`], so the grid can be fine: the
/// step is under 0.01 decades, and a point "beyond the frontier" is not a gap between grid points).
const FRONTIER_POINTS: usize = 1001;
/// Every how many frontier points a measurement row is written (the JSON's `frontier` has all).
const ROW_EVERY: usize = 10;

fn dim(quick: bool) -> usize {
    if quick {
        10
    } else {
        20
    }
}

/// The training task: both levels (`None`) or one.
fn task(d: usize, level: Option<f64>) -> icl_tasks::TaskConfig {
    let t = icl_tasks::TaskConfig::new("gaussian_linear")
        .with("x_dim", d as i64)
        .with("context_len", d as i64)
        .with("w_scale", 1.0 / (d as f64).sqrt());
    match level {
        None => t.with("noise_levels", LEVELS.to_vec()),
        Some(s) => t.with("noise_std", s),
    }
}

fn config(level: Option<f64>, quick: bool) -> anyhow::Result<RunConfig> {
    let mut c = crate::presets::model("lsa-5-sep", quick)?.config;
    c.task = task(dim(quick), level);
    c.eval.gdpp = false;
    c.train.steps = if quick { 4000 } else { 50_000 };
    c.eval.every = 1000;
    c.eval.tasks = 2000;
    let which = level.map_or("mixture".to_string(), |s| format!("sigma{s}"));
    c.name = format!("{NAME}-lsa-5-sep-{which}{}", if quick { "-quick" } else { "" });
    c.resolve()
}

/// A model's errors at the two levels, per seed.
#[derive(Clone, Debug, Serialize)]
pub struct ModelPoint {
    pub model: String,
    /// The noise it was trained on (null: the mixture).
    pub trained_sigma: Option<f64>,
    /// Per seed: (error at σ₁, error at σ₂).
    pub errors: Vec<(f64, f64)>,
    pub untrained: Vec<(f64, f64)>,
    /// Per seed: whether no single λ reaches both of its errors (ridge at every λ on the grid is
    /// worse at one level or the other).
    pub beyond_frontier: Vec<bool>,
    /// Per seed: min over λ of max(ridge error − model error) over the two levels: > 0 by how much
    /// the best single λ is worse at its worse level (beyond the frontier), < 0 inside it.
    pub frontier_margin: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SelectionReport {
    pub figure: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub wall_seconds: f64,
    pub x_dim: usize,
    pub levels: Vec<f64>,
    /// (λ, error at σ₁, error at σ₂) for ridge over the grid.
    pub frontier: Vec<(f64, f64, f64)>,
    /// Ridge at each level's Bayes λ = σ²/τ² (= dσ²): (λ, error at σ₁, error at σ₂).
    pub ridge_at_bayes_lambdas: Vec<(f64, f64, f64)>,
    /// The per-level Bayes errors (ridge at that level's own λ, each on its own level).
    pub bayes_errors: (f64, f64),
    /// The mixture's posterior mean (`bayes_ridge` with both levels) at each level.
    pub mixture_posterior_errors: (f64, f64),
    /// Ridge with σ² estimated per prompt (`ada_ridge`), which does not know the levels.
    pub ada_ridge_errors: (f64, f64),
    /// The best single λ for the mixture (equal weight on the two levels): (λ, err₁, err₂).
    pub best_single_lambda: (f64, f64, f64),
    pub models: Vec<ModelPoint>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

fn error(p: &Prompts, preds: &Array2<f64>) -> f64 {
    p.squared_errors(preds).iter().sum::<f64>() / p.batch() as f64
}

fn errors_of(learner: &dyn Learner, levels: &[Prompts; 2]) -> anyhow::Result<(f64, f64)> {
    Ok((error(&levels[0], &learner.predict(&levels[0])?.preds), error(&levels[1], &learner.predict(&levels[1])?.preds)))
}

/// Whether some λ on the frontier is at least as good at both levels as `point`.
fn reachable(frontier: &[(f64, f64, f64)], point: (f64, f64)) -> bool {
    margin(frontier, point) <= 0.0
}

/// min over λ of max(e₁(λ) − point₁, e₂(λ) − point₂).
fn margin(frontier: &[(f64, f64, f64)], point: (f64, f64)) -> f64 {
    frontier.iter().map(|&(_, e1, e2)| (e1 - point.0).max(e2 - point.1)).fold(f64::INFINITY, f64::min)
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    crate::learners::register();
    let start = Instant::now();
    let d = dim(opts.quick);
    let tau2 = 1.0 / d as f64;
    // Prompts at each level alone (the `label_noise` shift sets one level).
    let mixture = task(d, None).build()?;
    let level_prompts: [Prompts; 2] = LEVELS.map(|s| {
        let t =
            mixture.shifted(Shift { kind: ShiftKind::LabelNoise, value: s }).expect("gaussian_linear has label noise");
        crate::rng::prompts(t.as_ref(), PROMPTS, EVAL_SEED)
    });
    let bayes_lambdas: Vec<f64> = LEVELS.iter().map(|s| s * s / tau2).collect();
    let (lo, hi) = (bayes_lambdas[0].log10() - 2.5, bayes_lambdas[1].log10() + 2.5);
    let paths = [RidgePath::new(&level_prompts[0])?, RidgePath::new(&level_prompts[1])?];
    let frontier: Vec<(f64, f64, f64)> = (0..FRONTIER_POINTS)
        .map(|i| {
            let lambda = 10f64.powf(lo + (hi - lo) * i as f64 / (FRONTIER_POINTS - 1) as f64);
            (lambda, paths[0].mean_squared_error(lambda), paths[1].mean_squared_error(lambda))
        })
        .collect();
    let ridge_at_bayes_lambdas: Vec<(f64, f64, f64)> = bayes_lambdas
        .iter()
        .map(|&lambda| errors_of(&Ridge { lambda }, &level_prompts).map(|(a, b)| (lambda, a, b)))
        .collect::<anyhow::Result<_>>()?;
    let bayes_errors = (ridge_at_bayes_lambdas[0].1, ridge_at_bayes_lambdas[1].2);
    let posterior = BayesRidge::new(tau2.sqrt(), LEVELS.to_vec(), None)?;
    let mixture_posterior_errors = errors_of(&posterior, &level_prompts)?;
    let ada_ridge_errors = errors_of(&AdaRidge { w_scale: tau2.sqrt() }, &level_prompts)?;
    let best_single_lambda =
        frontier.iter().copied().min_by(|a, b| (a.1 + a.2).total_cmp(&(b.1 + b.2))).expect("a frontier");

    let mut models = Vec::new();
    let mut measurements = Vec::new();
    let level_name = |i: usize| format!("sigma={}", LEVELS[i]);
    for trained_sigma in [None, Some(LEVELS[0]), Some(LEVELS[1])] {
        let c = config(trained_sigma, opts.quick)?;
        let runs = train_seeds(&c, opts)?;
        let mut point = ModelPoint {
            model: c.name.clone(),
            trained_sigma,
            errors: Vec::new(),
            untrained: Vec::new(),
            beyond_frontier: Vec::new(),
            frontier_margin: Vec::new(),
        };
        for run in &runs {
            let mut rc = c.clone();
            rc.seed = run.metrics.seed;
            let rc = rc.resolve()?;
            let model = ModelLearner::from_outcome(run, &rc)?.without_sensitivity();
            let twin = ModelLearner::untrained("untrained", &rc)?.without_sensitivity();
            let e = errors_of(&model, &level_prompts)?;
            let u = errors_of(&twin, &level_prompts)?;
            point.errors.push(e);
            point.untrained.push(u);
            point.beyond_frontier.push(!reachable(&frontier, e));
            point.frontier_margin.push(margin(&frontier, e));
            for (learner, (e1, e2)) in [("model", e), ("untrained", u)] {
                for (i, value) in [e1, e2].into_iter().enumerate() {
                    let mut m = Measurement::new("gaussian_linear", learner, Default::default(), "error", value);
                    m.model = Some(c.name.clone());
                    m.seed = Some(rc.seed);
                    m.params.insert("eval_noise".into(), level_name(i).into());
                    measurements.push(m);
                }
            }
        }
        models.push(point);
    }
    for &(lambda, e1, e2) in frontier.iter().step_by(ROW_EVERY) {
        for (i, value) in [e1, e2].into_iter().enumerate() {
            let mut params = icl_tasks::Params::new();
            params.insert("lambda".into(), lambda.into());
            params.insert("eval_noise".into(), level_name(i).into());
            measurements.push(Measurement::new("gaussian_linear", "ridge", params, "error", value));
        }
    }
    let files =
        render_figure(&frontier, &ridge_at_bayes_lambdas, bayes_errors, mixture_posterior_errors, &models, opts)?;
    let report = SelectionReport {
        figure: NAME,
        quick: opts.quick,
        seeds: opts.seed_count(),
        wall_seconds: start.elapsed().as_secs_f64(),
        x_dim: d,
        levels: LEVELS.to_vec(),
        frontier,
        ridge_at_bayes_lambdas,
        bayes_errors,
        mixture_posterior_errors,
        ada_ridge_errors,
        best_single_lambda,
        models,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report, opts))
}

fn render_figure(
    frontier: &[(f64, f64, f64)],
    at_bayes: &[(f64, f64, f64)],
    bayes: (f64, f64),
    posterior: (f64, f64),
    models: &[ModelPoint],
    opts: &FigureOptions,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let dot = |label: String, color: usize, points: Vec<(f64, f64)>| Series {
        label,
        color,
        markers: true,
        points,
        ..Default::default()
    };
    // The frontier where it matters: λ → 0 interpolates the noise (errors in the tens at n = d),
    // so only points within 1.25× the largest error of a model or a marked point are drawn.
    let marked: Vec<(f64, f64)> = models
        .iter()
        .flat_map(|m| m.errors.iter().copied())
        .chain([posterior, bayes])
        .chain(at_bayes.iter().map(|&(_, a, b)| (a, b)))
        .collect();
    let bound = 1.25 * marked.iter().fold(0.0f64, |m, &(a, b)| m.max(a).max(b));
    let mut series = vec![Series {
        label: "ridge, every λ (the frontier)".into(),
        color: 5,
        points: frontier.iter().filter(|&&(_, a, b)| a <= bound && b <= bound).map(|&(_, a, b)| (a, b)).collect(),
        ..Default::default()
    }];
    for (i, &(lambda, a, b)) in at_bayes.iter().enumerate() {
        series.push(dot(format!("ridge λ = {lambda:.2} (σ = {})", LEVELS[i]), 5 + 3 * i, vec![(a, b)]));
    }
    series.push(dot("Bayes errors (each level's own ridge)".into(), 2, vec![bayes]));
    series.push(dot("mixture posterior (bayes_ridge)".into(), 4, vec![posterior]));
    for (i, m) in models.iter().enumerate() {
        let label = match m.trained_sigma {
            None => "model trained on the mixture".to_string(),
            Some(s) => format!("model trained on σ = {s}"),
        };
        series.push(dot(label, [0, 1, 3][i % 3], m.errors.clone()));
    }
    let chart = Chart {
        title: "algorithm selection: error at each noise level".into(),
        x_label: format!("error at σ = {} (squared, vs the noise-free target)", LEVELS[0]),
        y_label: format!("error at σ = {}", LEVELS[1]),
        series,
        ..Default::default()
    };
    render(&Panel { charts: vec![chart], chart_size: Some((640, 480)) }, &opts.figures_root.join(NAME), "frontier")
}

fn pair_cell(v: &[(f64, f64)], first: bool) -> String {
    let xs: Vec<f64> = v.iter().map(|p| if first { p.0 } else { p.1 }).collect();
    let (lo, hi) = min_max(&xs);
    format!("{:.4} [{lo:.4}, {hi:.4}]", mean(&xs))
}

fn markdown(r: &SelectionReport, opts: &FigureOptions) -> String {
    let (s1, s2) = (r.levels[0], r.levels[1]);
    let mut out = String::from("# Bai et al. 2023: in-context algorithm selection between two noise levels\n\n");
    out += &format!(
        "Made by `{}`. Task: `gaussian_linear`, d = {d}, N = {d} in-context examples, w ~ N(0, I/d), noise σ drawn per \
         prompt from {{{s1}, {s2}}} with equal prior (`noise_levels`). Models: 5 separate linear self-attention layers \
         trained on the mixture, and on each level alone. Errors are mean squared errors against the noise-free query \
         target on {PROMPTS} prompts at each level; mean over {} seed(s) with [min, max]. The frontier is ridge at {} λ's \
         from {:.3} to {:.1}.\n\n",
        opts.command(NAME),
        r.seeds,
        r.frontier.len(),
        r.frontier.first().map_or(0.0, |f| f.0),
        r.frontier.last().map_or(0.0, |f| f.0),
        d = r.x_dim,
    );
    out += &format!("| predictor | error at σ = {s1} | error at σ = {s2} | beyond every single λ | margin |\n|---|---|---|---|---|\n");
    for &(lambda, a, b) in &r.ridge_at_bayes_lambdas {
        out += &format!("| ridge λ = {lambda:.3} | {a:.4} | {b:.4} | — | |\n");
    }
    let (bl, b1, b2) = r.best_single_lambda;
    out += &format!("| ridge at the best single λ for the mixture (λ = {bl:.3}) | {b1:.4} | {b2:.4} | — | |\n");
    for (label, point) in [
        ("Bayes, each level's own ridge", r.bayes_errors),
        ("mixture posterior (`bayes_ridge`, both levels)", r.mixture_posterior_errors),
        ("ridge with σ² estimated per prompt (`ada_ridge`)", r.ada_ridge_errors),
    ] {
        out += &format!(
            "| {label} | {:.4} | {:.4} | {} | {:+.4} |\n",
            point.0,
            point.1,
            yes_no(!reachable(&r.frontier, point)),
            margin(&r.frontier, point)
        );
    }
    for m in &r.models {
        let label =
            m.trained_sigma.map_or("model trained on the mixture".to_string(), |s| format!("model trained on σ = {s}"));
        let beyond = m.beyond_frontier.iter().filter(|b| **b).count();
        out += &format!(
            "| {label} | {} | {} | {beyond}/{} seeds | {} |\n| · its untrained twin | {} | {} | | |\n",
            pair_cell(&m.errors, true),
            pair_cell(&m.errors, false),
            m.errors.len(),
            {
                let (lo, hi) = min_max(&m.frontier_margin);
                format!("{:+.4} [{lo:+.4}, {hi:+.4}]", mean(&m.frontier_margin))
            },
            pair_cell(&m.untrained, true),
            pair_cell(&m.untrained, false),
        );
    }
    out += "\nMargin: min over λ of the larger of (ridge error − this error) at the two levels, on the same prompts: > 0 means \
            every single λ is worse at one level by at least that much.\n\n";
    out += &finding(r);
    out += "\n\n";
    if r.quick {
        out += "Quick variant: d = 10 (the paper's 20) and 4,000 training steps.\n\n";
    }
    out += &super::figures_line(&r.figures);
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Whether the mixture model selects: beyond the frontier in every seed, and how far from the
/// Bayes errors.
fn finding(r: &SelectionReport) -> String {
    let Some(m) = r.models.iter().find(|m| m.trained_sigma.is_none()) else { return String::new() };
    let beyond = m.beyond_frontier.iter().filter(|b| **b).count();
    let (e1, e2) = (
        mean(&m.errors.iter().map(|e| e.0).collect::<Vec<_>>()),
        mean(&m.errors.iter().map(|e| e.1).collect::<Vec<_>>()),
    );
    let (p1, p2) = r.mixture_posterior_errors;
    let verdict = if beyond == m.errors.len() {
        "reaches a point that no single λ reaches in every seed: it adapts its regularisation to the prompt's noise level, as Bai et al. report"
    } else if beyond > 0 {
        "sits on the single-λ frontier (its margins straddle 0): it does as well as the best fixed ridge for the mixture, and no seed gets clearly beyond it, so this is no evidence of selection (Bai et al.'s model gets beyond)"
    } else {
        "does not get beyond the single-λ frontier: on these numbers it behaves like one fixed learner, not like a selector (Bai et al.'s model does)"
    };
    let (lo, hi) = min_max(&m.frontier_margin);
    format!(
        "**Finding:** the mixture-trained model ({beyond}/{} seeds beyond the frontier, margin {:+.4} [{lo:+.4}, {hi:+.4}]) {verdict}. Its errors {e1:.4} / {e2:.4} \
         against the mixture posterior's {p1:.4} / {p2:.4} (the Bayes predictor of its training distribution; {}).",
        m.errors.len(),
        mean(&m.frontier_margin),
        if e1 <= 1.05 * p1 && e2 <= 1.05 * p2 { "within 5% at both levels" } else { "short of it" }
    )
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn a_point_is_reachable_when_one_lambda_is_no_worse_at_both_levels() {
        let frontier = [(0.1, 1.0, 3.0), (1.0, 2.0, 2.0), (10.0, 3.0, 1.0)];
        assert!(reachable(&frontier, (2.0, 2.5)));
        assert!(!reachable(&frontier, (1.5, 1.5)));
        assert!((super::margin(&frontier, (1.5, 1.5)) - 0.5).abs() < 1e-12);
    }
}
