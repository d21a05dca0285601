//! `icl-lab prompts`: Draw prompts of a task and write them, with reference learners' predictions on them, as float64 safetensors (prompt.xs/ys/xq/yq/w, pred.<learner>, sens.<learner>): the Rust side of the Python module's parity tests, and prompts for any other tool. Prints what it wrote.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

use anyhow::Context;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Task by registry name (see `icl-lab list`), with its default parameters unless --set.
    #[arg(long, default_value = "linear")]
    pub task: String,
    /// A task parameter as KEY=VALUE (repeatable), e.g. --set x_dim=5.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Number of prompts.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Context pairs per prompt (default: the task's context length).
    #[arg(long)]
    pub n: Option<usize>,
    /// Seed of the prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// RNG stream of the seed (0: the evaluation prompts every command draws; 1: tuning prompts).
    #[arg(long, default_value_t = 0)]
    pub stream: u64,
    /// Learners to predict the prompts with, as for `curve` (`none`, `default` or a list); open
    /// hyperparameters are tuned on --tuning-prompts prompts of stream 1 of the seed.
    #[arg(long, default_value = "none")]
    pub learners: String,
    /// Prompts the learners' open hyperparameters are tuned on (stream 1 of --seed, n pairs).
    #[arg(long, default_value_t = 4096)]
    pub tuning_prompts: usize,
    /// Output file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { task, set, batch, n, seed, stream, learners, tuning_prompts, out } = args;
    let mut task_config = icl_tasks::TaskConfig::new(&task);
    for kv in &set {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set: `{kv}` is not KEY=VALUE"))?;
        task_config.set(k.trim(), crate::curve::parse_value(v.trim()).with_context(|| format!("--set {kv}"))?);
    }
    let task = icl_tasks::build(&task_config)?;
    let learners = crate::curve::resolve_learners(&learners, &task.learners())?;
    let opts = crate::export::PromptExport { batch, n, seed, stream, tuning_prompts };
    let written = crate::export::export_prompts(task.as_ref(), &learners, &opts, &out)?;
    for (name, shape) in &written {
        crate::outln!("{name:<28} {shape:?}");
    }
    super::print_written(&[out]);
    Ok(())
}
