//! Garg et al. 2022 §4 (Figs. 3–4): the linear-regression transformer of [`super::garg2022_fig2`]
//! (the same runs, trained once) evaluated off its training distribution, beside least squares,
//! 3-nearest neighbours and averaging under the same shift:
//! - inputs scaled by ⅓, ½, 2, 3 (`input_scale`) and the teacher w scaled the same (`teacher_scale`);
//! - every context input in one random orthant, the query drawn as usual (`context_orthant`,
//!   Garg's `random_quadrants`);
//! - the query equal to one of the context inputs (`query_from_context`, Garg's
//!   `overlapping_train_test`).
//!
//! Our normalised error divides by the *shifted* task's zero-predictor error (so the zero
//! predictor scores 1 under every shift); Garg et al. divide by d whatever the scale. The report
//! gives both for the scaled prompts (Garg's = ours × scale² for inputs and teachers alike).

use std::time::Instant;

use serde::Serialize;

use icl_probes::curve::CurveOptions;
use icl_probes::measure::Measurement;
use icl_tasks::{LearnerSpec, Shift, ShiftKind};

use super::garg2022_fig2::PaperNumber;
use super::{file_list, train_seeds, write_report, FigureOptions};
use crate::config::RunConfig;
use crate::curve::RunOnCurve;
use crate::plot::{curve_chart, render, Panel};

pub const NAME: &str = "garg2022-ood";

/// Garg et al.'s scalings (§4).
const SCALES: [f64; 4] = [1.0 / 3.0, 0.5, 2.0, 3.0];

/// Published normalised errors (÷ d) of the d = 20 transformer at n = 40 under input scaling
/// (tasks-learners-probes.md §3): (scale, value).
const PAPER_INPUT_SCALE_AT_2D: [(f64, f64); 4] = [(1.0 / 3.0, 0.30), (0.5, 0.013), (2.0, 0.043), (3.0, 0.58)];

/// Every evaluation distribution of the figure: the training one first.
fn shifts() -> Vec<Option<Shift>> {
    let mut out = vec![None];
    for kind in [ShiftKind::InputScale, ShiftKind::TeacherScale] {
        out.extend(SCALES.iter().map(|&value| Some(Shift { kind, value })));
    }
    out.push(Some(Shift { kind: ShiftKind::ContextOrthant, value: 1.0 }));
    out.push(Some(Shift { kind: ShiftKind::QueryFromContext, value: 1.0 }));
    out
}

fn shift_label(shift: Option<Shift>) -> String {
    match shift {
        None => "training distribution".into(),
        Some(Shift { kind: ShiftKind::InputScale, value }) => format!("inputs × {}", scale_label(value)),
        Some(Shift { kind: ShiftKind::TeacherScale, value }) => format!("teacher w × {}", scale_label(value)),
        Some(s) => s.kind.label().into(),
    }
}

fn scale_label(v: f64) -> String {
    if (v - 1.0 / 3.0).abs() < 1e-12 {
        "⅓".into()
    } else if (v - 0.5).abs() < 1e-12 {
        "½".into()
    } else {
        format!("{v}")
    }
}

/// Garg et al.'s normalisation (÷ d) over ours (÷ the shifted zero-predictor error): scale² for
/// input and teacher scaling, 1 otherwise.
fn to_garg(shift: Option<Shift>) -> f64 {
    match shift {
        Some(Shift { kind: ShiftKind::InputScale | ShiftKind::TeacherScale, value }) => value * value,
        _ => 1.0,
    }
}

/// One evaluation distribution at n = d and n = 2d.
#[derive(Clone, Debug, Serialize)]
pub struct ShiftRow {
    pub shift: Option<Shift>,
    pub label: String,
    /// Ours ÷ (Garg's normalisation): multiply a normalised error by this for Garg's ÷ d.
    pub to_garg: f64,
    /// The transformer per seed and the seeds' mean, at n = 2d.
    pub transformer_at_2d: Vec<f64>,
    pub transformer_at_2d_mean: f64,
    pub transformer_at_d_mean: f64,
    pub least_squares_at_2d: f64,
    pub knn_at_2d: f64,
    pub averaging_at_2d: f64,
    /// The transformer's mean at n = 2d over its mean on the training distribution.
    pub degradation: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OodReport {
    pub figure: &'static str,
    pub quick: bool,
    pub steps_overridden: bool,
    pub config: RunConfig,
    pub seeds: Vec<u64>,
    pub prompts: usize,
    pub rows: Vec<ShiftRow>,
    /// Garg et al.'s normalised errors (÷ d; d = 20, n = 40) and ours in their normalisation at our n = 2d.
    pub paper: Vec<PaperNumber>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    // The same runs as garg2022-fig2 (same config, same run directories: trained once).
    let config = super::garg2022_fig2::trained_config(opts)?;
    let runs = train_seeds(&config, opts)?;
    let task = config.task();
    let dims = task.dims();
    let d = dims.x_dim;
    let prompts = 1280;
    let learners =
        vec![LearnerSpec::new("least_squares"), LearnerSpec::new("knn").with("k", 3), LearnerSpec::new("averaging")];
    let on_curve: Vec<RunOnCurve> = runs.iter().map(|r| RunOnCurve::load(&r.dir)).collect::<anyhow::Result<_>>()?;
    let mut measurements = Vec::new();
    let all_shifts = shifts();
    for (k, &shift) in all_shifts.iter().enumerate() {
        crate::warnln!("{NAME}: {} ({}/{}), n = 1…{}", shift_label(shift), k + 1, all_shifts.len(), dims.context_len);
        let curve_opts = CurveOptions {
            prompts,
            tuning_prompts: 1024,
            n_values: (1..=dims.context_len).collect(),
            seed: 0,
            shift,
            ..Default::default()
        };
        measurements.extend(crate::curve::measure(task.as_ref(), &learners, &on_curve, false, &curve_opts)?);
    }
    let n2 = (2 * d).min(dims.context_len);
    let value = |shift: Option<Shift>, learner: &str, n: usize| -> Vec<f64> {
        measurements
            .iter()
            .filter(|m| m.shift == shift && m.learner == learner && m.metric == "normalised_error")
            .filter(|m| m.n_context == Some(n))
            .map(|m| m.value)
            .collect()
    };
    let train_mean = super::mean(&value(None, "model", n2));
    let rows: Vec<ShiftRow> = all_shifts
        .iter()
        .map(|&shift| {
            let per_seed = value(shift, "model", n2);
            let mean = super::mean(&per_seed);
            ShiftRow {
                shift,
                label: shift_label(shift),
                to_garg: to_garg(shift),
                transformer_at_2d_mean: mean,
                transformer_at_2d: per_seed,
                transformer_at_d_mean: super::mean(&value(shift, "model", d)),
                least_squares_at_2d: super::mean(&value(shift, "least_squares", n2)),
                knn_at_2d: super::mean(&value(shift, "knn", n2)),
                averaging_at_2d: super::mean(&value(shift, "averaging", n2)),
                degradation: mean / train_mean,
            }
        })
        .collect();
    let paper = PAPER_INPUT_SCALE_AT_2D
        .iter()
        .map(|&(scale, paper)| {
            let row = rows
                .iter()
                .find(|r| r.shift == Some(Shift { kind: ShiftKind::InputScale, value: scale }))
                .expect("every paper scale is evaluated");
            PaperNumber {
                what: format!("inputs × {}, n = 2d", scale_label(scale)),
                paper,
                ours: row.transformer_at_2d_mean * row.to_garg,
            }
        })
        .collect();
    let files = render_figures(&measurements, &config, opts)?;
    let report = OodReport {
        figure: NAME,
        quick: opts.quick,
        steps_overridden: opts.steps.is_some(),
        config,
        seeds: runs.iter().map(|r| r.metrics.seed).collect(),
        prompts,
        rows,
        paper,
        figures: file_list(&files),
        measurements,
    };
    crate::warnln!("{NAME}: {:.0} s", start.elapsed().as_secs_f64());
    write_report(&opts.reports_root, NAME, &report, &markdown(&report, opts))
}

/// Three panels: input scaling, teacher scaling, and the prompt-structure shifts beside the
/// training distribution; one chart per distribution.
fn render_figures(
    rows: &[Measurement],
    config: &RunConfig,
    opts: &FigureOptions,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let chart = |shift: Option<Shift>| {
        let of_shift: Vec<Measurement> = rows.iter().filter(|m| m.shift == shift).cloned().collect();
        let mut c = curve_chart(&of_shift, &shift_label(shift), 1.5);
        c.title = format!("{} (d = {})", shift_label(shift), config.dims().x_dim);
        c
    };
    let dir = opts.figures_root.join(NAME);
    let mut files = Vec::new();
    for (stem, kind) in [("input-scale", ShiftKind::InputScale), ("teacher-scale", ShiftKind::TeacherScale)] {
        let charts = SCALES.iter().map(|&value| chart(Some(Shift { kind, value }))).collect();
        files.extend(render(&Panel { charts, chart_size: Some((560, 420)) }, &dir, stem)?);
    }
    let structure = vec![
        chart(None),
        chart(Some(Shift { kind: ShiftKind::ContextOrthant, value: 1.0 })),
        chart(Some(Shift { kind: ShiftKind::QueryFromContext, value: 1.0 })),
    ];
    files.extend(render(&Panel { charts: structure, chart_size: Some((560, 420)) }, &dir, "prompt-structure")?);
    Ok(files)
}

fn markdown(r: &OodReport, opts: &FigureOptions) -> String {
    let dims = r.config.dims();
    let d = dims.x_dim;
    let n2 = (2 * d).min(dims.context_len);
    let g = r.config.gpt.as_ref().expect("a GPT-style figure");
    let mut md = format!("# Garg et al. 2022 §4 — {NAME}{}\n\n", if r.quick { " (quick)" } else { "" });
    md += &format!(
        "The linear-regression transformer of `garg2022-fig2{}` (the same runs: {} layers, {} heads, width {}, \
         {} steps, d = {}, seeds {}) evaluated off its training distribution, beside least squares, 3-NN and \
         averaging under the same shift; {} prompts per n. Normalised error = squared error ÷ the *shifted* \
         task's zero-predictor error (the zero predictor scores 1 everywhere); Garg et al. divide by d whatever \
         the scale, which is ours × scale² for scaled inputs or teachers (the column \"÷ d\").\n\n",
        if r.quick { " --quick" } else { "" },
        g.layers,
        g.heads,
        g.width,
        r.config.train.steps,
        d,
        r.seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
        r.prompts
    );
    if r.quick {
        md += "**Quick setting**, not the paper's: the quick garg2022-fig2 model (d = 5, n ≤ 10, 3 layers of \
               width 32, 12,000 steps); the paper's is d = 20, n ≤ 40, 12 layers of width 256, 500,000 steps.\n\n";
    }
    if r.steps_overridden {
        md += &format!("**Steps set by `--steps`**: {} training steps.\n\n", r.config.train.steps);
    }
    md += &format!(
        "## At n = 2d = {n2}\n\n| evaluation | transformer (mean; seeds) | ÷ d (Garg's) | × training | transformer at n = d | \
         least squares | 3-NN | averaging |\n|---|---|---|---|---|---|---|---|\n"
    );
    for row in &r.rows {
        md += &format!(
            "| {} | {:.4} ({}) | {:.4} | {:.1} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            row.label,
            row.transformer_at_2d_mean,
            row.transformer_at_2d.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", "),
            row.transformer_at_2d_mean * row.to_garg,
            row.degradation,
            row.transformer_at_d_mean,
            row.least_squares_at_2d,
            row.knn_at_2d,
            row.averaging_at_2d
        );
    }
    md += "\n## Beside the paper\n\n";
    if r.quick {
        md += "The quick model is smaller, shorter-trained and at d = 5, so the numbers are beside each other, not like for like.\n\n";
    }
    md += &format!("| | paper (d = 20, n = 40, ÷ d) | ours (d = {d}, n = {n2}, ÷ d) |\n|---|---|---|\n");
    for p in &r.paper {
        md += &format!("| {} | {} | {:.4} |\n", p.what, p.paper, p.ours);
    }
    md += &verdicts(r);
    md += &format!("\nFigures: {}\n\nReproduce: `{}`\n", r.figures.join(", "), opts.command(NAME));
    md
}

/// What the numbers say, in words: where the transformer keeps up with least squares and where it
/// falls apart.
fn verdicts(r: &OodReport) -> String {
    let mut md = String::from("\n## What it shows\n\n");
    let base = r.rows[0].transformer_at_2d_mean;
    for row in r.rows.iter().skip(1) {
        let t = row.transformer_at_2d_mean;
        let verdict = if t <= 1.5 * base || t <= 0.01 {
            "robust (within 1.5× its training-distribution error)"
        } else if t < 0.5 {
            "degraded, still far better than predicting 0"
        } else if t < 1.0 {
            "badly degraded, though better than predicting 0"
        } else {
            "fails: worse than predicting 0"
        };
        md += &format!(
            "- {}: {:.4}, {:.1}× the training-distribution {:.4} — {verdict}.\n",
            row.label, t, row.degradation, base
        );
    }
    md += "\nLeast squares is unaffected by every shift here (it recovers w exactly from n ≥ d noiseless pairs), so \
           any gap is the transformer's; averaging is not scale-free (its prediction grows as scale³ against the \
           target's scale), hence its large errors under input scaling. Garg et al. report the transformer robust to the orthant and query-in-context \
           shifts and degrading as inputs are scaled away from the training scale, most for ×3 and ×⅓.\n";
    md
}
