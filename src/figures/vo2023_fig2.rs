//! von Oswald et al. 2023, Figure 2: a single recurrent linear self-attention layer trained on
//! linear regression matches one step of gradient descent (loss, alignment over training,
//! out-of-distribution input scales). Settings: `presets/vo2023-fig2.toml` (spec §1.4);
//! metrics: spec §1.6; target numbers: spec §6 rows 1–3.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use icl_probes::measure::Measurement;
use icl_tasks::ShiftKind;

use super::{file_list, mean, mean_band, std, train_seeds, write_report, FigureOptions};
use crate::config::RunConfig;
use crate::evaluate::{sample_prompts, EvalRow};
use crate::learners::ModelLearner;
use crate::measure::{curve_of, run_rows, shift_sweep, shift_value, Swept};
use crate::plot::{render, Chart, Panel, Series};

pub const NAME: &str = "vo2023-fig2";

/// The paper's numbers (spec §6): the official notebook's 1-step GD loss, the zero predictor.
const PAPER_GD_LOSS: f64 = 0.2047;
const PAPER_ETA: f64 = 6.0;
const ZERO_PREDICTOR: (f64, f64) = (0.416, 0.421);
/// Acceptance gates of the foundation issue.
const GATE_LOSS_GAP: f64 = 0.003;
const GATE_COS: f64 = 0.995;

const OOD_TASKS: usize = 10_000;
const OOD_SEED: u64 = 1_000;

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let config = RunConfig::preset(NAME)?;
    let runs = train_seeds(&config, opts)?;
    let train_wall: f64 = runs.iter().map(|r| r.metrics.wall_s).sum();
    let gd_ref = runs[0].metrics.reference("gd").context("no GD reference")?;
    let gd_eta = gd_ref.etas[0]; // one step: one η

    // Out-of-distribution input scales (the task's own sweep, the official arange(0.5, 2.03, 0.03)):
    // the trained models and GD with the η tuned in distribution.
    let task = config.task();
    let models: Vec<ModelLearner> = runs
        .iter()
        .map(|r| Ok(ModelLearner::from_outcome(r, &config)?.without_sensitivity()))
        .collect::<anyhow::Result<_>>()?;
    let alphas =
        task.shifts().into_iter().find(|s| s.kind == ShiftKind::InputScale).context("input-scale sweep")?.values;
    let mut swept = vec![Swept::reference(gd_ref)];
    swept.extend(models.iter().map(Swept::model));
    let ood_rows = shift_sweep(task.as_ref(), ShiftKind::InputScale, &alphas, &swept, OOD_TASKS, OOD_SEED)?;
    let ood_gd = curve_of(&ood_rows, |m| m.model.is_none(), shift_value);
    let ood_tf: Vec<Vec<(f64, f64)>> =
        models.iter().map(|m| curve_of(&ood_rows, |r| r.seed == m.seed && r.model.is_some(), shift_value)).collect();
    let mut measurements: Vec<Measurement> = runs.iter().flat_map(|r| run_rows(r, task.name())).collect();
    measurements.extend(ood_rows);

    let eval_prompts = sample_prompts(&config.task, config.eval.tasks, config.eval.seed)?;
    let zero_loss = eval_prompts.half_mse(&ndarray::Array2::zeros(eval_prompts.yq.raw_dim()));

    // Panels.
    let curve = |f: &dyn Fn(&crate::evaluate::EvalRow) -> f64| -> Vec<Vec<(f64, f64)>> {
        runs.iter().map(|r| r.metrics.rows.iter().map(|row| (row.step as f64, f(row))).collect()).collect()
    };
    let steps = config.train.steps as f64;
    let loss_top = 0.5;
    let mut interp = mean_band("Interpolated", 2, &curve(&|r| r.interpolated_loss.unwrap_or(f64::NAN)));
    // The interpolation divides by the trained KQ scale, which is ~0 before training takes off:
    // points off the chart are left out rather than drawn as spikes.
    interp.points.retain(|p| p.1 <= loss_top);
    interp.band.retain(|b| b.2 <= loss_top);
    // The trained and GD curves coincide at this scale: a second chart shows trained − GD from
    // the step the trained loss first comes within 0.01 of GD's.
    let gap_curves: Vec<Vec<(f64, f64)>> = curve(&|r| r.loss - gd_ref.loss);
    let from = gap_curves.iter().flatten().find(|p| p.1 <= 0.01).map_or(0.0, |p| p.0);
    let gap_after: Vec<Vec<(f64, f64)>> =
        gap_curves.iter().map(|c| c.iter().copied().filter(|p| p.0 >= from).collect()).collect();
    let loss_panel = Panel {
        charts: vec![
            Chart {
                title: "Loss: 1-layer LSA vs 1-step GD".into(),
                x_label: "training steps".into(),
                y_label: "loss (½·MSE)".into(),
                y_range: Some((0.0, loss_top)),
                series: vec![
                    mean_band("Trained TF", 0, &curve(&|r| r.loss)),
                    Series::flat(format!("GD (η = {:.2})", gd_eta), gd_ref.loss, steps, 1),
                    interp,
                ],
                ..Default::default()
            },
            Chart {
                title: "Trained − GD, after the drop".into(),
                x_label: "training steps".into(),
                y_label: "loss difference (½·MSE)".into(),
                series: vec![
                    mean_band("Trained TF − GD", 0, &gap_after),
                    Series {
                        label: "0".into(),
                        points: vec![(from, 0.0), (steps, 0.0)],
                        dashed: true,
                        color: 5,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let align_panel = Panel {
        charts: vec![
            Chart {
                title: "Model cos (TF, GD)".into(),
                x_label: "training steps".into(),
                y_label: "cosine of ∂ŷ/∂x_q".into(),
                series: vec![mean_band("Model cos", 0, &curve(&|r| r.vs_gd().model_cos))],
                ..Default::default()
            },
            Chart {
                title: "Differences (TF, GD)".into(),
                x_label: "training steps".into(),
                y_label: "L2 distance".into(),
                series: vec![
                    mean_band("Preds diff", 1, &curve(&|r| r.vs_gd().preds_diff)),
                    mean_band("Model diff", 3, &curve(&|r| r.vs_gd().model_diff)),
                ],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let ood_panel = Panel {
        charts: vec![Chart {
            title: "Out of distribution: input scale".into(),
            x_label: "α (x ~ U(−α/2, α/2); training α = 1)".into(),
            y_label: "loss (½·MSE, log scale)".into(),
            log_y: true,
            series: {
                // The zero predictor scales as α² (y = wᵀx); the training scale α = 1 is marked.
                let zero: Vec<(f64, f64)> = ood_gd.iter().map(|p| (p.0, zero_loss * p.0 * p.0)).collect();
                let ys = ood_gd.iter().chain(&zero).map(|p| p.1).filter(|y| *y > 0.0);
                let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
                vec![
                    mean_band("Trained TF", 0, &ood_tf),
                    Series { label: "GD".into(), points: ood_gd.clone(), dashed: true, color: 1, ..Default::default() },
                    Series {
                        label: "zero predictor".into(),
                        points: zero,
                        dashed: true,
                        color: 5,
                        ..Default::default()
                    },
                    Series {
                        label: "training α = 1".into(),
                        points: vec![(1.0, lo), (1.0, hi)],
                        dashed: true,
                        color: 4,
                        ..Default::default()
                    },
                ]
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let fig_dir = opts.figures_root.join(NAME);
    let mut files = Vec::new();
    for (panel, stem) in [(&loss_panel, "loss"), (&align_panel, "alignment"), (&ood_panel, "ood")] {
        files.extend(render(panel, &fig_dir, stem)?);
    }

    // Numbers.
    let finals: Vec<&crate::evaluate::EvalRow> =
        runs.iter().map(|r| r.metrics.rows.last().context("no evaluation rows")).collect::<anyhow::Result<_>>()?;
    let field = |f: &dyn Fn(&crate::evaluate::EvalRow) -> f64| -> Vec<f64> { finals.iter().map(|r| f(r)).collect() };
    let tf_loss = field(&|r| r.loss);
    let interp_loss = field(&|r| r.interpolated_loss.unwrap_or(f64::NAN));
    let gaps = field(&|r| (r.loss - gd_ref.loss).abs());
    let cos = field(&|r| r.vs_gd().model_cos);
    let model_diff = field(&|r| r.vs_gd().model_diff);
    let preds_diff = field(&|r| r.vs_gd().preds_diff);
    let untrained_cos: Vec<f64> = runs.iter().map(|r| r.metrics.rows[0].vs_gd().model_cos).collect();
    let untrained_loss: Vec<f64> = runs.iter().map(|r| r.metrics.rows[0].loss).collect();
    let report = Fig2Report {
        figure: NAME,
        seeds: (0..opts.seed_count() as u64).collect(),
        steps: config.train.steps,
        eval_tasks: config.eval.tasks,
        device: runs[0].metrics.device.clone(),
        wall_seconds: start.elapsed().as_secs_f64(),
        training_seconds_summed_over_seeds: train_wall,
        reused_runs: runs.iter().filter(|r| r.reused).count(),
        gd: GdSummary { eta: gd_eta, eta_over_n: gd_eta / config.dims().context_len as f64, loss: gd_ref.loss },
        final_: Final {
            trained_loss: mean(&tf_loss),
            trained_loss_std: std(&tf_loss),
            gd_loss: gd_ref.loss,
            interpolated_loss: mean(&interp_loss),
            loss_gap: mean(&gaps),
            loss_gap_max: gaps.iter().copied().fold(0.0, f64::max),
            preds_diff: mean(&preds_diff),
            model_diff: mean(&model_diff),
            model_cos: mean(&cos),
            model_cos_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        },
        control_untrained_model_cos: mean(&untrained_cos),
        control_untrained_loss: mean(&untrained_loss),
        zero_predictor_loss: zero_loss,
        per_seed: runs
            .iter()
            .zip(&finals)
            .map(|(r, f)| SeedFinal {
                seed: r.metrics.seed,
                final_: (*f).clone(),
                run_dir: r.dir.display().to_string(),
            })
            .collect(),
        ood_input_scale: Ood {
            alpha: alphas,
            gd_loss: ood_gd.iter().map(|p| p.1).collect(),
            trained_loss_mean: (0..ood_gd.len())
                .map(|i| mean(&ood_tf.iter().map(|c| c[i].1).collect::<Vec<_>>()))
                .collect(),
        },
        paper: Paper {
            gd_loss: PAPER_GD_LOSS,
            eta: PAPER_ETA,
            zero_predictor_loss: [ZERO_PREDICTOR.0, ZERO_PREDICTOR.1],
        },
        gates: Gates {
            loss_gap: gaps.iter().all(|g| *g <= GATE_LOSS_GAP),
            model_cos: cos.iter().all(|c| *c >= GATE_COS),
            gd_loss: (gd_ref.loss - PAPER_GD_LOSS).abs() <= 0.006,
        },
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report, opts))
}

/// `reports/vo2023-fig2.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Fig2Report {
    pub figure: &'static str,
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub eval_tasks: usize,
    pub device: String,
    pub wall_seconds: f64,
    pub training_seconds_summed_over_seeds: f64,
    pub reused_runs: usize,
    pub gd: GdSummary,
    /// Means over seeds of the final evaluation.
    #[serde(rename = "final")]
    pub final_: Final,
    pub control_untrained_model_cos: f64,
    pub control_untrained_loss: f64,
    pub zero_predictor_loss: f64,
    pub per_seed: Vec<SeedFinal>,
    pub ood_input_scale: Ood,
    pub paper: Paper,
    pub gates: Gates,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GdSummary {
    pub eta: f64,
    pub eta_over_n: f64,
    pub loss: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Final {
    pub trained_loss: f64,
    pub trained_loss_std: f64,
    pub gd_loss: f64,
    pub interpolated_loss: f64,
    pub loss_gap: f64,
    pub loss_gap_max: f64,
    pub preds_diff: f64,
    pub model_diff: f64,
    pub model_cos: f64,
    pub model_cos_min: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeedFinal {
    pub seed: u64,
    #[serde(rename = "final")]
    pub final_: EvalRow,
    pub run_dir: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ood {
    pub alpha: Vec<f64>,
    pub gd_loss: Vec<f64>,
    pub trained_loss_mean: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Paper {
    pub gd_loss: f64,
    pub eta: f64,
    pub zero_predictor_loss: [f64; 2],
}

/// The foundation issue's acceptance gates, every seed.
#[derive(Clone, Debug, Serialize)]
pub struct Gates {
    #[serde(rename = "loss_gap_le_0.003")]
    pub loss_gap: bool,
    #[serde(rename = "model_cos_ge_0.995")]
    pub model_cos: bool,
    #[serde(rename = "gd_loss_within_0.006_of_0.2047")]
    pub gd_loss: bool,
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "pass"
    } else {
        "FAIL"
    }
}

fn markdown(s: &Fig2Report, opts: &FigureOptions) -> String {
    let body = markdown_body(s, opts);
    if !opts.quick {
        return body;
    }
    // --quick is honoured by saying so: there is nothing to shorten.
    let note =
        "`--quick` changes nothing for this figure: the paper's setting trains in about half a minute on a CPU.\n\n";
    body.replacen("Setting (official code", &format!("{note}Setting (official code"), 1)
}

fn markdown_body(s: &Fig2Report, opts: &FigureOptions) -> String {
    let f = &s.final_;
    let (gd, tf, gap, cos) = (f.gd_loss, f.trained_loss, f.loss_gap, f.model_cos);
    let seeds = s.seeds.len();
    let rel = |p: &std::path::Path| pathdiff(p, &opts.reports_root);
    let fig = opts.figures_root.join(NAME);
    format!(
        "# von Oswald et al. 2023, Figure 2: one linear self-attention layer vs one step of GD

Made by `icl-lab reproduce {NAME}`: {seeds} seed(s) × {steps} steps, evaluation on {eval} fixed tasks,
device `{device}`. Every number below is read from
`reports/{NAME}.json`, which the same command wrote.

Setting (official code, spec §1.4): d = N = 10, x ~ U(−0.5, 0.5), w ~ N(0, I), no noise; one recurrent
linear self-attention layer, keys/values from context tokens only; Adam (0.9, 0.98), lr 1e-3, global-norm
clip 0.001, 2048 fresh tasks per step. Losses are ½·MSE.

| quantity | ours | paper / official code | difference |
|---|---|---|---|
| 1-step GD loss, η tuned on the official grid | {gd:.4} (η = {eta:.2}, η/N = {eta_n:.3}) | 0.2047 (η ≈ 6.0, η/N ≈ 0.60) | {dgd:+.4} |
| trained 1-layer LSA loss | {tf:.4} ± {tf_std:.4} | ≈ GD loss (curves coincide, Fig. 2) | {dtf:+.4} vs our GD |
| \\|loss_TF − loss_GD\\| | {gap:.4} (max over seeds {gapmax:.4}) | ≈ 0 | gate ≤ 0.003: {g1} |
| interpolated model loss (A.3) | {interp:.4} | ≈ GD loss | {dint:+.4} vs our GD |
| model cos (TF, GD) | {cos:.4} (min {cosmin:.4}) | ≈ 1 (plot only) | gate ≥ 0.995: {g2} |
| model diff | {md:.4} | ≈ 0 (plot only; axis 0–2.5) | |
| preds diff | {pd:.4} | ≈ 0 (plot only) | |
| control: untrained model (step 0), loss / model cos | {uloss:.4} / {ucos:.4} | — | |
| zero predictor loss | {zero:.4} | 0.416–0.421 | |

GD-loss gate (0.2047 ± 0.006): {g3}.

Why our GD loss is not exactly 0.2047: it is measured on our own 10,000-task evaluation set; with 10k tasks
the sampling error of this loss is about ±0.003 (spec §6 row 2 computes 0.205 on 100k tasks and 0.208 on 10k).
Our set is slightly harder than average: relative to the zero predictor on the same tasks, GD scores
{gd_rel:.3} of it, the paper 0.2047/0.4167 = 0.491 (0.4167 = E[y²]/2 for d = 10, x ~ U(−0.5, 0.5)).
The paper text says x ~ U(−1, 1); like the official code, we train on U(−0.5, 0.5), which is what gives 0.2047
(under U(−1, 1) optimal 1-step GD scores 0.821).

## Figures

Loss over training (mean over seeds; band: min–max when several seeds):

![loss]({loss_png})

Alignment of the trained model with GD (sensitivities ∂ŷ/∂x_q by autograd):

![alignment]({align_png})

Out-of-distribution input scale (GD keeps the η tuned at α = 1; log scale):

![ood]({ood_png})

SVG versions sit beside each PNG.
",
        steps = s.steps,
        eval = s.eval_tasks,
        device = s.device,
        eta = s.gd.eta,
        eta_n = s.gd.eta_over_n,
        dgd = gd - PAPER_GD_LOSS,
        tf_std = f.trained_loss_std,
        dtf = tf - gd,
        gapmax = f.loss_gap_max,
        g1 = pass(s.gates.loss_gap),
        interp = f.interpolated_loss,
        dint = f.interpolated_loss - gd,
        cosmin = f.model_cos_min,
        g2 = pass(s.gates.model_cos),
        md = f.model_diff,
        pd = f.preds_diff,
        ucos = s.control_untrained_model_cos,
        uloss = s.control_untrained_loss,
        zero = s.zero_predictor_loss,
        g3 = pass(s.gates.gd_loss),
        gd_rel = gd / s.zero_predictor_loss,
        loss_png = rel(&fig.join("loss.png")),
        align_png = rel(&fig.join("alignment.png")),
        ood_png = rel(&fig.join("ood.png")),
    )
}

/// `path` relative to `base`, for links from a report to its figures.
fn pathdiff(path: &std::path::Path, base: &std::path::Path) -> String {
    // Lexically: drop the common prefix, climb out of the rest of `base`, descend into `path`
    // (both relative to the working directory, or both absolute).
    fn parts(p: &std::path::Path) -> Vec<std::path::Component<'_>> {
        p.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
    }
    let (path, base) = (parts(path), parts(base));
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut rel = "../".repeat(base.len() - common);
    let rest: Vec<String> = path[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    rel += &rest.join("/");
    rel
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn figure_links_are_relative_to_the_report() {
        let link = |p: &str, base: &str| super::pathdiff(Path::new(p), Path::new(base));
        assert_eq!(link("figures/vo2023-fig2/loss.png", "reports"), "../figures/vo2023-fig2/loss.png");
        assert_eq!(link("/tmp/x/figures/a.png", "/tmp/x/reports"), "../figures/a.png");
        assert_eq!(link("./figures/a.png", "out/reports"), "../../figures/a.png");
    }
}
