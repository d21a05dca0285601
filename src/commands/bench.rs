//! `icl-lab bench`: Time training steps (ms/step, data generation included) for the 1-, 2- and 3-layer recurrent models and the 5-separate-layer model, and for the GPT-style model at two sizes.
//!
//! The command's arguments (clap) and its body; what it computes lives in the library modules it calls.

use std::path::PathBuf;

// The arguments (their doc comments are the help text).
#[derive(clap::Args)]
pub struct Args {
    /// Device to time on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Timed steps per configuration.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Thread counts to compare (libtorch's intra-op threads; the fused engine's workers).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Engines to compare: fused, libtorch.
    #[arg(long, value_delimiter = ',', default_value = "fused,libtorch")]
    pub engines: Vec<String>,
    /// A Python with PyTorch and JAX: also run the plain baselines (lsa_bench.py, unedited) at
    /// every depth and print our speed-up over the faster one (see scripts/bench-baselines.sh).
    #[arg(long)]
    pub baseline_python: Option<PathBuf>,
    /// The baseline script run by --baseline-python (unedited, from ../shared/bench).
    #[arg(long, default_value = "../shared/bench/lsa_bench.py")]
    pub baseline_script: PathBuf,
    /// Timed steps of each baseline run.
    #[arg(long, default_value_t = 200)]
    pub baseline_steps: usize,
    /// Also time this many seeds trained together against one seed (0: skip): the 1-layer linear
    /// model, and the quick GPT-style model by the fused engine.
    #[arg(long, default_value_t = 5)]
    pub together: usize,
    /// Also time this many steps of the 5-layer GD++ reference fit, eigenbasis vs autograd (0: skip).
    #[arg(long, default_value_t = 100)]
    pub fit_steps: usize,
    /// Model families to time: lsa (von Oswald's linear self-attention), gpt (Garg's GPT-style model).
    #[arg(long, value_delimiter = ',', default_value = "lsa,gpt")]
    pub families: Vec<String>,
    /// GPT-style sizes to time: quick (d = 5, 11 points, 3 layers, 2 heads, width 32: garg2022-fig2
    /// --quick) and standard (d = 20, 41 points, 12 layers, 8 heads, width 256: Garg's standard model).
    #[arg(long, value_delimiter = ',', default_value = "quick,standard")]
    pub gpt: Vec<String>,
    /// Timed GPT-style steps per size (default: 200 at quick, 3 at standard).
    #[arg(long)]
    pub gpt_steps: Option<usize>,
    /// Garg et al.'s model as their code builds it, run (unedited) by --baseline-python beside every
    /// GPT-style line; needs PyTorch and transformers there.
    #[arg(long, default_value = "../shared/bench/garg_gpt_bench.py")]
    pub gpt_baseline_script: PathBuf,
    /// Where the GPT-style lines draw their batches: host (the task on one CPU core) or device
    /// (libtorch on the bench device; `train.data = "device"`).
    #[arg(long, default_value = "host", value_parser = ["host", "device"])]
    pub gpt_data: String,
    /// Print the measurements as JSON at the end.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        device,
        steps,
        threads,
        engines,
        baseline_python,
        baseline_script,
        baseline_steps,
        together,
        fit_steps,
        families,
        gpt,
        gpt_steps,
        gpt_baseline_script,
        gpt_data,
        json,
    } = args;
    for f in &families {
        anyhow::ensure!(f == "lsa" || f == "gpt", "--families: unknown family `{f}` (known: lsa, gpt)");
    }
    let gpt = if families.iter().any(|f| f == "gpt") {
        gpt.iter().map(|s| crate::bench::GptSize::parse(s)).collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let engines = engines
        .iter()
        .map(|e| match e.as_str() {
            "fused" => Ok(crate::config::Engine::Fused),
            "libtorch" => Ok(crate::config::Engine::Libtorch),
            other => anyhow::bail!("--engines: unknown engine `{other}` (known: fused, libtorch)"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lsa = families.iter().any(|f| f == "lsa");
    if let Some(python) = &baseline_python {
        if lsa {
            anyhow::ensure!(
                baseline_script.is_file(),
                "--baseline-script: {} is not a file",
                baseline_script.display()
            );
        }
        if !gpt.is_empty() {
            anyhow::ensure!(
                gpt_baseline_script.is_file(),
                "--gpt-baseline-script: {} is not a file",
                gpt_baseline_script.display()
            );
        }
        anyhow::ensure!(python.exists(), "--baseline-python: {} does not exist", python.display());
    }
    let gpt_baseline_script = (baseline_python.is_some() && !gpt.is_empty()).then_some(gpt_baseline_script);
    let opts = crate::bench::BenchOptions {
        device,
        steps,
        engines,
        threads,
        baselines: baseline_python.map(|p| (p, baseline_script)),
        baseline_steps,
        together,
        fit_steps,
        lsa,
        gpt,
        gpt_steps,
        gpt_baseline_script,
        gpt_data: if gpt_data == "device" { crate::config::DataPath::Device } else { crate::config::DataPath::Host },
    };
    let report = crate::bench::run(&opts, |line| crate::outln!("{line}"))?;
    let ratios = report.ratios();
    if !ratios.is_empty() {
        crate::outln!("\nspeed-up over the faster baseline (our fastest line | theirs):");
        for (depth, ours, theirs, ratio) in ratios {
            crate::outln!("  {depth:<12} {ratio:>5.1}×   ({ours:.2} ms | {theirs:.2} ms)");
        }
    }
    let gpt_ratios = report.gpt_ratios();
    if !gpt_ratios.is_empty() {
        crate::outln!("\nGPT-style speed-up over Garg et al.'s code (ours | theirs):");
        for (label, ours, theirs, ratio) in gpt_ratios {
            crate::outln!("  {label:<18} {ratio:>5.2}×   ({ours:.2} ms | {theirs:.2} ms)");
        }
    }
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
