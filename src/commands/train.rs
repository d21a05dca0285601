//! `icl-lab train`: Train one model: (config, seed) → runs/<name>/seed-<seed>/{config.toml, metrics.json, weights.safetensors}.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

use crate::config::RunConfig;
use crate::train::{train, TrainOptions};
use anyhow::Context;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// A TOML run config (tables [task], [model], [train], [eval]; every key optional).
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    // Its help lists the presets (crate::presets), so it cannot drift from them.
    #[arg(long, help = crate::presets::preset_help())]
    pub preset: Option<String>,
    /// Override the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train this many seeds (the config's seed and the next ones) together, in one step loop
    /// (fused engine; each run is bit for bit what training it alone gives).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Workers for --seeds (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Override the config's device: cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Override the number of training steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Folder that holds run directories.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Retrain even if a complete run with this exact config exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { config, preset, seed, seeds, jobs, device, steps, runs, force } = args;
    anyhow::ensure!(seeds != Some(0), "--seeds: must be at least 1 (got 0)");
    let jobs = super::checked_jobs(jobs)?;
    let mut cfg = match (config, preset) {
        (Some(path), _) => RunConfig::from_file(&path)?,
        // Preset files and the figures' models (full setting), e.g. `lsa-2-rec`.
        (None, Some(name)) => RunConfig::preset(&name)?,
        (None, None) => anyhow::bail!("give --config <file.toml> or --preset <name>"),
    };
    if let Some(s) = seed {
        cfg.seed = s;
    }
    if let Some(d) = device {
        cfg.train.device = d;
    }
    if let Some(s) = steps {
        cfg.train.steps = s;
    }
    let cfg = cfg.resolve()?;
    if let Some(n) = seeds.filter(|&n| n > 1) {
        let configs: Vec<RunConfig> = (0..n as u64)
            .map(|i| {
                let mut c = cfg.clone();
                c.seed = cfg.seed.checked_add(i).context("--seeds: seeds past 2^64 - 1")?;
                Ok(c)
            })
            .collect::<anyhow::Result<_>>()?;
        let bars = crate::progress::multi();
        let bars: Vec<_> = configs.iter().map(|c| bars.add(crate::train::run_progress_bar(c))).collect();
        let workers = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let outs =
            crate::train::train_together(&configs, &runs, TrainOptions { force, ..Default::default() }, workers, &bars);
        let mut failed = 0;
        for (c, out) in configs.iter().zip(outs) {
            match out {
                Ok(out) => {
                    let last = out.metrics.rows.last().context("no evaluation rows")?;
                    crate::outln!(
                        "seed {}: final loss {:.6}  {}{}",
                        c.seed,
                        last.loss,
                        out.dir.display(),
                        if out.reused { " (reused)" } else { "" }
                    );
                }
                Err(e) => {
                    failed += 1;
                    crate::warnln!("seed {}: {e:#}", c.seed);
                }
            }
        }
        anyhow::ensure!(failed == 0, "{failed} of {n} seeds failed");
        return Ok(());
    }
    let out = train(&cfg, &runs, TrainOptions { force, ..Default::default() })?;
    let last = out.metrics.rows.last().context("no evaluation rows")?;
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "run_dir": out.dir, "reused": out.reused, "final": last, "references": out.metrics.references,
        }))?
    );
    Ok(())
}
