//! `icl-lab probe-layers`: Linear probes of every layer's hidden states (Akyürek et al. 2023 §5): how well the task's hidden w, Xᵀy, w_OLS and w_ridge can be decoded from the query token and from all tokens, for each model, its untrained twin and control-task runs. Writes <reports>/<name>.{json,md} and <figures>/<name>/r2.{png,svg}.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Run directories: a run or a folder of seed-* runs (all its seeds).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Runs trained on a control task, probed on the first run's task (repeatable).
    #[arg(long = "control-task", value_name = "RUN_DIR")]
    pub control_task: Vec<PathBuf>,
    /// Leave out each model's untrained twin.
    #[arg(long)]
    pub no_untrained: bool,
    /// Report name (default: probes-<first run name>).
    #[arg(long)]
    pub name: Option<String>,
    /// Numbers of in-context examples, comma-separated (default: N).
    #[arg(long, value_delimiter = ',')]
    pub n: Vec<usize>,
    /// Prompts the probes are fitted on.
    #[arg(long, default_value_t = 2048)]
    pub fit_prompts: usize,
    /// Held-out prompts they are scored on.
    #[arg(long, default_value_t = 1024)]
    pub test_prompts: usize,
    /// Adam steps of the MLP probe on all tokens (0: linear probes only).
    #[arg(long, default_value_t = 1000)]
    pub mlp_steps: usize,
    /// Adam steps of the attention-pooling probe (Akyürek et al.'s learned pooling over positions; 0: none).
    #[arg(long, default_value_t = 300)]
    pub pool_steps: usize,
    /// Seed of the fit, test and tuning prompts and of the probes' initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for <name>.json and <name>.md (results/ is ignored by git).
    #[arg(long, default_value = "results/reports")]
    pub reports: PathBuf,
    /// Folder for <name>/r2.{png,svg} (results/ is ignored by git).
    #[arg(long, default_value = "results/figures")]
    pub figures: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        run_dirs,
        control_task,
        no_untrained,
        name,
        n,
        fit_prompts,
        test_prompts,
        mlp_steps,
        pool_steps,
        seed,
        reports,
        figures,
    } = args;
    let (entrants, config) = crate::tournament::load_entrants(&run_dirs, &control_task, no_untrained)?;
    let task = config.task();
    let mut opts = crate::layer_probes::LayerProbeOptions::for_task(task.as_ref());
    if !n.is_empty() {
        opts.n_values = super::checked_n_values(n, task.dims().context_len)?;
    }
    anyhow::ensure!((20..=100_000).contains(&fit_prompts), "--fit-prompts: must be in 20..=100000 (got {fit_prompts})");
    anyhow::ensure!(
        (10..=100_000).contains(&test_prompts),
        "--test-prompts: must be in 10..=100000 (got {test_prompts})"
    );
    anyhow::ensure!(mlp_steps <= 1_000_000, "--mlp-steps: must be at most 1000000 (got {mlp_steps})");
    opts.fit_prompts = fit_prompts;
    opts.test_prompts = test_prompts;
    opts.mlp_steps = mlp_steps;
    anyhow::ensure!(pool_steps <= 1_000_000, "--pool-steps: must be at most 1000000 (got {pool_steps})");
    opts.pool_steps = pool_steps;
    opts.seed = seed;
    let name = name.unwrap_or_else(|| format!("probes-{}", config.name));
    crate::tournament::check_report_name(&name)?;
    let bar = crate::progress::spinner("probes");
    let report = crate::layer_probes::run(&name, task.as_ref(), &entrants, &opts, &|what| {
        bar.set_message(what.to_string());
        bar.tick();
    })?;
    bar.finish_and_clear();
    let command: Vec<String> = std::env::args().collect();
    let files =
        crate::layer_probes::write(&report, &reports, &figures, &format!("icl-lab {}", command[1..].join(" ")), "")?;
    let probe = if mlp_steps > 0 { "mlp_probe" } else { "linear_probe" };
    crate::outln!(
        "held-out R² of the {probe} from all tokens at n = {} (mean over seeds):",
        opts.n_values.iter().max().unwrap_or(&0)
    );
    for e in &report.entrants {
        for layer in 0..=e.layers {
            let cells: Vec<String> = icl_probes::activation_probe::TARGETS
                .iter()
                .map(|t| format!("{t} {:.3}", report.value(&e.model, layer, probe, t, "all_tokens", "r2").0))
                .collect();
            crate::outln!("  {:<40} layer {layer}: {}", e.model, cells.join(", "));
        }
    }
    super::print_written(&files);
    Ok(())
}
