//! `icl-lab reproduce`: Reproduce a paper figure: train its seeds, probe them, render figures/<name>/*.png|svg and reports/<name>.{md,json}.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    // Its help lists the figure registry (crate::figures::FIGURES), so it cannot drift from it.
    #[arg(help = figure_help())]
    pub figure: String,
    /// Shortened training (minutes on a CPU); the report says so. Default: the paper's setting.
    #[arg(long)]
    pub quick: bool,
    /// Seeds 0..N (curves show the mean and a min–max band); default: the figure's
    /// (1 for vo2023-fig2, 5 where the paper shows 5 seeds).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Seeds trained in parallel (one libtorch thread each); default: the number of cores.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Retrain runs even if complete ones with the same config exist in --runs.
    #[arg(long)]
    pub force: bool,
    /// Device for training: cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Train for this many steps instead of the setting's (e.g. to fit a device budget); the
    /// report says so. Figures that support it: garg2022-fig2.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Print the report's JSON instead of its Markdown summary.
    #[arg(long)]
    pub json: bool,
    /// Folder that holds run directories (runs/<name>/seed-<seed>).
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Folder for the figure's PNG and SVG files (figures/<name>/).
    #[arg(long, default_value = "figures")]
    pub figures: PathBuf,
    /// Folder for the report (reports/<name>.md and .json).
    #[arg(long, default_value = "reports")]
    pub reports: PathBuf,
}

/// `<FIGURE>`'s help: every registered figure.
fn figure_help() -> String {
    let names: Vec<&str> = crate::figures::FIGURES.iter().map(|f| f.name).collect();
    format!("The figure: {} (the README's table says what each shows)", names.join(", "))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { figure, quick, seeds, jobs, force, device, steps, json, runs, figures, reports } = args;
    anyhow::ensure!(seeds != Some(0), "--seeds: must be at least 1 (got 0)");
    let jobs = super::checked_jobs(jobs)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = crate::figures::FigureOptions {
        seeds,
        quick,
        jobs: jobs.unwrap_or(cores),
        force,
        device,
        steps,
        runs_root: runs,
        figures_root: figures,
        reports_root: reports,
    };
    let summary = crate::figures::reproduce(&figure, &opts)?;
    let markdown = opts.reports_root.join(format!("{figure}.md"));
    if json {
        // The report's JSON, as written to reports/<figure>.json.
        crate::outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        // The report is written for people: print it, then where everything is.
        if let Ok(text) = std::fs::read_to_string(&markdown) {
            crate::outln!("{}", text.trim_end());
        }
        crate::outln!(
            "\nwrote {} and {} (full rows: --json or the JSON file)",
            markdown.display(),
            opts.reports_root.join(format!("{figure}.json")).display()
        );
    }
    Ok(())
}
