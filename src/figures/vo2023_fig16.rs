//! von Oswald et al. 2023, Figure 16: training on a fixed number of distinct tasks. The 1-layer
//! linear self-attention model of Fig. 2 is trained on prompts whose hidden W comes from a pool of
//! K fixed draws (`train.task_pool = K`, fresh inputs), then evaluated on fresh tasks: its loss
//! and its alignment with one step of GD (model cos, preds diff) against K. The paper: near-perfect
//! alignment with GD needs at least about 2,048 distinct tasks; with fewer the model fits its
//! training tasks and does not learn the general algorithm.

use std::time::Instant;

use serde::Serialize;

use icl_probes::measure::Measurement;

use super::{file_list, mean, train_seeds, write_report, FigureOptions};
use crate::config::PoolInputs;
use crate::plot::{render, Chart, Panel, Series};
use crate::presets::model;
use crate::train::RunOutcome;

pub const NAME: &str = "vo2023-fig16";
/// Pool sizes (K distinct training tasks); `None` is a fresh task per prompt (Fig. 2's model).
const POOLS: &[Option<usize>] = &[
    Some(1),
    Some(4),
    Some(16),
    Some(64),
    Some(256),
    Some(1024),
    Some(2048),
    Some(4096),
    Some(8192),
    Some(16384),
    Some(65536),
    None,
];
const QUICK_POOLS: &[Option<usize>] = &[Some(4), Some(64), Some(512), Some(2048), Some(16384), None];

/// `reports/vo2023-fig16.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Fig16Report {
    pub figure: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub wall_seconds: f64,
    pub steps: usize,
    pub pools: Vec<PoolResult>,
    /// Where the alignment saturates, by three criteria against the model trained on a new task per
    /// prompt: the smallest K that meets each (null: none does).
    pub saturation: Vec<Saturation>,
    pub saturation_fixed_prompts: Vec<Saturation>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// The final evaluation of the seeds trained on one pool size (`pool` null: fresh tasks).
#[derive(Clone, Debug, Serialize)]
pub struct PoolResult {
    pub pool: Option<usize>,
    /// `fresh`: only the hidden W's repeat; `fixed`: whole prompts repeat (the official `cycle_data`).
    pub inputs: PoolInputs,
    pub run_name: String,
    /// Per seed, on fresh tasks.
    pub loss: Vec<f64>,
    pub model_cos_gd: Vec<f64>,
    pub preds_diff_gd: Vec<f64>,
    /// Per seed, the mean training-batch loss over the last evaluation interval (the pool's tasks);
    /// empty for fresh tasks.
    pub train_loss: Vec<f64>,
    pub gd_loss: f64,
}

/// The smallest pool size that meets a criterion.
#[derive(Clone, Debug, Serialize)]
pub struct Saturation {
    pub criterion: String,
    pub pool: Option<usize>,
}

/// Saturation by model cos within 0.01 and 0.001, and by preds diff within 10%, of the fresh-task model.
fn saturation(results: &[PoolResult], inputs: PoolInputs) -> Vec<Saturation> {
    let fresh = match results.iter().find(|r| r.pool.is_none()) {
        Some(r) => r,
        None => return Vec::new(),
    };
    let (cos, diff) = (mean(&fresh.model_cos_gd), mean(&fresh.preds_diff_gd));
    let first = |ok: &dyn Fn(&PoolResult) -> bool| {
        results.iter().filter(|r| r.pool.is_some() && r.inputs == inputs).find(|r| ok(r)).and_then(|r| r.pool)
    };
    vec![
        Saturation {
            criterion: "model cos within 0.01 of the fresh-task model's".into(),
            pool: first(&|r| mean(&r.model_cos_gd) >= cos - 0.01),
        },
        Saturation {
            criterion: "model cos within 0.001 of the fresh-task model's".into(),
            pool: first(&|r| mean(&r.model_cos_gd) >= cos - 0.001),
        },
        Saturation {
            criterion: "preds diff within 10% of the fresh-task model's".into(),
            pool: first(&|r| mean(&r.preds_diff_gd) <= 1.1 * diff),
        },
    ]
}

/// Where a pool size sits on the x axis: log₂ K, with fresh tasks one step right of the largest.
fn x_of(pool: Option<usize>, pools: &[Option<usize>]) -> f64 {
    let largest = pools.iter().flatten().max().copied().unwrap_or(1) as f64;
    match pool {
        Some(k) => (k as f64).log2(),
        None => largest.log2() + 2.0,
    }
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let pools = if opts.quick { QUICK_POOLS } else { POOLS };
    let base = model("lsa-1", opts.quick)?;
    let mut results = Vec::new();
    let mut measurements = Vec::new();
    let variants = pools
        .iter()
        .map(|&p| (p, PoolInputs::Fresh))
        .chain(pools.iter().filter(|p| p.is_some()).map(|&p| (p, PoolInputs::Fixed)));
    for (pool, inputs) in variants {
        let mut c = base.config.clone();
        if let Some(k) = pool {
            c.train.task_pool = Some(k);
            c.train.pool_inputs = inputs;
            let fixed = if inputs == PoolInputs::Fixed { "-fixed" } else { "" };
            c.name = format!("vo2023-lsa-1-pool{k}{fixed}{}", if opts.quick { "-quick" } else { "" });
        }
        let c = c.resolve()?;
        let runs: Vec<RunOutcome> = train_seeds(&c, opts)?;
        let finals: Vec<_> = runs
            .iter()
            .map(|r| r.metrics.rows.last().cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow::anyhow!("{}: a run without evaluations", c.name))?;
        let gd_loss = runs[0].metrics.reference("gd").map_or(f64::NAN, |r| r.loss);
        let result = PoolResult {
            pool,
            inputs,
            run_name: c.name.clone(),
            loss: finals.iter().map(|r| r.loss).collect(),
            model_cos_gd: finals.iter().map(|r| r.vs_gd().model_cos).collect(),
            preds_diff_gd: finals.iter().map(|r| r.vs_gd().preds_diff).collect(),
            train_loss: finals.iter().filter_map(|r| r.train_loss).collect(),
            gd_loss,
        };
        for (run, row) in runs.iter().zip(&finals) {
            let alignment = row.vs_gd();
            let metrics = [
                ("loss", row.loss),
                ("model_cos", alignment.model_cos),
                ("preds_diff", alignment.preds_diff),
                ("train_loss", row.train_loss.unwrap_or(f64::NAN)),
            ];
            for (metric, value) in metrics {
                if metric == "train_loss" && pool.is_none() {
                    continue;
                }
                let learner = if metric == "loss" || metric == "train_loss" { "model" } else { "gd" };
                let mut m = Measurement::new(&c.task.name, learner, Default::default(), metric, value);
                m.model = Some(run.metrics.name.clone());
                m.seed = Some(run.metrics.seed);
                m.params.insert("task_pool".into(), pool.map_or(serde_json::Value::Null, |k| k.into()));
                if inputs == PoolInputs::Fixed {
                    m.params.insert("pool_inputs".into(), "fixed".into());
                }
                measurements.push(m);
            }
        }
        results.push(result);
    }
    let (saturation, saturation_fixed_prompts) =
        (saturation(&results, PoolInputs::Fresh), saturation(&results, PoolInputs::Fixed));

    // One curve per kind of pool; the model trained on a new task per prompt ends both.
    let series_of = |label: &str, color: usize, inputs: PoolInputs, f: &dyn Fn(&PoolResult) -> &Vec<f64>| -> Series {
        let dashed = inputs == PoolInputs::Fixed;
        let mut s = Series { label: label.into(), color, dashed, ..Default::default() };
        for r in results.iter().filter(|r| r.inputs == inputs || r.pool.is_none()) {
            let v = f(r);
            if v.is_empty() {
                continue;
            }
            let x = x_of(r.pool, pools);
            let (lo, hi) = super::min_max(v);
            s.points.push((x, mean(v)));
            s.band.push((x, lo, hi));
        }
        s
    };
    let x_label =
        format!("log₂ K distinct training tasks (rightmost, x = {:.0}: a new task per prompt)", x_of(None, pools));
    let gd = results.first().map_or(f64::NAN, |r| r.gd_loss);
    let x_max = x_of(None, pools);
    let charts = vec![
        Chart {
            title: "loss".into(),
            x_label: x_label.clone(),
            y_label: "loss (½·MSE), log scale".into(),
            log_y: true,
            series: vec![
                series_of("fresh tasks (pool of W's)", 0, PoolInputs::Fresh, &|r| &r.loss),
                series_of("training tasks (pool of W's)", 3, PoolInputs::Fresh, &|r| &r.train_loss),
                series_of("fresh tasks (fixed prompts)", 0, PoolInputs::Fixed, &|r| &r.loss),
                series_of("training prompts (fixed prompts)", 3, PoolInputs::Fixed, &|r| &r.train_loss),
                Series::flat("1 step of GD", gd, x_max, 1),
            ],
            ..Default::default()
        },
        Chart {
            title: "alignment with 1 step of GD (fresh tasks)".into(),
            x_label: x_label.clone(),
            y_label: "model cos".into(),
            series: vec![
                series_of("pool of W's, fresh inputs", 1, PoolInputs::Fresh, &|r| &r.model_cos_gd),
                series_of("fixed prompts", 1, PoolInputs::Fixed, &|r| &r.model_cos_gd),
            ],
            ..Default::default()
        },
        Chart {
            title: "prediction difference to GD (fresh tasks)".into(),
            x_label,
            y_label: "preds diff".into(),
            series: vec![
                series_of("pool of W's, fresh inputs", 2, PoolInputs::Fresh, &|r| &r.preds_diff_gd),
                series_of("fixed prompts", 2, PoolInputs::Fixed, &|r| &r.preds_diff_gd),
            ],
            ..Default::default()
        },
    ];
    let files = render(&Panel { charts, ..Default::default() }, &opts.figures_root.join(NAME), "task_pool")?;
    let report = Fig16Report {
        figure: NAME,
        quick: opts.quick,
        seeds: opts.seed_count(),
        wall_seconds: start.elapsed().as_secs_f64(),
        steps: base.config.train.steps,
        pools: results,
        saturation,
        saturation_fixed_prompts,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report, opts))
}

fn markdown(s: &Fig16Report, opts: &FigureOptions) -> String {
    let mut out = String::from("# von Oswald et al. 2023, Figure 16: how many distinct training tasks GD needs\n\n");
    out += &format!(
        "Made by `{}`: the 1-layer LSA of Fig. 2 ({} steps, batches of 2,048) trained on K distinct tasks, two ways: \
         a pool of K hidden W's with fresh inputs per prompt (`train.task_pool = K`), and a fixed training set of K whole \
         prompts that repeat, inputs too (`pool_inputs = \"fixed\"`, as the official code's `cycle_data`, which Fig. 16 \
         uses). Pools are drawn from each seed's own stream; every model is evaluated on 10,000 fresh tasks. Mean over {} \
         seed(s) with [min, max].\n\n",
        opts.command(NAME),
        s.steps,
        s.seeds
    );
    out += "The paper: alignment with GD becomes near perfect only with at least about 2,048 distinct training tasks; \
            with fewer, the model does worse on new tasks.\n\n";
    out += "| K | repeats | loss, fresh tasks | loss, training tasks | cos(TF, GD) | preds diff |\n|---|---|---|---|---|---|\n";
    let cell = |v: &[f64], digits: usize| {
        if v.is_empty() {
            return "—".to_string();
        }
        let (lo, hi) = super::min_max(v);
        format!("{:.*} [{lo:.*}, {hi:.*}]", digits, mean(v), digits, digits)
    };
    for r in &s.pools {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.pool.map_or("fresh per prompt".to_string(), |k| k.to_string()),
            match (r.pool, r.inputs) {
                (None, _) => "—",
                (Some(_), PoolInputs::Fresh) => "W's",
                (Some(_), PoolInputs::Fixed) => "whole prompts",
            },
            cell(&r.loss, 4),
            cell(&r.train_loss, 4),
            cell(&r.model_cos_gd, 4),
            cell(&r.preds_diff_gd, 4),
        );
    }
    let gd = s.pools.first().map_or(f64::NAN, |r| r.gd_loss);
    out += &format!("\n1 step of GD (tuned η) on the same fresh tasks: loss {gd:.4}.\n\n");
    out += "**Ours:** where the alignment with GD stops improving, the smallest K that gets there (the paper: ~2,048):\n\n";
    for (kind, list) in [("pool of W's", &s.saturation), ("fixed prompts", &s.saturation_fixed_prompts)] {
        for sat in list {
            out += &match sat.pool {
                Some(k) => format!(
                    "- {kind}, {}: K = {k}{}\n",
                    sat.criterion,
                    if (1024..=4096).contains(&k) {
                        ", in line with the paper"
                    } else if k < 1024 {
                        ", fewer than the paper's"
                    } else {
                        ", more than the paper's"
                    }
                ),
                None => format!("- {kind}, {}: no pool size reaches it\n", sat.criterion),
            };
        }
    }
    for (inputs, kind) in [(PoolInputs::Fresh, "a pool of W's"), (PoolInputs::Fixed, "fixed prompts")] {
        if let Some(small) = s.pools.iter().find(|r| r.pool.is_some() && r.inputs == inputs && !r.train_loss.is_empty())
        {
            let (train, fresh) = (mean(&small.train_loss), mean(&small.loss));
            out += &format!(
                "\nWith the fewest tasks (K = {}, {kind}) the loss on the training tasks is {train:.4} and on fresh tasks \
                 {fresh:.4}: {}\n",
                small.pool.unwrap_or(0),
                if train < 0.5 * fresh {
                    "the model fits its training set instead of learning an algorithm that transfers."
                } else {
                    "no sign of fitting the training set rather than the algorithm."
                }
            );
        }
    }
    if s.quick {
        out += "\nQuick variant: fewer pool sizes; the training steps are the full setting's.\n";
    }
    out += "\n";
    out += &super::figures_line(&s.figures);
    out
}
