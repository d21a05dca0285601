//! `icl-lab activations`: Export a run's activations on fresh prompts as safetensors (every hook name of the activation cache, the prompts as prompt.xs/ys/xq/yq, and the prediction), for Python: see examples/lsa_numpy.py.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// A run directory (config.toml + weights.safetensors).
    pub run_dir: PathBuf,
    /// Prompts drawn from the run's task.
    #[arg(long, default_value_t = 16)]
    pub prompts: usize,
    /// Seed of the prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file [default: <run-dir>/activations.safetensors].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { run_dir, prompts, seed, out } = args;
    let (out, written) = crate::export::export_activations(&run_dir, prompts, seed, out.as_deref())?;
    for (name, shape) in &written {
        crate::outln!("{name:<28} {shape:?}");
    }
    super::print_written(&[out]);
    Ok(())
}
