//! What several figures share, so that figures never import each other: the run sets two
//! figures measure differently (von Oswald et al.'s models for the tournament and the
//! interventions; Akyürek et al.'s phases models for their tournament and interventions), and the
//! step that writes an interventions report.

use super::{train_seeds, FigureOptions};
use crate::presets::model;
use crate::tournament::{LoadedEntrant, Role};

/// The models of the tournament (preset keys), shallow first.
pub const VO2023_MODELS: &[&str] =
    &["lsa-1", "lsa-2-rec", "lsa-3-rec", "lsa-5-sep", "lsa-10-rec", "softmax-1h", "softmax-2h", "ln-1"];
/// Models that also get a control-task twin.
pub const CONTROL_TASK_MODELS: &[&str] = &["lsa-1", "lsa-3-rec"];
/// The numbers of in-context examples evaluated (under-determined, half, the training N = d = 10).
pub const VO2023_N_VALUES: &[usize] = &[2, 5, 10];
/// The tournament's contestants, trained (or found) for `opts`: each model of [`VO2023_MODELS`] with its
/// untrained twin, and the control-task models of [`CONTROL_TASK_MODELS`]; with their task.
/// `vo2023-tournament` compares them, `vo2023-interventions` intervenes on the same runs.
pub fn vo2023_entrants(opts: &FigureOptions) -> anyhow::Result<(Vec<LoadedEntrant>, Box<dyn icl_tasks::Task>)> {
    let mut entrants = Vec::new();
    let mut task = None;
    for key in VO2023_MODELS {
        let spec = model(key, opts.quick)?;
        let runs = train_seeds(&spec.config, opts)?;
        let e = LoadedEntrant::from_dirs(runs.iter().map(|r| r.dir.clone()).collect(), Role::Trained)?;
        let twin = e.untrained_twin();
        entrants.push(e);
        entrants.push(twin);
        if CONTROL_TASK_MODELS.contains(key) {
            let mut control = spec.config.clone();
            control.task.set("fixed_w", true);
            control.name = format!("{}-control", spec.config.name);
            let control = control.resolve()?;
            let runs = train_seeds(&control, opts)?;
            entrants.push(LoadedEntrant::from_dirs(runs.iter().map(|r| r.dir.clone()).collect(), Role::ControlTask)?);
        }
        task.get_or_insert_with(|| spec.config.task());
    }
    Ok((entrants, task.expect("at least one model")))
}

/// The depths of Akyürek et al.'s phases models.
pub const AKYUREK_DEPTHS: &[usize] = &[1, 2, 4, 8];
/// The candidate learners (GD's `steps` follows the layer read).
pub const AKYUREK_LEARNERS: &str = "gd(steps=1),ridge,least_squares,knn(k=3),averaging,zero";

/// The trained depths of the figure: each with its untrained twin; their task; and one line per
/// run saying where its training ended.
pub struct Depths {
    pub entrants: Vec<LoadedEntrant>,
    pub task: Box<dyn icl_tasks::Task>,
    pub trained: Vec<String>,
}

/// The [`Depths`] trained (or found) for `opts`. `akyurek2023-phases` compares them, `akyurek2023-interventions` intervenes on them.
pub fn akyurek_depths(opts: &FigureOptions) -> anyhow::Result<Depths> {
    let mut entrants = Vec::new();
    let mut task = None;
    let mut trained = Vec::new();
    for &depth in AKYUREK_DEPTHS {
        let config = crate::presets::akyurek2023(depth, opts.quick)?;
        let runs = train_seeds(&config, opts)?;
        for r in &runs {
            trained.push(format!(
                "L = {depth}, seed {}: ½·MSE {:.4} after {} steps",
                r.metrics.seed,
                r.metrics.rows.last().map_or(f64::NAN, |row| row.loss),
                r.metrics.steps_done
            ));
        }
        let e = LoadedEntrant::from_dirs(runs.iter().map(|r| r.dir.clone()).collect(), Role::Trained)?;
        let twin = e.untrained_twin();
        entrants.push(e);
        entrants.push(twin);
        task.get_or_insert_with(|| config.task());
    }
    Ok(Depths { entrants, task: task.expect("at least one depth"), trained })
}

/// Runs the intervention protocols on `entrants` and writes the report and figures under
/// `name` (`vo2023-interventions`, `akyurek2023-interventions`).
pub fn interventions_report(
    name: &str,
    opts: &FigureOptions,
    entrants: &[LoadedEntrant],
    task: &dyn icl_tasks::Task,
    learners: &[icl_tasks::LearnerSpec],
    n_values: Vec<usize>,
    preface: String,
) -> anyhow::Result<serde_json::Value> {
    let options = crate::protocols::ProtocolOptions { n_values, ..crate::protocols::ProtocolOptions::for_task(task) };
    let report = super::with_spinner("interventions", |progress| {
        crate::protocols::run(name, task, entrants, learners, &options, progress)
    })?;
    let report = crate::protocols::InterventionsReport { command: opts.command(name), preface, ..report };
    crate::protocols::write(&report, &opts.reports_root, &opts.figures_root)?;
    Ok(serde_json::to_value(&report)?)
}
