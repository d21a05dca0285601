//! `icl-lab probe`: Probe a run directory: loss, alignment with GD, per-layer readouts, weight products, untrained control. Prints a summary (--json: everything) and writes <run-dir>/probe.json.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// A run directory (config.toml + weights.safetensors).
    pub run_dir: PathBuf,
    /// Print the whole report as JSON (with the weight products) instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { run_dir, json } = args;
    let run = crate::runs::open_run(&run_dir)?;
    let cfg = run.config.clone();
    let (vs, model) = crate::runs::load_model(&run_dir, &cfg, tch::Device::Cpu)?;
    let report = crate::probe::probe_model(&cfg, &vs, &model, None)?;
    crate::runs::write_derived(&run, crate::runs::PROBE_FILE, |p| {
        Ok(std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")?)
    })?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::outln!("{}", report.summary(&cfg));
        crate::outln!(
            "wrote {} (everything, with the weight products)",
            run_dir.join(crate::runs::PROBE_FILE).display()
        );
    }
    Ok(())
}
