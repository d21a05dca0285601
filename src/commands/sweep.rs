//! `icl-lab sweep`: Sweeps: a grid of config overrides × seeds as run directories, run here or as a Slurm array job.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: SweepAction,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { action } = args;
    match action {
        SweepAction::Plan { sweep, runs } => {
            let sweep = crate::sweep::Sweep::load(&sweep)?;
            crate::out!("{}", crate::sweep::plan(&sweep, &runs));
        }
        SweepAction::Run { sweep, runs, jobs } => {
            super::checked_jobs(Some(jobs))?;
            let sweep = crate::sweep::Sweep::load(&sweep)?;
            let (total, reused) = crate::sweep::run_local(&sweep, &runs, jobs)?;
            crate::outln!("sweep `{}`: {total} runs complete ({reused} reused) under {}", sweep.name, runs.display());
        }
        SweepAction::Slurm { sweep, runs, out, time, cpus, mem, partition, limit } => {
            let opts = crate::sweep::SlurmOptions { time, cpus, mem, partition, limit };
            opts.check()?;
            let sweep = crate::sweep::Sweep::load(&sweep)?;
            let out = out.unwrap_or_else(|| PathBuf::from("sweeps").join(&sweep.name));
            let script = crate::sweep::write_slurm(&sweep, &runs, &out, &opts)?;
            crate::outln!(
                "sweep `{}`: {} array tasks; submit with: sbatch {}",
                sweep.name,
                sweep.runs().len(),
                script.display()
            );
        }
        SweepAction::Collect { sweep, runs, reports, figures, json } => {
            let sweep = crate::sweep::Sweep::load(&sweep)?;
            let rows = crate::sweep::collect(&sweep, &runs)?;
            let report = crate::sweep::write_report(&sweep, rows, &reports, &figures)?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                crate::out!("{}", crate::sweep::markdown(&report));
                crate::outln!("wrote {}", reports.join(format!("{}.md", sweep.name)).display());
            }
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum SweepAction {
    /// List the runs a sweep file expands to and how many are complete; trains nothing.
    Plan {
        /// The sweep file (TOML: name, preset or config, seeds, [grid] of dotted keys → values).
        sweep: PathBuf,
        /// Folder that holds run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Train every run of the sweep on this machine (complete runs are reused).
    Run {
        /// The sweep file (TOML: name, preset or config, seeds, [grid] of dotted keys → values).
        sweep: PathBuf,
        /// Folder that holds run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Parallel training jobs (one run and one libtorch thread per worker).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Write a Slurm array job: one resolved config per (config, seed) and sweep.sbatch; submit it with sbatch.
    Slurm {
        /// The sweep file (TOML: name, preset or config, seeds, [grid] of dotted keys → values).
        sweep: PathBuf,
        /// Where the runs go (shared by the cluster's nodes).
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Directory for the configs, the job script and the logs [default: sweeps/<name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wall-time limit per array task.
        #[arg(long, default_value = "01:00:00")]
        time: String,
        /// CPU cores per array task (--cpus-per-task).
        #[arg(long, default_value_t = 1)]
        cpus: usize,
        /// Memory per array task, as Slurm writes it (e.g. 2G, 500M).
        #[arg(long, default_value = "2G")]
        mem: String,
        /// Slurm partition(s), comma-separated (none: the cluster's default).
        #[arg(long)]
        partition: Option<String>,
        /// At most this many array tasks running at once.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Read the finished runs (refusing an incomplete sweep) and write reports/<name>.{md,json} and a figure.
    Collect {
        /// The sweep file whose runs to collect.
        sweep: PathBuf,
        /// Folder that holds run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Folder for <name>.json and <name>.md (results/ is ignored by git).
        #[arg(long, default_value = "results/reports")]
        reports: PathBuf,
        /// Folder for <name>/final-loss.{png,svg} (results/ is ignored by git).
        #[arg(long, default_value = "results/figures")]
        figures: PathBuf,
        /// Print the report as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}
