//! von Oswald et al. 2023, Figure 5: the classic token layout (x_i and y_i as separate tokens,
//! concatenated sinusoidal positions) with two layers, the first with softmax. The model reaches
//! the loss of *one* GD step, not two: its first layer copies each y_i next to its x_i (the copy
//! analysis: gradients of layer-1 outputs with respect to the own, the next and the other tokens),
//! and the second does the GD step.

use std::time::Instant;

use serde::Serialize;
use tch::Device;

use icl_probes::gd::{self, LeastSquaresStats};

use super::{file_list, load_run, mean, mean_band, std, train_seeds, write_report, FigureOptions};
use crate::evaluate::sample_prompts;
use crate::layout;
use crate::measure::run_rows;
use crate::plot::{render, Chart, Panel, Series};
use crate::presets::model;
use crate::probe::copy_analysis;
use icl_probes::measure::Measurement;

pub const NAME: &str = "vo2023-fig5";
const COPY_TASKS: usize = 1000;

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let spec = model("classic-2", opts.quick)?;
    let c = &spec.config;
    let runs = train_seeds(c, opts)?;
    let gd1 = runs[0].metrics.reference("gd").cloned().ok_or_else(|| anyhow::anyhow!("GD reference"))?;
    let eval = sample_prompts(&c.task, c.eval.tasks, c.eval.seed)?;
    let gd2 = gd::tune_eta(&eval, &LeastSquaresStats::new(&eval), 2, &gd::official_eta_grid());

    let curve = |f: &dyn Fn(&crate::evaluate::EvalRow) -> f64| -> Vec<Vec<(f64, f64)>> {
        runs.iter().map(|r| r.metrics.rows.iter().map(|row| (row.step as f64, f(row))).collect()).collect()
    };
    let steps = c.train.steps as f64;
    let loss = Chart {
        title: "Loss: classic tokens, 2 layers".into(),
        x_label: "training steps".into(),
        y_label: "loss (½·MSE)".into(),
        y_range: Some((0.0, 0.5)),
        series: vec![
            mean_band("Trained TF", 0, &curve(&|r| r.loss)),
            Series::flat(format!("1-step GD (η = {:.2})", gd1.etas[0]), gd1.loss, steps, 1),
            Series::flat(format!("2-step GD (η = {:.2})", gd2.eta), gd2.loss, steps, 2),
        ],
        ..Default::default()
    };
    let align = Chart {
        title: "Alignment with 1-step GD".into(),
        x_label: "training steps".into(),
        y_label: "model cos".into(),
        series: vec![mean_band("cos(TF, 1-step GD)", 1, &curve(&|r| r.vs_gd().model_cos))],
        ..Default::default()
    };

    // Copy analysis on the final models.
    let probe_prompts = sample_prompts(&c.task, COPY_TASKS, c.eval.seed)?;
    let (tokens, _) = layout::tensors(c.model.tokens, &probe_prompts, tch::Kind::Float, Device::Cpu);
    let mut copies = Vec::new();
    for r in &runs {
        let (_, net) = load_run(&r.dir, c, Device::Cpu)?;
        copies.push(copy_analysis(&net, &tokens)?);
    }
    let per_k = |f: &dyn Fn(&crate::probe::CopyAnalysis) -> &Vec<f64>| -> Vec<Vec<(f64, f64)>> {
        copies.iter().map(|a| f(a).iter().enumerate().map(|(k, v)| (k as f64, *v)).collect()).collect()
    };
    let copy = Chart {
        title: "Copy analysis: ‖∂(layer-1 output at k)/∂ token‖".into(),
        x_label: "token k (even: x_i, odd: y_i)".into(),
        y_label: "gradient norm".into(),
        series: vec![
            mean_band("own token (k)", 0, &per_k(&|a| &a.own)),
            mean_band("next token (k+1)", 1, &per_k(&|a| &a.next)),
            mean_band("other tokens", 2, &per_k(&|a| &a.other)),
        ],
        ..Default::default()
    };
    let dir = opts.figures_root.join(NAME);
    let mut files = render(&Panel { charts: vec![loss, align], ..Default::default() }, &dir, "loss")?;
    files.extend(render(&Panel { charts: vec![copy], ..Default::default() }, &dir, "copy")?);

    let finals: Vec<f64> = runs.iter().map(|r| r.metrics.rows.last().expect("evaluated").loss).collect();
    let cos: Vec<f64> = runs.iter().map(|r| r.metrics.rows.last().expect("evaluated").vs_gd().model_cos).collect();
    let means: Vec<(f64, f64, f64)> = copies.iter().map(|a| a.means()).collect();
    let task_name = c.task.name.clone();
    let mut measurements: Vec<Measurement> = runs.iter().flat_map(|r| run_rows(r, &task_name)).collect();
    for (r, (own, next, other)) in runs.iter().zip(&means) {
        for (metric, value) in
            [("copy_gradient_own", own), ("copy_gradient_next", next), ("copy_gradient_other", other)]
        {
            let mut m = Measurement::new(&task_name, "model", Default::default(), metric, *value);
            m.model = Some(r.metrics.name.clone());
            m.seed = Some(r.metrics.seed);
            m.layer = Some(1);
            measurements.push(m);
        }
    }
    let mut gd2_row = Measurement::new(&task_name, "gd", Default::default(), "loss", gd2.loss);
    gd2_row.params.insert("steps".into(), 2.into());
    gd2_row.params.insert("eta".into(), gd2.eta.into());
    measurements.push(gd2_row);
    let (own, next, other) = (
        mean(&means.iter().map(|m| m.0).collect::<Vec<_>>()),
        mean(&means.iter().map(|m| m.1).collect::<Vec<_>>()),
        mean(&means.iter().map(|m| m.2).collect::<Vec<_>>()),
    );
    let report = Fig5Report {
        figure: NAME,
        quick: opts.quick,
        seeds: opts.seed_count(),
        run_name: c.name.clone(),
        steps: c.train.steps,
        wall_seconds: start.elapsed().as_secs_f64(),
        trained_loss: mean(&finals),
        trained_loss_std: std(&finals),
        model_cos_gd_1_step: mean(&cos),
        copy: CopySummary { own, next, other, per_seed: copies },
        gates: Fig5Gates {
            reaches_1_step_gd: (mean(&finals) - gd1.loss).abs() <= 0.01,
            not_below_2_step_gd: mean(&finals) > gd2.loss,
            next_token_gradient: means.iter().all(|m| m.1 > 2.0 * m.2),
        },
        gd_1_step: gd1,
        gd_2_step: gd2,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report))
}

/// `reports/vo2023-fig5.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Fig5Report {
    pub figure: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub run_name: String,
    pub steps: usize,
    pub wall_seconds: f64,
    pub trained_loss: f64,
    pub trained_loss_std: f64,
    pub gd_1_step: crate::references::Reference,
    pub gd_2_step: icl_probes::gd::TunedGd,
    pub model_cos_gd_1_step: f64,
    pub copy: CopySummary,
    pub gates: Fig5Gates,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// Mean gradient norms of the copy analysis over seeds, and each seed's per-token values.
#[derive(Clone, Debug, Serialize)]
pub struct CopySummary {
    pub own: f64,
    pub next: f64,
    pub other: f64,
    pub per_seed: Vec<crate::probe::CopyAnalysis>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fig5Gates {
    #[serde(rename = "reaches_1_step_gd_within_0.01")]
    pub reaches_1_step_gd: bool,
    pub not_below_2_step_gd: bool,
    #[serde(rename = "next_token_gradient_over_twice_other")]
    pub next_token_gradient: bool,
}

fn markdown(s: &Fig5Report) -> String {
    let pass = |ok: bool| if ok { "pass" } else { "FAIL" };
    let mut out = String::from("# von Oswald et al. 2023, Figure 5: classic tokens reach one GD step\n\n");
    out += &format!(
        "Made by `icl-lab reproduce {NAME}{}`: {} seed(s) × {} steps; numbers from `reports/{NAME}.json`.\n\n",
        if s.quick { " --quick" } else { "" },
        s.seeds,
        s.steps,
    );
    if s.quick {
        out += "**Quick variant**: far fewer steps than the paper's 10,000; the model may not have reached its final loss.\n\n";
    }
    out += &format!(
        "| quantity | ours | paper |\n|---|---|---|\n\
         | trained loss | {:.4} ± {:.4} | reaches 1-step GD (0.2047), not 2-step; about 10× slower than the constructed layout |\n\
         | 1-step GD loss (η) | {:.4} ({:.2}) | 0.2047 |\n\
         | 2-step GD loss (η) | {:.4} ({:.2}) | 0.158 (spec, COMPUTED) |\n\
         | cos(TF, 1-step GD) | {:.4} | ≈ 1 |\n\
         | copy: own / next / other gradient norm | {:.4} / {:.4} / {:.4} | the next-token derivative rises far above the other tokens' (the own-token one includes the residual path) |\n\n\
         Where we differ: our trained loss is {:+.4} from our 1-step GD on the same tasks (the paper's curve meets the 1-step line); \
         the loss stays at the zero predictor for a long plateau before dropping (see the figure), which is what makes this \
         layout slow to train.\n\n",
        s.trained_loss,
        s.trained_loss_std,
        s.gd_1_step.loss,
        s.gd_1_step.etas[0],
        s.gd_2_step.loss,
        s.gd_2_step.eta,
        s.model_cos_gd_1_step,
        s.copy.own,
        s.copy.next,
        s.copy.other,
        s.trained_loss - s.gd_1_step.loss,
    );
    out += &format!(
        "Checks: reaches 1-step GD within 0.01: {}; not below 2-step GD: {}; next-token gradient over twice the others: {}.\n\n",
        pass(s.gates.reaches_1_step_gd),
        pass(s.gates.not_below_2_step_gd),
        pass(s.gates.next_token_gradient)
    );
    out += &format!(
        "![loss](../figures/{NAME}/loss.png)\n\n![copy](../figures/{NAME}/copy.png)\n\nSVG beside each PNG.\n"
    );
    out
}
