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

use super::{train_seeds, FigureOptions};
use crate::config::{Curriculum, RunConfig};
use crate::models::GptConfig;
use crate::tournament::{LoadedEntrant, Role, TournamentOptions};

pub const NAME: &str = "akyurek2023-phases";

/// The depths trained.
pub const DEPTHS: &[usize] = &[1, 2, 4, 8];
/// The candidate learners (GD's `steps` follows the layer read).
pub const LEARNERS: &str = "gd(steps=1),ridge,least_squares,knn(k=3),averaging,zero";

/// The run config of one depth.
pub fn config(depth: usize, quick: bool) -> anyhow::Result<RunConfig> {
    let (d, n, width, heads, steps, lr) =
        if quick { (4, 8, 32, 2, 6000, 1e-3) } else { (8, 16, 512, 4, 100_000, 1e-4) };
    let mut c = RunConfig {
        name: format!("{NAME}-L{depth}{}", if quick { "-quick" } else { "" }),
        task: icl_tasks::TaskConfig::new("gaussian_linear").with("x_dim", d as i64).with("context_len", n as i64),
        ..RunConfig::default()
    };
    c.gpt = Some(GptConfig { layers: depth, heads, width });
    // A short curriculum (half the dimensions and points first) gets small models off the
    // initial plateau sooner; Akyürek et al. train without one.
    gpt_recipe(&mut c, d / 2, n, steps, lr, quick);
    c.resolve()
}

/// The training recipe of the lab's GPT-style figures beyond Garg's (here and
/// [`super::fu2023_newton`]): batch 64, Adam (β₂ 0.999 quick, Akyürek's 0.98 otherwise), a
/// curriculum from `dims_start` dimensions and n/2 + 1 points, evaluation every 1,000 (quick) or
/// 5,000 steps on 1,000 prompts.
pub(crate) fn gpt_recipe(c: &mut RunConfig, dims_start: usize, n: usize, steps: usize, lr: f64, quick: bool) {
    c.curriculum = Some(Curriculum {
        dims_start,
        dims_step: 1,
        points_start: n / 2 + 1,
        points_step: 2,
        every: if quick { 250 } else { 2000 },
    });
    c.train.steps = steps;
    c.train.batch = 64;
    c.train.lr = lr;
    c.train.beta2 = if quick { 0.999 } else { 0.98 };
    c.eval.every = if quick { 1000 } else { 5000 };
    c.eval.tasks = 1000;
}

/// The trained depths of the figure: each with its untrained twin; their task; and one line per
/// run saying where its training ended.
pub struct Depths {
    pub entrants: Vec<LoadedEntrant>,
    pub task: Box<dyn icl_tasks::Task>,
    pub trained: Vec<String>,
}

/// The [`Depths`] trained (or found) for `opts`. Shared with `akyurek2023-interventions`.
pub fn entrants(opts: &FigureOptions) -> anyhow::Result<Depths> {
    let mut entrants = Vec::new();
    let mut task = None;
    let mut trained = Vec::new();
    for &depth in DEPTHS {
        let config = config(depth, opts.quick)?;
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

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    crate::learners::register();
    let Depths { entrants, task, trained } = entrants(opts)?;
    let learners = crate::curve::parse_learners(LEARNERS)?;
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
        DEPTHS.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
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
