//! `icl-lab tournament`: The hypothesis tournament: each model read out after every layer, compared at every n with every candidate learner (fitted on separate prompts) by SPD, ILWD, model cos and preds diff, and the candidates ranked per layer, with the untrained model and order sensitivity as controls. Writes <reports>/<name>.{json,md} and <figures>/<name>/spd.{png,svg}.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

use anyhow::Context;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Run directories: a run (…/seed-0) or a folder of seed-* runs of one configuration
    /// (all its seeds). The first one's task is the tournament's.
    #[arg(required_unless_present = "rerender", value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Rebuild the Markdown report and the figure from a tournament's JSON (no measuring).
    #[arg(long, value_name = "JSON", conflicts_with = "run_dirs")]
    pub rerender: Option<PathBuf>,
    /// Runs trained on a control task (e.g. `linear` with fixed_w = true), as contestants of
    /// their own, evaluated on the first run's task (repeatable).
    #[arg(long = "control-task", value_name = "RUN_DIR")]
    pub control_task: Vec<PathBuf>,
    /// Leave out each model's untrained twin (its seed's initial weights).
    #[arg(long)]
    pub no_untrained: bool,
    /// Candidates: `default` (the task's learners), a list such as "gd(steps=1),knn(k=1),knn(k=8)"
    /// (each spec is its own candidate; values may be lists), or `+list` to add to the task's.
    /// A candidate with `steps` runs `steps = layer`.
    #[arg(long, default_value = "default")]
    pub learners: String,
    /// Report name (default: tournament-<first run name>).
    #[arg(long)]
    pub name: Option<String>,
    /// Numbers of in-context examples, comma-separated (default: 1…N).
    #[arg(long, value_delimiter = ',')]
    pub n: Vec<usize>,
    /// Evaluation prompts per n.
    #[arg(long, default_value_t = 512)]
    pub prompts: usize,
    /// Prompts the candidates' hyperparameters are fitted on, per n.
    #[arg(long, default_value_t = 4096)]
    pub tuning_prompts: usize,
    /// Random context orders for the order-sensitivity control.
    #[arg(long, default_value_t = 8)]
    pub orders: usize,
    /// Seed of the evaluation, tuning and query prompts and the context orders.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for <name>.json and <name>.md (results/ is ignored by git; the paper reports live in reports/).
    #[arg(long, default_value = "results/reports")]
    pub reports: PathBuf,
    /// Folder for <name>/spd.{png,svg} (results/ is ignored by git).
    #[arg(long, default_value = "results/figures")]
    pub figures: PathBuf,
    /// Print the whole report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        run_dirs,
        rerender,
        control_task,
        no_untrained,
        learners,
        name,
        n,
        prompts,
        tuning_prompts,
        orders,
        seed,
        reports,
        figures,
        json,
    } = args;
    if let Some(path) = rerender {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut report: crate::tournament::TournamentReport =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not a tournament report", path.display()))?;
        report.rerank()?;
        let files = crate::tournament::write(&report, &reports, &figures)?;
        super::print_written(&files);
        return Ok(());
    }
    crate::learners::register();
    let (entrants, config) = crate::tournament::load_entrants(&run_dirs, &control_task, no_untrained)?;
    let task = config.task();
    let defaults = crate::tournament::default_candidates(&entrants);
    let candidates = crate::curve::resolve_learners(&learners, &defaults)?;
    let mut opts = crate::tournament::TournamentOptions::for_task(task.as_ref());
    if !n.is_empty() {
        opts.n_values = super::checked_n_values(n, task.dims().context_len)?;
    }
    anyhow::ensure!((1..=100_000).contains(&prompts), "--prompts: must be in 1..=100000 (got {prompts})");
    anyhow::ensure!(
        (1..=1_000_000).contains(&tuning_prompts),
        "--tuning-prompts: must be in 1..=1000000 (got {tuning_prompts})"
    );
    anyhow::ensure!((1..=1000).contains(&orders), "--orders: must be in 1..=1000 (got {orders})");
    opts.prompts = prompts;
    opts.tuning_prompts = tuning_prompts;
    opts.orders = orders;
    opts.seed = seed;
    let name = name.unwrap_or_else(|| format!("tournament-{}", config.name));
    crate::tournament::check_report_name(&name)?;
    let bar = crate::progress::spinner("tournament");
    let report = crate::tournament::run(&name, task.as_ref(), &entrants, &candidates, &opts, &|what| {
        bar.set_message(what.to_string());
        bar.tick();
    })?;
    bar.finish_and_clear();
    let command: Vec<String> = std::env::args().collect();
    let report =
        crate::tournament::TournamentReport { command: format!("icl-lab {}", command[1..].join(" ")), ..report };
    let files = crate::tournament::write(&report, &reports, &figures)?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::out!("{}", report.table());
        for s in &report.skipped {
            crate::outln!("not fitted: {s}");
        }
        super::print_written(&files);
    }
    Ok(())
}
