//! `akyurek2023-interventions`: the intervention protocols ([`crate::protocols`]) on the
//! GPT-style models of `akyurek2023-phases` (depth 1, 2, 4, 8, same runs) with their untrained
//! twins: P1 knockouts of each layer, P3 activation-patching maps (labels of another task as the
//! corruption) and P4 influence profiles after every layer against GD (one step per layer),
//! ridge, least squares, k-NN and averaging. P2 needs von Oswald et al.'s token layout and does
//! not apply to these models (their tokens alternate x and y).

use std::time::Instant;

use super::FigureOptions;

pub const NAME: &str = "akyurek2023-interventions";

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    crate::learners::register();
    let super::shared::Depths { entrants, task, trained } = super::shared::akyurek_depths(opts)?;
    let learners = crate::curve::parse_learners(super::shared::AKYUREK_LEARNERS)?;
    let dims = task.dims();
    let preface = format!(
        "Akyürek et al. 2023 (Fig. 3) read phases by depth off the outputs: 1 layer ≈ one GD step, 2–4 layers ≈ ridge, ≥ 8 layers ≈ least squares. Here the same models (`akyurek2023-phases`' runs) are intervened on: does the layer-by-layer picture survive knocking a layer out (P1), and where in the network does the clean prompt's information sit (P3)? P4 asks whether the way the prediction depends on each label matches the learner the outputs resemble. {}Training: {}.\n\n",
        if opts.quick {
            format!("**Quick variant**, not the paper's setting: d = {} (paper 8), small models trained briefly (see `akyurek2023-phases`). ", dims.x_dim)
        } else {
            String::new()
        },
        trained.join("; "),
    );
    // Under-determined, square and over-determined contexts, as in the phases figure.
    let n_values = vec![dims.x_dim / 2, dims.x_dim, dims.context_len];
    let out = super::shared::interventions_report(NAME, opts, &entrants, task.as_ref(), &learners, n_values, preface)?;
    crate::warnln!("{NAME}: {} s", start.elapsed().as_secs());
    Ok(out)
}
