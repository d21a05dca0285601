//! `icl-lab index`: Rebuild reports/vo2023.md, the index of the figure reports present (after running figures one at a time).
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Folder of the figure reports to index.
    #[arg(long, default_value = "reports")]
    pub reports: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args { reports } = args;
    let index = crate::figures::vo2023_all::write_index(&reports)?;
    crate::outln!("{}", serde_json::to_string_pretty(&index)?);
    Ok(())
}
