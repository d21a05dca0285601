//! Akyürek et al. 2023 ("What learning algorithm is in-context learning?", Fig. 3): which learner
//! a GPT-style transformer matches as it gets deeper — one GD step for 1 layer, ridge for 2–4,
//! least squares (OLS) for 8 and more (noiseless linear regression, x, w ~ N(0, I)). Each depth
//! is trained ([`crate::models::gpt`]) and entered into the hypothesis tournament
//! ([`crate::tournament`]) with its untrained twin; candidates are GD with one step per layer
//! read, ridge (λ fitted per n on separate prompts), least squares, 3-NN, averaging and zero; SPD
//! and ILWD are divided by d as in the paper.
//!
//! The default is GPU-scale (d = 8, n ≤ 16, width 512 with 4 heads, 100,000 steps per depth; the
//! paper trains 500k); `--quick` is d = 4, n ≤ 8, width 32 with 2 heads and 6,000 steps, on a
//! CPU in about a quarter of an hour, and says so.

use std::time::Instant;

use super::FigureOptions;
use crate::config::RunConfig;
use crate::tournament::TournamentOptions;

pub const NAME: &str = crate::presets::AKYUREK_PHASES;

/// The run config of one depth ([`crate::presets::akyurek2023`]).
pub fn config(depth: usize, quick: bool) -> anyhow::Result<RunConfig> {
    crate::presets::akyurek2023(depth, quick)
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    crate::learners::register();
    let super::shared::Depths { entrants, task, trained } = super::shared::akyurek_depths(opts)?;
    let learners = crate::curve::parse_learners(super::shared::AKYUREK_LEARNERS)?;
    let dims = task.dims();
    // Under-determined, square and over-determined contexts.
    let n_values = vec![dims.x_dim / 2, dims.x_dim, dims.context_len];
    let opts_t = TournamentOptions {
        n_values,
        prompts: if opts.quick { 256 } else { 512 },
        tuning_prompts: 1024,
        orders: 4,
        ..TournamentOptions::for_task(task.as_ref())
    };
    let report = super::with_spinner("tournament", |progress| {
        crate::tournament::run(NAME, task.as_ref(), &entrants, &learners, &opts_t, progress)
    })?;
    let command = opts.command(NAME);
    let example = config(1, opts.quick)?;
    let g = example.gpt.as_ref().expect("GPT-style");
    let preface = format!(
        "Akyürek et al. 2023 (Fig. 3) find phases by depth on noiseless linear regression (d = 8): 1 layer ≈ one GD step, 2–4 layers ≈ ridge, ≥ 8 layers ≈ least squares (normalised SPD and ILWD to OLS < 0.01 for their 16-layer model). Here GPT-style models of depth {} (width {}, {} heads, d = {}, n ≤ {}) are each read out after every layer; the row to read for the phase claim is each model's last layer. {}Training: {}.\n\n",
        super::shared::AKYUREK_DEPTHS.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        g.width,
        g.heads,
        dims.x_dim,
        dims.context_len,
        if opts.quick {
            "**Quick variant**, not the paper's setting: d = 4 (paper 8), width 32 (paper 512), 6,000 steps at lr 1e-3 with a short curriculum (paper 500k at 1e-4, no curriculum); small models this short may not reach the phases, and where they do not, the table says so. "
        } else {
            "The paper trains 500k steps; this default trains 100k per depth (GPU-scale). "
        },
        trained.join("; "),
    );
    crate::warnln!("{NAME}: {} s", start.elapsed().as_secs());
    let report = crate::tournament::TournamentReport { command, preface, ..report };
    crate::tournament::write(&report, &opts.reports_root, &opts.figures_root)?;
    Ok(serde_json::to_value(&report)?)
}
