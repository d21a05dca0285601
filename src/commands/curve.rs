//! `icl-lab curve`: The in-context learning curve: normalised error (zero predictor = 1) against the number of in-context examples, for a task's reference learners and any trained runs, with 90% bootstrap intervals. Writes <out>/curve.{json,png,svg} and prints a summary.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

use crate::config::RunConfig;
use anyhow::Context;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Task by registry name (see `icl-lab list`), with its default parameters unless --set.
    #[arg(long, conflicts_with = "config")]
    pub task: Option<String>,
    /// A task parameter as KEY=VALUE (repeatable), e.g. --set x_dim=5 --set covariance=diagonal.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Take the task from a run config file's [task] table.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `default` (the task's own learners), `none`, or a list such as
    /// "least_squares,gd(steps=2),lasso(alpha=0.1),precond_gd(steps=1, p=[[1,0],[0,2]])", in which
    /// `default` stands for the task's learners; `+list` adds to them. Each spec is its own line.
    #[arg(long, default_value = "default")]
    pub learners: String,
    /// A trained run directory to put on the curve (repeatable); its task is used when neither
    /// --task nor --config is given.
    #[arg(long = "run", value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Also read every run out after each of its layers.
    #[arg(long)]
    pub per_layer: bool,
    /// Largest number of in-context examples (default: the task's context length).
    #[arg(long)]
    pub n_max: Option<usize>,
    /// Step between the numbers of in-context examples evaluated (0, step, 2·step, …).
    #[arg(long, default_value_t = 1)]
    pub n_step: usize,
    /// Evaluation prompts (Garg et al.: 1,280).
    #[arg(long, default_value_t = 1280)]
    pub prompts: usize,
    /// Prompts the learners' step sizes, λ and P are tuned on, per n (never the evaluation prompts).
    #[arg(long, default_value_t = 4096)]
    pub tuning_prompts: usize,
    /// Seed of the evaluation and tuning prompts (their RNG streams).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    // Its help lists every shift kind (icl_tasks::ShiftKind::ALL), so it cannot drift from them.
    #[arg(long, value_name = "KIND=VALUE", help = shift_help())]
    pub shift: Option<String>,
    /// Output folder (default: curves/<task>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print every row as JSON instead of the summary table.
    #[arg(long)]
    pub json: bool,
}

/// `--shift`'s help: every kind of shift (the on/off ones with their `=1`).
fn shift_help() -> String {
    let kinds: Vec<String> = icl_tasks::ShiftKind::ALL
        .iter()
        .map(|k| if k.is_switch() { format!("{}=1", k.name()) } else { k.name().to_string() })
        .collect();
    format!(
        "Evaluate under a distribution shift, KIND=VALUE: {}, where the task has it (`icl-lab list`; tuning stays on the training distribution)",
        kinds.join(", ")
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        task,
        set,
        config,
        learners,
        runs,
        per_layer,
        n_max,
        n_step,
        prompts,
        tuning_prompts,
        seed,
        shift,
        out,
        json,
    } = args;
    crate::learners::register();
    let runs: Vec<crate::curve::RunOnCurve> =
        runs.iter().map(|d| crate::curve::RunOnCurve::load(d)).collect::<anyhow::Result<_>>()?;
    let mut task_config = match (task, config) {
        (Some(name), _) => icl_tasks::TaskConfig::new(&name),
        (None, Some(path)) => RunConfig::from_file(&path)?.task,
        (None, None) => match runs.first() {
            Some(r) => r.config.task.clone(),
            None => anyhow::bail!("give --task <name>, --config <run.toml> or --run <run-dir>"),
        },
    };
    for kv in &set {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set: `{kv}` is not KEY=VALUE"))?;
        task_config.set(k.trim(), crate::curve::parse_value(v.trim()).with_context(|| format!("--set {kv}"))?);
    }
    let task = icl_tasks::build(&task_config)?;
    // A run trained on a pool of tasks (on this task) brings the learners of its pool
    // (the posterior mean over it, `dmmse`), one per run.
    let mut defaults = task.learners();
    for r in runs.iter().filter(|r| r.config.task == task_config) {
        for spec in r.config.training_task().learners() {
            if !defaults.contains(&spec) {
                defaults.push(spec);
            }
        }
    }
    let learners = crate::curve::resolve_learners(&learners, &defaults)?;
    let shift = shift
        .map(|s| -> anyhow::Result<icl_tasks::Shift> {
            let shift = icl_tasks::Shift::parse(&s).map_err(anyhow::Error::msg)?;
            task.shifted(shift).context("--shift")?;
            Ok(shift)
        })
        .transpose()?;
    let n_max = n_max.unwrap_or(task.dims().context_len);
    anyhow::ensure!(n_step >= 1, "--n-step: must be at least 1");
    anyhow::ensure!((1..=1_000_000).contains(&prompts), "--prompts: must be in 1..=1000000 (got {prompts})");
    anyhow::ensure!(
        (1..=1_000_000).contains(&tuning_prompts),
        "--tuning-prompts: must be in 1..=1000000 (got {tuning_prompts})"
    );
    anyhow::ensure!(
        n_max <= icl_tasks::MAX_CONTEXT,
        "--n-max: must be at most {} (got {n_max})",
        icl_tasks::MAX_CONTEXT
    );
    let opts = icl_probes::curve::CurveOptions {
        prompts,
        tuning_prompts,
        n_values: (0..=n_max).step_by(n_step).collect(),
        seed,
        shift,
        ..Default::default()
    };
    crate::curve::memory(task.as_ref(), &runs, &opts).check()?;
    let rows = crate::curve::measure(task.as_ref(), &learners, &runs, per_layer, &opts)?;
    let out = out.unwrap_or_else(|| PathBuf::from("curves").join(task.name()));
    let file = crate::curve::CurveFile {
        task: task.config(),
        prompts,
        tuning_prompts,
        seed,
        shift,
        runs: runs.iter().map(|r| r.dir.display().to_string()).collect(),
        measurements: rows,
    };
    let title = format!("{}: in-context learning curve", task.name());
    let files = crate::curve::write(&out, &file, &title)?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&file.measurements)?);
    } else {
        crate::outln!("{} — normalised error (zero predictor = 1), mean over {prompts} prompts", task.name());
        crate::out!("{}", crate::curve::summary(&file.measurements, 6));
        super::print_written(&files);
    }
    Ok(())
}
