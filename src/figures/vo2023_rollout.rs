//! von Oswald et al. 2023, Figure 10 (and Fig. 1 right): a trained single layer applied 50 times
//! ("roll-out"), updating only the y-entries, with dampening λ ∈ {1, 0.875, 0.75}, beside 50 GD
//! steps with learning rate λ·η (η: the tuned 1-step learning rate). If the layer implements a GD
//! step, the two loss curves coincide, including divergence at λ = 1.

use std::time::Instant;

use serde::Serialize;
use tch::Device;

use icl_probes::construct::{kq_scale, weight_products};
use icl_probes::gd::{self, LeastSquaresStats};

use super::{file_list, load_run, mean_band, train_seeds, write_report, FigureOptions};
use crate::evaluate::sample_prompts;
use crate::layout;
use crate::models::transformer::{named_weights, ForwardOptions};
use crate::plot::{render, Chart, Panel, Series};
use crate::presets::model;
use crate::probe::per_layer_predictions;
use icl_probes::measure::Measurement;

pub const NAME: &str = "vo2023-fig10";
const STEPS: usize = 50;
const DAMPENING: [f64; 3] = [1.0, 0.875, 0.75];
const TASKS: usize = 2000;

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    reproduce_with(NAME, "Figure 10: roll-out of a trained layer vs GD", &DAMPENING, opts)
}

/// Fig. 1, right panel: the same roll-out at λ = 0.75 alone (the paper's concept figure).
pub const FIG1: &str = "vo2023-fig1";

pub fn reproduce_fig1(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    reproduce_with(
        FIG1,
        "Figure 1 (right panel): a trained layer repeated 50 times (λ = 0.75) vs 50 GD steps",
        &[0.75],
        opts,
    )
}

fn reproduce_with(
    name: &'static str,
    title: &'static str,
    dampening: &[f64],
    opts: &FigureOptions,
) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let spec = model("lsa-1", opts.quick)?;
    let runs = train_seeds(&spec.config, opts)?;
    let c = &spec.config;
    let eta = runs[0].metrics.reference("gd").map(|r| r.etas[0]).ok_or_else(|| anyhow::anyhow!("GD reference"))?;
    let prompts = sample_prompts(&c.task, TASKS, c.eval.seed)?;
    let stats = LeastSquaresStats::new(&prompts);
    let (tokens, _) = layout::tensors(c.model.tokens, &prompts, tch::Kind::Float, Device::Cpu);
    let nets: Vec<_> = runs.iter().map(|r| load_run(&r.dir, c, Device::Cpu)).collect::<anyhow::Result<_>>()?;
    // The learning rate the trained layer itself implements (seed 0): with KQ/β ≈ the construction's,
    // its y→y entry of PV·β is −η/N.
    let products = weight_products(&named_weights(&nets[0].0)?, 0)?;
    let dims = c.dims();
    let beta = kq_scale(&products, dims.x_dim);
    let width = products.pv.nrows();
    let eta_trained = -(products.pv[[width - 1, width - 1]] * beta) * dims.context_len as f64;
    let mut charts = Vec::new();
    let mut rows = Vec::new();
    let mut measurements = Vec::new();
    let task_name = c.task.name.clone();
    for &lambda in dampening {
        let opts_fwd = ForwardOptions { repeats: Some(STEPS), dampening: lambda, y_update: true };
        let tf: Vec<Vec<(f64, f64)>> = nets
            .iter()
            .map(|(_, net)| {
                let per = per_layer_predictions(net, &tokens, opts_fwd)?;
                Ok(per.iter().enumerate().map(|(k, p)| ((k + 1) as f64, prompts.half_mse(p))).collect())
            })
            .collect::<anyhow::Result<_>>()?;
        let gd_curve_at = |rate: f64| -> Vec<(f64, f64)> {
            gd::gd_weights(&stats, &vec![rate; STEPS])
                .iter()
                .enumerate()
                .map(|(k, w)| ((k + 1) as f64, prompts.half_mse(&gd::predict(w, &prompts.xq))))
                .collect()
        };
        let gd_curve = gd_curve_at(eta * lambda);
        let gd_trained_eta = gd_curve_at(eta_trained * lambda);
        // Rows: the trained layer after k applications (per seed), GD after k steps at both rates.
        for (run, curve) in runs.iter().zip(&tf) {
            for &(k, loss) in curve {
                let mut m = Measurement::new(&task_name, "model", Default::default(), "loss", loss);
                m.params.insert("dampening".into(), lambda.into());
                m.model = Some(run.metrics.name.clone());
                m.seed = Some(run.metrics.seed);
                m.layer = Some(k as usize);
                measurements.push(m);
            }
        }
        for (rate, curve, source) in
            [(eta * lambda, &gd_curve, "tuned"), (eta_trained * lambda, &gd_trained_eta, "trained layer")]
        {
            for &(k, loss) in curve.iter() {
                let mut m = Measurement::new(&task_name, "gd", Default::default(), "loss", loss);
                m.params.insert("steps".into(), (k as usize).into());
                m.params.insert("eta".into(), rate.into());
                m.params.insert("eta_from".into(), source.into());
                m.params.insert("dampening".into(), lambda.into());
                measurements.push(m);
            }
        }
        rows.push(Rollout {
            dampening: lambda,
            gd_eta: eta * lambda,
            gd_loss: gd_curve.iter().map(|p| p.1).collect(),
            trained_loss_seed0: tf[0].iter().map(|p| p.1).collect(),
            gd_trained_eta: eta_trained * lambda,
            gd_trained_eta_loss: gd_trained_eta.iter().map(|p| p.1).collect(),
        });
        let finite = |s: Vec<(f64, f64)>| s.into_iter().filter(|p| p.1.is_finite() && p.1 < 1e6).collect::<Vec<_>>();
        let mut tf_series = mean_band("Trained layer, repeated", 0, &tf);
        tf_series.points.retain(|p| p.1.is_finite() && p.1 < 1e6);
        tf_series.band.retain(|b| b.2.is_finite() && b.2 < 1e6);
        charts.push(Chart {
            title: format!("λ = {lambda}"),
            x_label: "GD steps / layer applications".into(),
            y_label: "loss (½·MSE, log scale)".into(),
            log_y: true,
            series: vec![
                tf_series,
                Series {
                    label: format!("GD, tuned η·λ = {:.2}", eta * lambda),
                    points: finite(gd_curve),
                    dashed: true,
                    color: 1,
                    ..Default::default()
                },
                Series {
                    label: format!("GD, the layer's η·λ = {:.2}", eta_trained * lambda),
                    points: finite(gd_trained_eta),
                    dashed: true,
                    color: 2,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
    }
    let files = render(&Panel { charts, ..Default::default() }, &opts.figures_root.join(name), "rollout")?;
    let report = RolloutReport {
        figure: name,
        title,
        quick: opts.quick,
        seeds: opts.seed_count(),
        run_name: c.name.clone(),
        wall_seconds: start.elapsed().as_secs_f64(),
        tasks: TASKS,
        steps: STEPS,
        trained_eta_seed0: eta_trained,
        tuned_eta: eta,
        rollouts: rows,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, name, &report, &markdown(&report))
}

/// `reports/vo2023-fig10.json`.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutReport {
    pub figure: &'static str,
    /// The Markdown title (not in the JSON).
    #[serde(skip)]
    pub title: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub run_name: String,
    pub wall_seconds: f64,
    pub tasks: usize,
    pub steps: usize,
    /// η the trained layer implements (seed 0), −N·(PV·β)_yy.
    pub trained_eta_seed0: f64,
    pub tuned_eta: f64,
    pub rollouts: Vec<Rollout>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// Loss after each of the 50 applications / steps at one dampening λ (null: diverged to NaN).
#[derive(Clone, Debug, Serialize)]
pub struct Rollout {
    pub dampening: f64,
    pub gd_eta: f64,
    pub gd_loss: Vec<f64>,
    pub trained_loss_seed0: Vec<f64>,
    pub gd_trained_eta: f64,
    pub gd_trained_eta_loss: Vec<f64>,
}

fn markdown(s: &RolloutReport) -> String {
    // Losses past 1e6 (or NaN/inf in the f32 model) are a diverged roll-out.
    let at = |v: &[f64], k: usize| {
        let x = v.get(k).copied().unwrap_or(f64::NAN);
        if x.is_finite() && x < 1e6 {
            format!("{x:.4}")
        } else {
            "diverged".into()
        }
    };
    let three = |v: &[f64]| format!("{} / {} / {}", at(v, 0), at(v, 9), at(v, 49));
    let mut out = format!("# von Oswald et al. 2023, {}\n\n", s.title);
    out += &format!(
        "Made by `icl-lab reproduce {}{}`: the trained 1-layer model ({} seed(s)) applied {} times with y-only \
         updates and dampening λ, against {} GD steps, on {} tasks.\n\n",
        s.figure,
        if s.quick { " --quick" } else { "" },
        s.seeds,
        s.steps,
        s.steps,
        s.tasks,
    );
    out += &format!(
        "The paper: the repeated layer follows GD step for step; without dampening (λ = 1) both diverge, with \
         λ < 1 both keep improving. GD is shown twice: with the η tuned for one step ({:.3}) and with the η the \
         trained layer implements ({:.3}, read off its weights as −N·(PV·β)_yy), both times λ. Over 50 repeated \
         steps near the stability limit a small difference in η decides between converging and diverging, so the \
         second is the faithful comparison.\n\n",
        s.tuned_eta, s.trained_eta_seed0
    );
    out += "| λ | loss after 1 / 10 / 50: trained layer (seed 0) | GD, tuned η·λ | GD, the layer's η·λ |\n|---|---|---|---|\n";
    for r in &s.rollouts {
        out += &format!(
            "| {} | {} | {} | {} |\n",
            r.dampening,
            three(&r.trained_loss_seed0),
            three(&r.gd_loss),
            three(&r.gd_trained_eta_loss)
        );
    }
    out += "\nWhere we differ from the paper: the trained layer and GD at the layer's own η";
    for r in &s.rollouts {
        let (t, g) = (&r.trained_loss_seed0, &r.gd_trained_eta_loss);
        let get = |v: &[f64], k: usize| v.get(k).copied().unwrap_or(f64::NAN);
        let agree = |k: usize| {
            let (a, b) = (get(t, k), get(g, k));
            if a.is_finite() && b.is_finite() && a < 1e6 && b < 1e6 {
                format!("step {}: {:+.1}%", k + 1, 100.0 * (a - b) / b)
            } else {
                format!("step {}: {} vs {}", k + 1, at(t, k), at(g, k))
            }
        };
        out += &format!("; λ = {}: {}, {}", r.dampening, agree(9), agree(49));
    }
    out += " (trained relative to GD). Where they part, the trained weights' small deviations from the construction \
            (vo2023-fig9 reports ‖KQ/β − KQ_c‖ ≈ 0.1–0.14 against a norm of 3.16) compound over repeated steps near the \
            stability limit; with dampening 0.75 the roll-out stays stable and the two agree closely.\n";
    out += &format!(
        "\n![rollout](../figures/{}/rollout.png)\n\nSVG beside the PNG. Points above 1e6 are not drawn.\n",
        s.figure
    );
    out
}
