//! von Oswald et al. 2023, Figure 9: the weight products KQ = W_q W_kᵀ and PV = W_v W_o of trained
//! 1-layer and 3-layer recurrent models beside the construction they should match, after the
//! scalar correction β (KQ/β, PV·β compute the same function as KQ, PV). For 1 layer the
//! construction is GD's (Proposition 1); for 3 recurrent layers it is GD++'s (A.10), with the
//! fitted (η, γ). Residual norms ‖KQ/β − KQ_c‖_F and ‖PV·β − PV_c‖_F go in the report.

use std::time::Instant;

use serde::Serialize;
use tch::Device;

use icl_probes::construct::{compare_with_construction, frobenius, gdpp_construction, weight_products};

use icl_probes::learner::Learner;
use icl_probes::measure::Measurement;

use super::{file_list, load_run, train_seeds, write_report, FigureOptions};
use crate::models::transformer::named_weights;
use crate::plot::{render_heatmaps, Heatmap};
use crate::presets::model;

pub const NAME: &str = "vo2023-fig9";

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let mut maps = Vec::new();
    let mut rows = Vec::new();
    let mut measurements = Vec::new();
    for key in ["lsa-1", "lsa-3-rec"] {
        let spec = model(key, opts.quick)?;
        let runs = train_seeds(&spec.config, opts)?;
        let c = &spec.config;
        // The construction to compare with: GD for one layer, GD++ for several.
        let reference = runs[0].metrics.reference(if c.model.layers > 1 { "gd++" } else { "gd" }).cloned();
        let reference = reference.ok_or_else(|| anyhow::anyhow!("{key}: reference missing"))?;
        let t = c.dims();
        let construction =
            gdpp_construction(t.x_dim, t.y_dim, t.context_len, &reference.etas[..1], &reference.gammas[..1]);
        let cp = weight_products(&construction, 0)?;
        let mut per_seed = Vec::new();
        for (s, run) in runs.iter().enumerate() {
            let (vs, _) = load_run(&run.dir, c, Device::Cpu)?;
            let cmp = compare_with_construction(&weight_products(&named_weights(&vs)?, 0)?, &cp, t.x_dim)?;
            let (beta, kq, pv) = (cmp.beta, &cmp.kq, &cmp.pv);
            for (metric, value) in [("kq_residual", cmp.kq_residual), ("pv_residual", cmp.pv_residual), ("beta", beta)]
            {
                let mut m = Measurement::new(&c.task.name, &reference.name, Learner::params(&reference), metric, value);
                m.model = Some(run.metrics.name.clone());
                m.seed = Some(run.metrics.seed);
                m.layer = Some(1);
                measurements.push(m);
            }
            per_seed.push(SeedProducts {
                seed: s,
                beta,
                kq_residual: cmp.kq_residual,
                pv_residual: cmp.pv_residual,
                kq_construction_norm: frobenius(&cp.kq),
                pv_construction_norm: frobenius(&cp.pv),
            });
            if s == 0 {
                let rows_of = |a: &ndarray::Array2<f64>| a.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>();
                maps.push(Heatmap { title: format!("{}: KQ/β (β = {beta:.3})", spec.label), values: rows_of(kq) });
                maps.push(Heatmap {
                    title: format!("{} construction: KQ", reference.name.to_uppercase()),
                    values: rows_of(&cp.kq),
                });
                maps.push(Heatmap { title: format!("{}: PV·β", spec.label), values: rows_of(pv) });
                maps.push(Heatmap {
                    title: format!("{} construction: PV", reference.name.to_uppercase()),
                    values: rows_of(&cp.pv),
                });
            }
        }
        rows.push(ModelProducts {
            key,
            label: spec.label.clone(),
            run_name: c.name.clone(),
            steps: c.train.steps,
            construction: reference,
            per_seed,
        });
    }
    let files = render_heatmaps(&maps, 4, &opts.figures_root.join(NAME), "weights")?;
    let report = WeightsReport {
        figure: NAME,
        quick: opts.quick,
        seeds: opts.seed_count(),
        wall_seconds: start.elapsed().as_secs_f64(),
        models: rows,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report))
}

/// `reports/vo2023-fig9.json`.
#[derive(Clone, Debug, Serialize)]
pub struct WeightsReport {
    pub figure: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub wall_seconds: f64,
    pub models: Vec<ModelProducts>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelProducts {
    pub key: &'static str,
    pub label: String,
    pub run_name: String,
    pub steps: usize,
    /// The reference whose construction the products are compared with (GD, or GD++ for several layers).
    pub construction: crate::references::Reference,
    pub per_seed: Vec<SeedProducts>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeedProducts {
    pub seed: usize,
    pub beta: f64,
    pub kq_residual: f64,
    pub pv_residual: f64,
    pub kq_construction_norm: f64,
    pub pv_construction_norm: f64,
}

fn markdown(s: &WeightsReport) -> String {
    let mut out =
        String::from("# von Oswald et al. 2023, Figure 9: trained weight products beside the construction\n\n");
    out += &format!(
        "Made by `icl-lab reproduce {NAME}{}`: {} seed(s); numbers from `reports/{NAME}.json`.\n\n",
        if s.quick { " --quick" } else { "" },
        s.seeds,
    );
    out += "The paper shows that trained W_KᵀW_Q and P·W_V equal the construction's up to a scalar. We rescale by \
            β = mean of the first d diagonal entries of KQ and report Frobenius residuals (the construction's norms \
            for scale). 1 layer: GD construction with the tuned η; 3 recurrent layers: GD++ construction with the \
            fitted (η, γ).\n\n";
    out += "| model | seed | β | ‖KQ/β − KQ_c‖ (‖KQ_c‖) | ‖PV·β − PV_c‖ (‖PV_c‖) |\n|---|---|---|---|---|\n";
    for m in &s.models {
        for r in &m.per_seed {
            out += &format!(
                "| {} | {} | {:.4} | {:.4} ({:.3}) | {:.4} ({:.3}) |\n",
                m.label, r.seed, r.beta, r.kq_residual, r.kq_construction_norm, r.pv_residual, r.pv_construction_norm
            );
        }
    }
    out += &format!("\n![weights](../figures/{NAME}/weights.png)\n\nRows: 1 layer, then 3 recurrent layers (seed 0). SVG beside the PNG.\n");
    out
}
