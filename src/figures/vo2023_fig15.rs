//! von Oswald et al. 2023, Figure 15: (a) the loss plateau at the start of training and the drop
//! out of it come at seed-dependent steps; (b) trained on a fixed pool of 8,192 tasks, a model
//! first fits its training tasks and only later does as well on new ones ("grokking").
//!
//! (a) reads the loss curves of the recurrent 2- and 3-layer models of Fig. 3 (the same runs, one
//! curve per seed) and marks where each seed leaves the plateau: the first evaluation whose loss is
//! below the midpoint between the initial loss and the seed's final loss. (b) trains the recurrent
//! 2-layer model on a fixed training set of 8,192 prompts (`train.task_pool = 8192`,
//! `pool_inputs = "fixed"`: the official `cycle_data`) and follows its loss on those prompts (the
//! training batches) beside its loss on fresh tasks; the gap between them over training is the
//! memorisation the paper describes.

use std::time::Instant;

use serde::Serialize;

use icl_probes::measure::Measurement;

use super::{file_list, mean, std, train_seeds, write_report, FigureOptions};
use crate::plot::{render, Chart, Panel, Series};
use crate::presets::model;

pub const NAME: &str = "vo2023-fig15";
const PLATEAU_MODELS: [&str; 2] = ["lsa-2-rec", "lsa-3-rec"];
const POOL: usize = 8192;

/// `reports/vo2023-fig15.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Fig15Report {
    pub figure: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub wall_seconds: f64,
    pub plateaus: Vec<Plateau>,
    pub pool: PoolCurves,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// Where each seed of one model leaves the initial plateau.
#[derive(Clone, Debug, Serialize)]
pub struct Plateau {
    pub key: String,
    pub label: String,
    pub run_name: String,
    /// Per seed: the first evaluated step below the midpoint of initial and final loss.
    pub escape_step: Vec<usize>,
    pub final_loss: Vec<f64>,
}

/// Training on a fixed pool: per seed, the largest gap (fresh − pool loss) over training and where.
#[derive(Clone, Debug, Serialize)]
pub struct PoolCurves {
    pub run_name: String,
    pub pool: usize,
    pub max_gap: Vec<f64>,
    pub max_gap_step: Vec<usize>,
    pub final_fresh_loss: Vec<f64>,
    pub final_pool_loss: Vec<f64>,
}

/// The first evaluated step whose loss is below the midpoint of the first and last loss.
fn escape_step(rows: &[crate::evaluate::EvalRow]) -> usize {
    let (first, last) = (rows[0].loss, rows[rows.len() - 1].loss);
    let mid = 0.5 * (first + last);
    rows.iter().find(|r| r.loss < mid).map_or(rows[rows.len() - 1].step, |r| r.step)
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let mut charts = Vec::new();
    let mut plateaus = Vec::new();
    let mut measurements = Vec::new();
    for key in PLATEAU_MODELS {
        let spec = model(key, opts.quick)?;
        let c = &spec.config;
        let runs = train_seeds(c, opts)?;
        let mut series = Vec::new();
        let mut entry = Plateau {
            key: key.into(),
            label: spec.label.clone(),
            run_name: c.name.clone(),
            escape_step: Vec::new(),
            final_loss: Vec::new(),
        };
        for (i, run) in runs.iter().enumerate() {
            let rows = &run.metrics.rows;
            let step = escape_step(rows);
            entry.escape_step.push(step);
            entry.final_loss.push(rows[rows.len() - 1].loss);
            series.push(Series {
                label: format!("seed {} (leaves the plateau at {step})", run.metrics.seed),
                points: rows.iter().map(|r| (r.step as f64, r.loss)).collect(),
                color: i,
                ..Default::default()
            });
            let mut m = Measurement::new(&c.task.name, "model", Default::default(), "plateau_escape_step", step as f64);
            m.model = Some(run.metrics.name.clone());
            m.seed = Some(run.metrics.seed);
            measurements.push(m);
        }
        charts.push(Chart {
            title: format!("{}: one curve per seed", spec.label),
            x_label: "training steps".into(),
            y_label: "loss (½·MSE), fresh tasks".into(),
            y_range: Some((0.0, 0.45)),
            series,
            ..Default::default()
        });
        plateaus.push(entry);
    }

    // (b) The recurrent 2-layer model on a pool of 8,192 tasks.
    let spec = model("lsa-2-rec", opts.quick)?;
    let mut c = spec.config.clone();
    c.train.task_pool = Some(POOL);
    c.train.pool_inputs = crate::config::PoolInputs::Fixed;
    c.name = format!("vo2023-lsa-2-rec-pool{POOL}-fixed{}", if opts.quick { "-quick" } else { "" });
    let c = c.resolve()?;
    let runs = train_seeds(&c, opts)?;
    let mut pool = PoolCurves {
        run_name: c.name.clone(),
        pool: POOL,
        max_gap: Vec::new(),
        max_gap_step: Vec::new(),
        final_fresh_loss: Vec::new(),
        final_pool_loss: Vec::new(),
    };
    let mut series = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let rows: Vec<_> = run.metrics.rows.iter().filter(|r| r.train_loss.is_some()).collect();
        let gap = |r: &&crate::evaluate::EvalRow| r.loss - r.train_loss.unwrap_or(f64::NAN);
        let widest = rows.iter().max_by(|a, b| gap(a).total_cmp(&gap(b))).ok_or_else(|| anyhow::anyhow!("no rows"))?;
        pool.max_gap.push(gap(widest));
        pool.max_gap_step.push(widest.step);
        let last = rows[rows.len() - 1];
        pool.final_fresh_loss.push(last.loss);
        pool.final_pool_loss.push(last.train_loss.unwrap_or(f64::NAN));
        for (metric, value) in [("max_generalisation_gap", gap(widest)), ("loss", last.loss)] {
            let mut m = Measurement::new(&c.task.name, "model", Default::default(), metric, value);
            m.model = Some(run.metrics.name.clone());
            m.seed = Some(run.metrics.seed);
            m.params.insert("task_pool".into(), POOL.into());
            measurements.push(m);
        }
        if i < 2 {
            series.push(Series {
                label: format!("seed {}: fresh tasks", run.metrics.seed),
                points: rows.iter().map(|r| (r.step as f64, r.loss)).collect(),
                color: 2 * i,
                ..Default::default()
            });
            series.push(Series {
                label: format!("seed {}: its training prompts", run.metrics.seed),
                points: rows.iter().map(|r| (r.step as f64, r.train_loss.unwrap_or(f64::NAN))).collect(),
                color: 2 * i,
                dashed: true,
                ..Default::default()
            });
        }
    }
    charts.push(Chart {
        title: format!("{}, trained on {POOL} fixed prompts", spec.label),
        x_label: "training steps".into(),
        y_label: "loss (½·MSE)".into(),
        y_range: Some((0.0, 0.45)),
        series,
        ..Default::default()
    });
    let files = render(&Panel { charts, ..Default::default() }, &opts.figures_root.join(NAME), "plateaus")?;
    let report = Fig15Report {
        figure: NAME,
        quick: opts.quick,
        seeds: opts.seed_count(),
        wall_seconds: start.elapsed().as_secs_f64(),
        plateaus,
        pool,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report, opts))
}

fn markdown(s: &Fig15Report, opts: &FigureOptions) -> String {
    let mut out =
        String::from("# von Oswald et al. 2023, Figure 15: seed-dependent plateaus, and training on 8,192 tasks\n\n");
    out += &format!("Made by `{}`. Mean ± std over {} seed(s).\n\n", opts.command(NAME), s.seeds);
    out += "The paper: the loss sits on a plateau early in training and drops out of it at a step that depends on the \
            seed; with a fixed training set of 8,192 tasks the model first fits its training tasks and generalises to \
            new ones later.\n\n## (a) Plateaus (Fig. 3's runs)\n\n| model | step leaving the plateau, per seed | final loss |\n|---|---|---|\n";
    for p in &s.plateaus {
        let steps: Vec<String> = p.escape_step.iter().map(|x| x.to_string()).collect();
        out += &format!(
            "| {} | {} | {:.4} ± {:.4} |\n",
            p.label,
            steps.join(", "),
            mean(&p.final_loss),
            std(&p.final_loss)
        );
    }
    out += "\nA seed leaves the plateau at its first evaluation below the midpoint of its initial and final loss.\n";
    for p in &s.plateaus {
        let (lo, hi) =
            (p.escape_step.iter().min().copied().unwrap_or(0), p.escape_step.iter().max().copied().unwrap_or(0));
        out += &format!(
            "- {}: the seeds leave it between step {lo} and {hi}{}\n",
            p.label,
            if hi >= 2 * lo.max(1) { " — a seed-dependent escape, as the paper says" } else { " — close together" }
        );
    }
    let pc = &s.pool;
    out += &format!(
        "\n## (b) Training on {} fixed prompts (`{}`, the official `cycle_data`)\n\n| | per seed |\n|---|---|\n| largest (fresh − training) loss gap during training | {} |\n| at step | {} |\n| final loss, fresh tasks | {} |\n| final loss, the training prompts | {} |\n\n",
        pc.pool,
        pc.run_name,
        pc.max_gap.iter().map(|g| format!("{g:.4}")).collect::<Vec<_>>().join(", "),
        pc.max_gap_step.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", "),
        pc.final_fresh_loss.iter().map(|g| format!("{g:.4}")).collect::<Vec<_>>().join(", "),
        pc.final_pool_loss.iter().map(|g| format!("{g:.4}")).collect::<Vec<_>>().join(", "),
    );
    let widest = super::min_max(&pc.max_gap).1;
    let final_gap = mean(&pc.final_fresh_loss) - mean(&pc.final_pool_loss);
    out += &if widest > 0.02 {
        format!(
            "**Ours:** the loss on the training prompts runs ahead of the loss on fresh tasks by up to {widest:.4} (see the \
             steps above and the figure for whether the fresh-task loss catches up later, the paper's grokking).\n"
        )
    } else {
        format!(
            "**Ours: no memorisation phase.** The loss on the training prompts stays within {widest:.4} of the loss on \
             fresh tasks throughout (at the end {final_gap:.4} below it: a small generalisation gap that does not close; \
             the training loss is a mean over the batches of each evaluation interval, fresh tasks are the 10,000-task \
             evaluation set). vo2023-fig16 shows the 1-layer model fitting small fixed training sets exactly; 8,192 \
             prompts may be too many for a model this small (the paper's Fig. 15 model is not in our spec).\n"
        )
    };
    out += "\n";
    out += &super::figures_line(&s.figures);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::EvalRow;

    fn rows(losses: &[f64]) -> Vec<EvalRow> {
        losses
            .iter()
            .enumerate()
            .map(|(i, &loss)| EvalRow {
                step: 100 * i,
                loss,
                vs: Vec::new(),
                interpolated_loss: None,
                train_loss: None,
                wall_s: 0.0,
            })
            .collect()
    }

    #[test]
    fn a_seed_leaves_the_plateau_at_its_first_evaluation_below_the_midpoint() {
        // Initial 0.4, final 0.1: the midpoint is 0.25.
        assert_eq!(escape_step(&rows(&[0.4, 0.39, 0.38, 0.2, 0.1, 0.1])), 300);
        assert_eq!(escape_step(&rows(&[0.4, 0.1])), 100);
        // A curve that never drops: the last step.
        assert_eq!(escape_step(&rows(&[0.4, 0.4, 0.4])), 200);
    }
}
