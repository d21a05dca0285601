//! `vo2023-tournament`: the hypothesis tournament ([`crate::tournament`]) for von Oswald et al.
//! 2023's models — 1 layer; 2, 3 and 10 recurrent layers; 5 separate layers; softmax with 1 and
//! 2 heads; LayerNorm — with controls: each model's untrained twin, 1- and 3-layer models trained
//! on the control task (`linear` with `fixed_w = true`, Akyürek et al. 2023), order sensitivity
//! and several seeds. Candidates: the `linear` task's learners (GD with one step per layer, least
//! squares, ridge, averaging, 3-NN, zero) plus GD++ and Newton–Schulz with one step per layer and
//! one-step preconditioned GD.

use std::time::Instant;

use super::FigureOptions;
use crate::tournament::TournamentOptions;

pub const NAME: &str = "vo2023-tournament";

/// Candidates beyond the task's own.
pub const EXTRA_LEARNERS: &str = "gd++(steps=1),newton(steps=1),precond_gd(steps=1)";

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    crate::learners::register();
    let (entrants, task) = super::shared::vo2023_entrants(opts)?;
    let mut learners = task.learners();
    learners.extend(crate::curve::parse_learners(EXTRA_LEARNERS)?);
    // Three numbers of in-context examples (under-determined, half, the training N = d = 10) and
    // 1,024 tuning prompts keep the 10-layer GD++ fits (one per layer and n) to minutes on a CPU.
    let opts_t = TournamentOptions {
        n_values: super::shared::VO2023_N_VALUES.to_vec(),
        tuning_prompts: 1024,
        ..TournamentOptions::for_task(task.as_ref())
    };
    let report = super::with_spinner("tournament", |progress| {
        crate::tournament::run(NAME, task.as_ref(), &entrants, &learners, &opts_t, progress)
    })?;
    let command = opts.command(NAME);
    let preface = format!(
        "Which algorithm does each layer of von Oswald et al. 2023's models run? The paper compares each model with the learner chosen in advance (GD, or GD++ for deeper models); here every model meets every candidate, with controls. {} A candidate with k steps (GD, GD++, Newton, preconditioned GD) uses one set of hyperparameters for all its steps, as a recurrent model does; the paper's comparison of the 5-separate-layer model with GD++ fitted per layer is `vo2023-fig3`.\n\n",
        if opts.quick {
            "**Quick variant**: the depth, softmax and LayerNorm models are trained for 3,000 steps instead of 5,000 (50,000 for 5 separate layers) and are not all converged."
        } else {
            "The paper's setting: every model trained as in its figure (5,000 steps; 50,000 for 5 separate layers)."
        },
    );
    crate::warnln!("{NAME}: {} s", start.elapsed().as_secs());
    let report = crate::tournament::TournamentReport { command, preface, ..report };
    crate::tournament::write(&report, &opts.reports_root, &opts.figures_root)?;
    Ok(serde_json::to_value(&report)?)
}
