//! von Oswald et al. 2023, Figure 5: the classic token layout (x_i and y_i as separate tokens,
//! concatenated sinusoidal positions) with two layers, the first with softmax. The model reaches
//! the loss of *one* GD step, not two: its first layer copies each y_i next to its x_i (the copy
//! analysis: gradients of layer-1 outputs with respect to the own, the next and the other tokens),
//! and the second does the GD step.

use std::time::Instant;

use serde_json::{json, Value};
use tch::Device;

use icl_probes::gd::{self, LeastSquaresStats};

use super::models::model;
use super::{file_list, load_run, mean, mean_band, std, train_seeds, write_report, FigureOptions};
use crate::evaluate::sample_prompts;
use crate::measure::run_rows;
use icl_probes::measure::Measurement;
use crate::layout;
use crate::plot::{render, Chart, Panel, Series};
use crate::probe::copy_analysis;

pub const NAME: &str = "vo2023-fig5";
const COPY_TASKS: usize = 1000;

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<Value> {
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
        series: vec![mean_band("cos(TF, 1-step GD)", 1, &curve(&|r| r.vs_gd.model_cos))],
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
    let cos: Vec<f64> = runs.iter().map(|r| r.metrics.rows.last().expect("evaluated").vs_gd.model_cos).collect();
    let means: Vec<(f64, f64, f64)> = copies.iter().map(|a| a.means()).collect();
    let task_name = c.task.name.clone();
    let mut measurements: Vec<Measurement> = runs.iter().flat_map(|r| run_rows(r, &task_name)).collect();
    for (r, (own, next, other)) in runs.iter().zip(&means) {
        for (metric, value) in [("copy_gradient_own", own), ("copy_gradient_next", next), ("copy_gradient_other", other)] {
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
    let summary = json!({
        "figure": NAME,
        "quick": opts.quick,
        "seeds": opts.seed_count(),
        "run_name": c.name,
        "steps": c.train.steps,
        "wall_seconds": start.elapsed().as_secs_f64(),
        "trained_loss": mean(&finals),
        "trained_loss_std": std(&finals),
        "gd_1_step": gd1,
        "gd_2_step": gd2,
        "model_cos_gd_1_step": mean(&cos),
        "copy": {
            "own": mean(&means.iter().map(|m| m.0).collect::<Vec<_>>()),
            "next": mean(&means.iter().map(|m| m.1).collect::<Vec<_>>()),
            "other": mean(&means.iter().map(|m| m.2).collect::<Vec<_>>()),
            "per_seed": copies,
        },
        "gates": {
            "reaches_1_step_gd_within_0.01": (mean(&finals) - gd1.loss).abs() <= 0.01,
            "not_below_2_step_gd": mean(&finals) > gd2.loss,
            "next_token_gradient_over_twice_other": means.iter().all(|m| m.1 > 2.0 * m.2),
        },
        "figures": file_list(&files),
        "measurements": measurements,
    });
    write_report(&opts.reports_root, NAME, &summary, &markdown(&summary))?;
    Ok(summary)
}

fn markdown(s: &Value) -> String {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let pass = |k: &str| if s["gates"][k].as_bool() == Some(true) { "pass" } else { "FAIL" };
    let mut out = String::from("# von Oswald et al. 2023, Figure 5: classic tokens reach one GD step\n\n");
    out += &format!(
        "Made by `icl-lab reproduce {NAME}{}`: {} seed(s) × {} steps, {:.0} s wall; numbers from `reports/{NAME}.json`.\n\n",
        if s["quick"] == true { " --quick" } else { "" },
        s["seeds"],
        s["steps"],
        num(&s["wall_seconds"])
    );
    if s["quick"] == true {
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
        num(&s["trained_loss"]),
        num(&s["trained_loss_std"]),
        num(&s["gd_1_step"]["loss"]),
        num(&s["gd_1_step"]["etas"][0]),
        num(&s["gd_2_step"]["loss"]),
        num(&s["gd_2_step"]["eta"]),
        num(&s["model_cos_gd_1_step"]),
        num(&s["copy"]["own"]),
        num(&s["copy"]["next"]),
        num(&s["copy"]["other"]),
        num(&s["trained_loss"]) - num(&s["gd_1_step"]["loss"]),
    );
    out += &format!(
        "Checks: reaches 1-step GD within 0.01: {}; not below 2-step GD: {}; next-token gradient over twice the others: {}.\n\n",
        pass("reaches_1_step_gd_within_0.01"),
        pass("not_below_2_step_gd"),
        pass("next_token_gradient_over_twice_other")
    );
    out += &format!(
        "![loss](../figures/{NAME}/loss.png)\n\n![copy](../figures/{NAME}/copy.png)\n\nSVG beside each PNG.\n"
    );
    out
}
