//! Garg et al. 2022 §5 (Figs. 4–5): a GPT-style transformer trained on each of three more function
//! classes against that class's own baselines — sparse linear regression (vs Lasso), depth-4
//! decision trees (vs greedy trees and gradient boosting) and 2-layer ReLU networks (vs a 2-layer
//! network fitted in context) — as normalised error against the number of in-context examples
//! (the zero predictor scores 1), with 90% bootstrap intervals.
//!
//! The default is the paper's setting (d = 20; sparse k = 3 with up to 40 examples, trees and
//! networks up to 100; the `standard` model, 500,000 steps, the curriculum): GPU-scale.
//! `--quick` trains small models at d = 5 for minutes each on a CPU and says so.

use std::time::Instant;

use serde::Serialize;

use icl_probes::curve::CurveOptions;
use icl_probes::measure::Measurement;

use super::{file_list, train_seeds, write_report, FigureOptions};
use crate::config::{Curriculum, RunConfig};
use crate::curve::RunOnCurve;
use crate::models::GptConfig;
use crate::plot::{curve_chart, render, Panel};

pub const NAME: &str = "garg2022-families";

/// One function class of the figure.
struct Family {
    key: &'static str,
    title: &'static str,
    task: &'static str,
    /// (context length, extra task keys) in the paper's setting and in the quick one.
    full: (usize, &'static [(&'static str, i64)]),
    quick: (usize, &'static [(&'static str, i64)]),
    /// Garg's curriculum start and step for points (paper setting).
    points: (usize, usize),
    /// Published numbers (tasks-learners-probes.md §3): (what, learner, n, value).
    paper: &'static [(&'static str, &'static str, usize, f64)],
}

const FAMILIES: &[Family] = &[
    Family {
        key: "sparse",
        title: "Sparse linear regression",
        task: "sparse_linear",
        full: (40, &[("sparsity", 3)]),
        quick: (10, &[("sparsity", 2)]),
        points: (11, 2),
        paper: &[
            ("transformer, n = 5", "model", 5, 0.58),
            ("transformer, n = 10", "model", 10, 0.09),
            ("Lasso, n = 5", "lasso", 5, 0.62),
            ("Lasso, n = 10", "lasso", 10, 0.08),
        ],
    },
    Family {
        key: "trees",
        title: "Decision trees (depth 4)",
        task: "decision_tree",
        full: (100, &[]),
        quick: (15, &[]),
        points: (26, 5),
        paper: &[("transformer, n = 100", "model", 100, 0.12), ("greedy tree, n = 100", "tree", 100, 0.80)],
    },
    Family {
        key: "relu",
        title: "2-layer ReLU networks",
        task: "relu_net",
        full: (100, &[]),
        quick: (15, &[]),
        points: (26, 5),
        paper: &[("transformer, n = 100", "model", 100, 0.17), ("2-layer net, n = 100", "nn", 100, 0.17)],
    },
];

/// The run config of one family.
fn config(family: &Family, quick: bool) -> anyhow::Result<RunConfig> {
    let (context_len, extra) = if quick { family.quick } else { family.full };
    let mut c = RunConfig::preset(super::garg2022_fig2::NAME)?;
    c.name = format!("{NAME}-{}{}", family.key, if quick { "-quick" } else { "" });
    let mut task = icl_tasks::TaskConfig::new(family.task).with("context_len", context_len as i64);
    for (k, v) in extra {
        task.set(k, *v);
    }
    if quick {
        // d = 5; a 3-layer model of width 32; 5,000 steps at lr 1e-3; the curriculum scaled down.
        task.set("x_dim", 5);
        c.gpt = Some(GptConfig { layers: 3, heads: 2, width: 32 });
        c.curriculum = Some(Curriculum {
            dims_start: 2,
            dims_step: 1,
            points_start: 5,
            points_step: (context_len + 1 - 5).div_ceil(4),
            every: 500,
        });
        c.train.steps = 5000;
        c.train.lr = 1e-3;
        c.eval.every = 1000;
        c.eval.tasks = 500;
    } else {
        let (start, step) = family.points;
        c.curriculum = Some(Curriculum { points_start: start, points_step: step, ..Curriculum::default() });
    }
    c.task = task;
    c.resolve()
}

/// Every family's run config.
pub fn configs(quick: bool) -> anyhow::Result<Vec<RunConfig>> {
    FAMILIES.iter().map(|f| config(f, quick)).collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct FamilyResult {
    pub family: &'static str,
    pub config: RunConfig,
    /// (seed, steps done, final ½·MSE at the query on the evaluation set)
    pub seeds: Vec<(u64, usize, f64)>,
    pub paper: Vec<(String, f64, Option<f64>)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FamiliesReport {
    pub figure: &'static str,
    pub quick: bool,
    pub prompts: usize,
    pub wall_seconds: f64,
    pub families: Vec<FamilyResult>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// The seeds' mean normalised error of `learner` at n (any parameters).
fn value_at(rows: &[Measurement], task: &str, learner: &str, n: usize) -> Option<f64> {
    let values: Vec<f64> = rows
        .iter()
        .filter(|m| m.task == task && m.learner == learner && m.metric == "normalised_error" && m.n_context == Some(n))
        .filter(|m| learner != "tree" || m.params.get("max_depth").and_then(|v| v.as_u64()) == Some(4))
        .map(|m| m.value)
        .collect();
    (!values.is_empty()).then(|| super::mean(&values))
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    crate::learners::register();
    let prompts = if opts.quick { 320 } else { 1280 };
    let mut families = Vec::new();
    let mut measurements = Vec::new();
    let mut files = Vec::new();
    for family in FAMILIES {
        let config = config(family, opts.quick)?;
        let runs = train_seeds(&config, opts)?;
        let task = config.task();
        let dims = task.dims();
        let step = if dims.context_len > 40 { 5 } else { 1 };
        let curve_opts = CurveOptions {
            prompts,
            tuning_prompts: 1024,
            n_values: (0..=dims.context_len).step_by(step).collect(),
            seed: 0,
            ..Default::default()
        };
        let on_curve: Vec<RunOnCurve> = runs.iter().map(|r| RunOnCurve::load(&r.dir)).collect::<anyhow::Result<_>>()?;
        crate::warnln!(
            "{NAME}: {} ({} learners × {} n)",
            family.title,
            task.learners().len(),
            curve_opts.n_values.len()
        );
        let rows = crate::curve::measure(task.as_ref(), &task.learners(), &on_curve, false, &curve_opts)?;
        let title = format!(
            "{} (d = {}): transformer vs baselines{}",
            family.title,
            dims.x_dim,
            if opts.quick { ", quick" } else { "" }
        );
        files.extend(render(
            &Panel { charts: vec![curve_chart(&rows, &title, 1.5)], chart_size: Some((860, 600)) },
            &opts.figures_root.join(NAME),
            family.key,
        )?);
        let paper = family
            .paper
            .iter()
            .map(|(what, learner, n, value)| {
                let ours = if opts.quick { None } else { value_at(&rows, task.name(), learner, *n) };
                (what.to_string(), *value, ours)
            })
            .collect();
        families.push(FamilyResult {
            family: family.key,
            seeds: runs
                .iter()
                .map(|r| (r.metrics.seed, r.metrics.steps_done, r.metrics.rows.last().map_or(f64::NAN, |row| row.loss)))
                .collect(),
            config,
            paper,
        });
        measurements.extend(rows);
    }
    let report = FamiliesReport {
        figure: NAME,
        quick: opts.quick,
        prompts,
        wall_seconds: start.elapsed().as_secs_f64(),
        families,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report))
}

/// The paper's claim for a family, checked at the largest n: sparse and ReLU nets — the
/// transformer is as good as the class's own learner (within 0.05 normalised error); trees — it
/// beats the greedy tree and boosting.
fn claim_line(r: &FamiliesReport, f: &FamilyResult) -> String {
    let task = f.config.task.name.as_str();
    let n = f.config.dims().context_len;
    let at = |learner: &str| value_at(&r.measurements, task, learner, n);
    let Some(model) = at("model") else { return String::new() };
    let (claim, holds, detail) = match f.family {
        "sparse" | "relu" => {
            let (learner, name) = if f.family == "sparse" { ("lasso", "Lasso") } else { ("nn", "the 2-layer net") };
            let Some(b) = at(learner) else { return String::new() };
            (
                format!("transformer ≈ {name}"),
                (model - b).abs() <= 0.05,
                format!("transformer {model:.3}, {name} {b:.3}"),
            )
        }
        _ => {
            let (Some(tree), Some(boost)) = (at("tree"), at("boosting")) else { return String::new() };
            (
                "transformer beats the greedy tree and boosting".to_string(),
                model < tree.min(boost),
                format!("transformer {model:.3}, greedy tree (depth 4) {tree:.3}, boosting {boost:.3}"),
            )
        }
    };
    format!(
        "\nThe paper's claim at the largest n (here {n}): {claim} — {detail}: **{}**{}.\n",
        if holds { "holds" } else { "does not hold" },
        if holds || !r.quick {
            ""
        } else {
            " in this quick setting (small model, 5,000 steps: undertrained, not a refutation)"
        }
    )
}

fn markdown(r: &FamiliesReport) -> String {
    let mut md = format!("# Garg et al. 2022, §5 — {NAME}{}\n\n", if r.quick { " (quick)" } else { "" });
    md += &format!(
        "A GPT-style transformer trained on each function class against that class's baselines; normalised error \
         (the zero predictor scores 1), mean over seeds for the transformer, 90% bootstrap intervals over {} prompts \
         per n in the JSON and the figures.\n\n",
        r.prompts
    );
    if r.quick {
        md += "**Quick setting**, not the paper's: d = 5 (paper 20), contexts of 10 (sparse, k = 2) and 15 (trees, \
               networks) instead of 40 and 100, a 3-layer model of width 32 (paper 12 layers, width 256), 5,000 steps \
               at lr 1e-3 (paper 500,000 at 1e-4). The paper's numbers are for its setting and are not compared.\n\n";
    }
    for f in &r.families {
        let task = f.config.task.name.clone();
        let dims = f.config.dims();
        md += &format!(
            "## {} (`{}`, d = {}, n ≤ {})\n\nTrained: {}.\n\n",
            f.family,
            task,
            dims.x_dim,
            dims.context_len,
            f.seeds
                .iter()
                .map(|(s, steps, loss)| format!("seed {s}, {steps} steps, ½·MSE {loss:.4}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let mut learners: Vec<(String, String)> = vec![("model".into(), "transformer".into())];
        for m in r.measurements.iter().filter(|m| m.task == task && m.learner != "model" && m.learner != "zero") {
            let label = crate::plot::curve_label(m);
            if !learners.iter().any(|(_, l)| *l == label) {
                learners.push((m.learner.clone(), label));
            }
        }
        md += &format!(
            "| n | {} |\n|{}\n",
            learners.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join(" | "),
            "---|".repeat(learners.len() + 1)
        );
        let ns: Vec<usize> = {
            let mut v: Vec<usize> =
                r.measurements.iter().filter(|m| m.task == task).filter_map(|m| m.n_context).collect();
            v.sort();
            v.dedup();
            let last = *v.last().unwrap_or(&0);
            v.into_iter().filter(|&n| n == 1 || n % 5 == 0 || n == last).collect()
        };
        for n in ns {
            let cells: Vec<String> = learners
                .iter()
                .map(|(learner, label)| {
                    let values: Vec<f64> = r
                        .measurements
                        .iter()
                        .filter(|m| {
                            m.task == task
                                && m.learner == *learner
                                && m.metric == "normalised_error"
                                && m.n_context == Some(n)
                                && (learner == "model" || crate::plot::curve_label(m) == *label)
                        })
                        .map(|m| m.value)
                        .collect();
                    if values.is_empty() {
                        "—".into()
                    } else {
                        format!("{:.3}", super::mean(&values))
                    }
                })
                .collect();
            md += &format!("| {n} | {} |\n", cells.join(" | "));
        }
        md += &claim_line(r, f);
        if !r.quick {
            md += "\n| beside the paper | paper | ours |\n|---|---|---|\n";
            for (what, paper, ours) in &f.paper {
                md += &format!("| {what} | {paper} | {} |\n", ours.map_or("—".into(), |v| format!("{v:.3}")));
            }
        }
        md += "\n";
    }
    md += &format!("Figures: {}\n", r.figures.join(", "));
    md
}
