//! The command line's commands, one module per command: its clap arguments and its body. The
//! binary (src/main.rs) only parses, dispatches and turns an error into one line; what a command
//! computes lives in the library modules it calls (a module here shares its name with one of
//! those where the command is that module's front end: `commands/curve.rs` runs `crate::curve`).

use std::path::PathBuf;

pub mod activations;
pub mod bench;
pub mod construct;
pub mod curve;
pub mod index;
pub mod intervene;
pub mod interventions;
pub mod list;
pub mod probe;
pub mod probe_layers;
pub mod prompts;
pub mod reproduce;
pub mod sweep;
pub mod tournament;
pub mod train;

/// The one line that ends a command which wrote files.
pub(crate) fn print_written(files: &[PathBuf]) {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    crate::outln!("wrote {}", names.join(", "));
}

/// `--n`: numbers of in-context examples, each in 1..=the task's context length, each once.
pub(crate) fn checked_n_values(n: Vec<usize>, context_len: usize) -> anyhow::Result<Vec<usize>> {
    for (i, &k) in n.iter().enumerate() {
        anyhow::ensure!(
            (1..=context_len).contains(&k),
            "--n: every value must be in 1..={context_len} (the task's context length; got {k})"
        );
        anyhow::ensure!(!n[..i].contains(&k), "--n: {k} is given twice");
    }
    Ok(n)
}

/// `--jobs`: workers, each in 1..=256.
pub(crate) fn checked_jobs(jobs: Option<usize>) -> anyhow::Result<Option<usize>> {
    if let Some(j) = jobs {
        anyhow::ensure!((1..=256).contains(&j), "--jobs: must be in 1..=256 (got {j})");
    }
    Ok(jobs)
}
