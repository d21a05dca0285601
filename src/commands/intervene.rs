//! `icl-lab intervene`: Change a run's activations at named hooks and measure what follows: prints the loss change and writes every hook's intervened activation (hook names as keys), the prompts, `prediction` and `clean.prediction` as safetensors. Give --hook with its --op once per intervention (several apply in one forward, in order).
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// A run directory (config.toml + weights.safetensors).
    pub run_dir: PathBuf,
    /// Hook name, e.g. layers.0.resid_post, layers.1.attn.out, layers.0.attn.pattern, layers.0.mlp.out, tokens
    /// (an unknown name lists the model's). Repeat for several interventions.
    #[arg(long, required = true)]
    pub hook: Vec<String>,
    /// What to do there, one per --hook: zero; mean (over a reference batch); resample (from another batch of
    /// the same size, same positions); replace=FILE, add=FILE (a safetensors tensor of the hook's shape or one
    /// that broadcasts to it, named after the hook or the file's only entry); project-onto=FILE, project-out=FILE
    /// (a basis (D, k) of the channel space).
    #[arg(long, required = true)]
    pub op: Vec<String>,
    /// Token positions: all, context, query, or 0-based positions like 0,3,5 or 2..5. Once for all
    /// interventions or once per --hook.
    #[arg(long)]
    pub tokens: Vec<String>,
    /// Channels (the last axis): all, x or y (von Oswald et al.'s token layout), or numbers like 0,3 or 0..10.
    /// Once for all interventions or once per --hook.
    #[arg(long)]
    pub channels: Vec<String>,
    /// Prompts drawn from the run's task.
    #[arg(long, default_value_t = 256)]
    pub prompts: usize,
    /// Seed of the prompts (and of the resample and mean batches).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file [default: <run-dir>/intervened.safetensors].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { run_dir, hook, op, tokens, channels, prompts, seed, out, json } = args;
    let per_hook = |values: Vec<String>, what: &str| -> anyhow::Result<Vec<String>> {
        match values.len() {
            0 => Ok(vec!["all".to_string(); hook.len()]),
            1 => Ok(vec![values[0].clone(); hook.len()]),
            k if k == hook.len() => Ok(values),
            k => anyhow::bail!("--{what}: give it once or once per --hook ({} hooks, {k} values)", hook.len()),
        }
    };
    anyhow::ensure!(op.len() == hook.len(), "--op: give one per --hook ({} hooks, {} ops)", hook.len(), op.len());
    let (tokens, channels) = (per_hook(tokens, "tokens")?, per_hook(channels, "channels")?);
    let args: Vec<crate::interventions::InterventionArgs> = (0..hook.len())
        .map(|i| crate::interventions::InterventionArgs {
            hook: hook[i].clone(),
            op: op[i].clone(),
            tokens: tokens[i].clone(),
            channels: channels[i].clone(),
        })
        .collect();
    let summary = crate::interventions::run_intervene(&run_dir, &args, prompts, seed, out.as_deref())?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        crate::outln!("{}", summary.summary());
        super::print_written(std::slice::from_ref(&summary.file));
    }
    Ok(())
}
