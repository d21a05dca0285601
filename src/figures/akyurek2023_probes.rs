//! Akyürek et al. 2023 §5 (Fig. 4): can the task's hidden w, Xᵀy, w_OLS and w_ridge be decoded
//! from each layer's hidden states? Linear and 2-layer MLP probes ([`crate::layer_probes`]),
//! fitted on fresh prompts and scored by held-out R², for a trained GPT-style model, its untrained
//! twin and the same architecture trained on the control task (`gaussian_linear` with
//! `fixed_w = true`: every prompt's teacher is the all-ones vector).
//!
//! The model is the deepest GPT-style model the lab trains on a CPU, the 8-layer model of
//! `akyurek2023-phases` (its runs are shared); the paper's probes read a 16-layer, width-512
//! model at d = 4. `--quick` uses the quick phase model (d = 4, width 32, 6,000 steps).

use std::time::Instant;

use super::{train_seeds, FigureOptions};
use crate::layer_probes::LayerProbeOptions;
use crate::tournament::{LoadedEntrant, Role};

pub const NAME: &str = "akyurek2023-probes";

/// The depth probed (the deepest of `akyurek2023-phases`).
pub const DEPTH: usize = 8;

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let config = crate::presets::akyurek2023(DEPTH, opts.quick)?;
    let runs = train_seeds(&config, opts)?;
    let mut control = config.clone();
    control.task.set("fixed_w", true);
    control.name = format!("{}-control", config.name);
    let control = control.resolve()?;
    let control_runs = train_seeds(&control, opts)?;
    let trained = LoadedEntrant::from_dirs(runs.iter().map(|r| r.dir.clone()).collect(), Role::Trained)?;
    let entrants = vec![
        trained.untrained_twin(),
        LoadedEntrant::from_dirs(control_runs.iter().map(|r| r.dir.clone()).collect(), Role::ControlTask)?,
        trained,
    ];
    let task = config.task();
    let dims = task.dims();
    // MLP probes on all tokens cost ~1 GFLOP per Adam step here (2,048 prompts × 544 features ×
    // width 128): hundreds of fits × 1,000 steps are hours on a CPU, so --quick fits the linear
    // ones (ridge on the query or all tokens, and Akyürek's attention pooling) and says so.
    let probe_opts = LayerProbeOptions {
        n_values: vec![dims.x_dim / 2, dims.x_dim, dims.context_len],
        mlp_steps: if opts.quick { 0 } else { 1000 },
        pool_steps: if opts.quick { 200 } else { 300 },
        ..LayerProbeOptions::for_task(task.as_ref())
    };
    let report = super::with_spinner("probes", |progress| {
        crate::layer_probes::run(NAME, task.as_ref(), &entrants, &probe_opts, progress)
    })?;
    let losses = |runs: &[crate::train::RunOutcome]| -> String {
        runs.iter()
            .map(|r| format!("{:.4}", r.metrics.rows.last().map_or(f64::NAN, |row| row.loss)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let g = config.gpt.as_ref().expect("GPT-style");
    let preface = format!(
        "Akyürek et al. 2023 (§5, Fig. 4) decode Xᵀy from about layer 7 and w_OLS from about layer 12 of a 16-layer, width-512 model at d = 4, with MLP probes beating linear ones and the control-task model probing much worse. Here: the deepest GPT-style model this lab trains on a CPU — {} layers, width {}, {} heads, d = {}, n ≤ {} (the `akyurek2023-phases` model{}) — with its untrained twin and a control-task model (w fixed to all ones). Final ½·MSE at the query, trained: {}; control-task model on its own task: {}.\n\n",
        g.layers,
        g.width,
        g.heads,
        dims.x_dim,
        dims.context_len,
        if opts.quick {
            ", quick: 6,000 steps at lr 1e-3; not the paper's size; ridge and attention-pooling probes only (the paper also fits MLP probes: the default setting does)"
        } else {
            ""
        },
        losses(&runs),
        losses(&control_runs),
    );
    crate::warnln!("{NAME}: {} s", start.elapsed().as_secs());
    crate::layer_probes::write(&report, &opts.reports_root, &opts.figures_root, &opts.command(NAME), &preface)?;
    Ok(serde_json::to_value(&report)?)
}
