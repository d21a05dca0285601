//! `icl-lab construct`: Build the hard-coded GD construction (Proposition 1) into the transformer and check it against GD.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

use crate::config::RunConfig;
use anyhow::Context;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Layers K (K GD steps).
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// Separate parameter layers (one η each) instead of one shared layer.
    #[arg(long)]
    pub separate: bool,
    /// Learning rate(s) η, comma-separated (one, or one per layer with --separate);
    /// default: the η tuned for K steps on the evaluation set.
    #[arg(long, value_delimiter = ',')]
    pub eta: Vec<f64>,
    /// Random prompts to check on.
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Seed of the random prompts the construction is checked on.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write a run directory (config.toml + weights.safetensors) that `icl-lab probe` reads.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { layers, separate, eta, tasks, seed, out } = args;
    let mut cfg = RunConfig::preset("vo2023-fig2")?;
    cfg.name = "construction".into();
    cfg.model.layers = layers;
    cfg.model.recurrent = !separate;
    cfg.model.init_scale = None;
    cfg.train.grad_clip = None;
    let cfg = cfg.resolve().with_context(|| {
        format!("--layers {layers}: the construction is a run of the vo2023-fig2 preset with {layers} layer(s)")
    })?;
    let etas = if eta.is_empty() {
        let p = crate::evaluate::sample_prompts(&cfg.task, cfg.eval.tasks, cfg.eval.seed)?;
        let stats = icl_probes::gd::LeastSquaresStats::new(&p);
        vec![crate::evaluate::tune_gd(&cfg, &p, &stats).eta; cfg.model.param_layers()]
    } else if eta.len() == 1 {
        vec![eta[0]; cfg.model.param_layers()]
    } else {
        anyhow::ensure!(
            eta.len() == cfg.model.param_layers(),
            "--eta: give one η, or one per layer with --separate ({} here; got {})",
            cfg.model.param_layers(),
            eta.len()
        );
        eta
    };
    anyhow::ensure!(etas.iter().all(|e| e.is_finite()), "--eta: must be finite numbers");
    anyhow::ensure!((1..=1_000_000).contains(&tasks), "--tasks: must be in 1..=1000000 (got {tasks})");
    crate::construct::memory(&cfg, tasks).check()?;
    let check = crate::construct::check_construction(&cfg, &etas, tasks, seed)?;
    if let Some(dir) = out {
        let (vs, _) = crate::construct::gd_model(&cfg, &etas, tch::Kind::Float, tch::Device::Cpu)?;
        crate::construct::write_run(&dir, &cfg, &vs)?;
    }
    crate::outln!("{}", serde_json::to_string_pretty(&check)?);
    Ok(())
}
