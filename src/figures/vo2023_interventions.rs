//! `vo2023-interventions`: the four intervention protocols ([`crate::protocols`]) on von Oswald
//! et al. 2023's models — the runs of `vo2023-tournament` (1 layer; 2, 3 and 10 recurrent layers;
//! 5 separate layers; softmax with 1 and 2 heads; LayerNorm) with each model's untrained twin and
//! the control-task models. The question the tournament cannot answer: when a layer is knocked
//! out, its tokens swapped, or its labels moved, does the model change the way the learner it
//! resembles would? Candidates: the tournament's (the `linear` task's learners plus GD++ and
//! Newton with one step per layer).

use std::time::Instant;

use super::FigureOptions;

pub const NAME: &str = "vo2023-interventions";

/// Candidates beyond the task's own (as in `vo2023-tournament`; preconditioned GD is left out:
/// its smoother equals GD's up to the preconditioner the fit learns).
pub const EXTRA_LEARNERS: &str = "gd++(steps=1),newton(steps=1)";

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    crate::learners::register();
    let (entrants, task) = super::shared::vo2023_entrants(opts)?;
    let mut learners = task.learners();
    learners.extend(crate::curve::parse_learners(EXTRA_LEARNERS)?);
    let preface = format!(
        "Does each layer of von Oswald et al. 2023's models *behave* like a step of the learner its outputs resemble when it is changed? The tournament (`vo2023-tournament`) compares outputs; here every model is intervened on, with the same runs and controls. A candidate with k steps uses one set of hyperparameters for all its steps, as a recurrent model does. {}\n\n",
        if opts.quick {
            "**Quick variant**: the depth, softmax and LayerNorm models are trained for 3,000 steps instead of 5,000 (50,000 for 5 separate layers) and are not all converged."
        } else {
            "The paper's setting: every model trained as in its figure (5,000 steps; 50,000 for 5 separate layers)."
        },
    );
    let out = super::shared::interventions_report(
        NAME,
        opts,
        &entrants,
        task.as_ref(),
        &learners,
        super::shared::VO2023_N_VALUES.to_vec(),
        preface,
    )?;
    crate::warnln!("{NAME}: {} s", start.elapsed().as_secs());
    Ok(out)
}
