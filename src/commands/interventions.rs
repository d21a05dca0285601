//! `icl-lab interventions`: The four intervention protocols (P1 layer knockout, P2 iterate interchange, P3 activation patching, P4 influence profiles) for each model, its untrained twin and control-task runs, against every candidate learner (fitted on separate prompts) and beside the output comparison the tournament makes. Writes <reports>/<name>.{json,md} and <figures>/<name>/{p3,p4}.{png,svg}.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

use anyhow::Context;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Run directories: a run (…/seed-0) or a folder of seed-* runs of one configuration (all its
    /// seeds). The first one's task is the protocols'.
    #[arg(required_unless_present = "rerender", value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Rebuild the Markdown report and the figures from an interventions JSON (no measuring).
    #[arg(long, value_name = "JSON", conflicts_with = "run_dirs")]
    pub rerender: Option<PathBuf>,
    /// Runs trained on a control task (e.g. `linear` with fixed_w = true), evaluated on the first
    /// run's task (repeatable).
    #[arg(long = "control-task", value_name = "RUN_DIR")]
    pub control_task: Vec<PathBuf>,
    /// Leave out each model's untrained twin (its seed's initial weights).
    #[arg(long)]
    pub no_untrained: bool,
    /// Candidates: `default` (the task's learners), a list such as "gd(steps=1),ridge", or `+list` to
    /// add to the task's. A candidate with `steps` runs `steps = layer`; P1 and P2 use the GD and GD++
    /// candidates, P4 every candidate linear in y.
    #[arg(long, default_value = "+gd++(steps=1),newton(steps=1)")]
    pub learners: String,
    /// Report name (default: interventions-<first run name>).
    #[arg(long)]
    pub name: Option<String>,
    /// Numbers of in-context examples, comma-separated (default: N; P3 runs at the largest).
    #[arg(long, value_delimiter = ',')]
    pub n: Vec<usize>,
    /// Evaluation prompts per n (P2's source prompts and P3's corruptions are as many).
    #[arg(long, default_value_t = 256)]
    pub prompts: usize,
    /// Prompts the candidates' hyperparameters are fitted on, per n.
    #[arg(long, default_value_t = 1024)]
    pub tuning_prompts: usize,
    /// Bootstrap resamples of each row's 90% interval.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the evaluation, source and tuning prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for <name>.json and <name>.md (results/ is ignored by git; the paper reports live in reports/).
    #[arg(long, default_value = "results/reports")]
    pub reports: PathBuf,
    /// Folder for <name>/{p3,p4}.{png,svg} (results/ is ignored by git).
    #[arg(long, default_value = "results/figures")]
    pub figures: PathBuf,
    /// Print the whole report as JSON instead of the findings.
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
        resamples,
        seed,
        reports,
        figures,
        json,
    } = args;
    if let Some(path) = rerender {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let report: crate::protocols::InterventionsReport = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not an interventions report", path.display()))?;
        let files = crate::protocols::write(&report, &reports, &figures)?;
        super::print_written(&files);
        return Ok(());
    }
    crate::learners::register();
    let (entrants, config) = crate::tournament::load_entrants(&run_dirs, &control_task, no_untrained)?;
    let task = config.task();
    let defaults = crate::tournament::default_candidates(&entrants);
    let candidates = crate::curve::resolve_learners(&learners, &defaults)?;
    let mut opts = crate::protocols::ProtocolOptions::for_task(task.as_ref());
    if !n.is_empty() {
        opts.n_values = super::checked_n_values(n, task.dims().context_len)?;
    }
    opts.prompts = prompts;
    opts.tuning_prompts = tuning_prompts;
    opts.resamples = resamples;
    opts.seed = seed;
    let name = name.unwrap_or_else(|| format!("interventions-{}", config.name));
    crate::tournament::check_report_name(&name)?;
    let bar = crate::progress::spinner("interventions");
    let report = crate::protocols::run(&name, task.as_ref(), &entrants, &candidates, &opts, &|what| {
        bar.set_message(what.to_string());
        bar.tick();
    })?;
    bar.finish_and_clear();
    let command: Vec<String> = std::env::args().collect();
    let report =
        crate::protocols::InterventionsReport { command: format!("icl-lab {}", command[1..].join(" ")), ..report };
    let files = crate::protocols::write(&report, &reports, &figures)?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in report.findings() {
            crate::outln!("- {f}");
        }
        for s in &report.skipped {
            crate::outln!("left out: {s}");
        }
        super::print_written(&files);
    }
    Ok(())
}
