//! The `icl-lab` command line.
use clap::{Parser, Subcommand};

use icl_lab::commands;

#[derive(Parser)]
#[command(name = "icl-lab", version, about = "Does attention implement gradient descent? Train, probe and reproduce.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one model: (config, seed) → runs/<name>/seed-<seed>/{config.toml, metrics.json, weights.safetensors}.
    Train(commands::train::Args),
    /// Reproduce a paper figure: train its seeds, probe them, render figures/<name>/*.png|svg and reports/<name>.{md,json}.
    Reproduce(commands::reproduce::Args),
    /// Build the hard-coded GD construction (Proposition 1) into the transformer and check it against GD.
    Construct(commands::construct::Args),
    /// The in-context learning curve: normalised error (zero predictor = 1) against the number of
    /// in-context examples, for a task's reference learners and any trained runs, with 90% bootstrap
    /// intervals. Writes <out>/curve.{json,png,svg} and prints a summary.
    Curve(commands::curve::Args),
    /// The hypothesis tournament: each model read out after every layer, compared at every n with
    /// every candidate learner (fitted on separate prompts) by SPD, ILWD, model cos and preds diff,
    /// and the candidates ranked per layer, with the untrained model and order sensitivity as
    /// controls. Writes <reports>/<name>.{json,md} and <figures>/<name>/spd.{png,svg}.
    Tournament(commands::tournament::Args),
    /// Linear probes of every layer's hidden states (Akyürek et al. 2023 §5): how well the task's
    /// hidden w, Xᵀy, w_OLS and w_ridge can be decoded from the query token and from all tokens,
    /// for each model, its untrained twin and control-task runs. Writes <reports>/<name>.{json,md}
    /// and <figures>/<name>/r2.{png,svg}.
    ProbeLayers(commands::probe_layers::Args),
    /// List the registered tasks (with their parameters and default learners) and learners.
    List,
    /// Draw prompts of a task and write them, with reference learners' predictions on them, as float64
    /// safetensors (prompt.xs/ys/xq/yq/w, pred.<learner>, sens.<learner>): the Rust side of the Python
    /// module's parity tests, and prompts for any other tool. Prints what it wrote.
    Prompts(commands::prompts::Args),
    /// Probe a run directory: loss, alignment with GD, per-layer readouts, weight products, untrained control.
    /// Prints a summary (--json: everything) and writes <run-dir>/probe.json.
    Probe(commands::probe::Args),
    /// Export a run's activations on fresh prompts as safetensors (every hook name of the activation cache,
    /// the prompts as prompt.xs/ys/xq/yq, and the prediction), for Python: see examples/lsa_numpy.py.
    Activations(commands::activations::Args),
    /// Change a run's activations at named hooks and measure what follows: prints the loss change and writes
    /// every hook's intervened activation (hook names as keys), the prompts, `prediction` and `clean.prediction`
    /// as safetensors. Give --hook with its --op once per intervention (several apply in one forward, in order).
    Intervene(commands::intervene::Args),
    /// The four intervention protocols (P1 layer knockout, P2 iterate interchange, P3 activation
    /// patching, P4 influence profiles) for each model, its untrained twin and control-task runs, against
    /// every candidate learner (fitted on separate prompts) and beside the output comparison the tournament
    /// makes. Writes <reports>/<name>.{json,md} and <figures>/<name>/{p3,p4}.{png,svg}.
    Interventions(commands::interventions::Args),
    /// Sweeps: a grid of config overrides × seeds as run directories, run here or as a Slurm array job.
    Sweep(commands::sweep::Args),
    /// Rebuild reports/vo2023.md, the index of the figure reports present (after running figures one at a time).
    Index(commands::index::Args),
    /// Time training steps (ms/step, data generation included): the linear-attention models at 1, 2, 3 recurrent and 5 separate layers, and the GPT-style model at two sizes.
    Bench(commands::bench::Args),
}

/// A command-line mistake as one line: clap's message without its usage block, ending in where
/// to look (`--help` and `--version` print as usual).
fn parse_cli() -> Result<Cli, std::process::ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            icl_lab::out!("{e}");
            Err(std::process::ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            icl_lab::warnln!("{}", e.render().to_string().trim_end());
            Err(std::process::ExitCode::FAILURE)
        }
        Err(e) => {
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .collect();
            let mut line = String::new();
            for p in parts {
                if !line.is_empty() {
                    line.push_str(if line.ends_with(':') { " " } else { "; " });
                }
                line.push_str(p);
            }
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            icl_lab::warnln!("error: {line} (see --help)");
            Err(std::process::ExitCode::FAILURE)
        }
    }
}

fn main() -> std::process::ExitCode {
    // A panic is a bug, never an answer to input: say so in one line (the message and where),
    // not libtorch's kilobytes of C++ frames.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let first = message.lines().next().unwrap_or_default();
        let at = info.location().map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        icl_lab::warnln!("error: icl-lab panicked{at}: {first} (a bug: please report it with the command line)");
    }));
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain, outermost first.
            icl_lab::warnln!("error: {}", icl_lab::term::one_line(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    icl_probes::learners::serial_blas();
    icl_lab::device::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Reproduce(args) => commands::reproduce::run(args),
        Command::Construct(args) => commands::construct::run(args),
        Command::Curve(args) => commands::curve::run(args),
        Command::Tournament(args) => commands::tournament::run(args),
        Command::ProbeLayers(args) => commands::probe_layers::run(args),
        Command::List => commands::list::run(),
        Command::Prompts(args) => commands::prompts::run(args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Activations(args) => commands::activations::run(args),
        Command::Intervene(args) => commands::intervene::run(args),
        Command::Interventions(args) => commands::interventions::run(args),
        Command::Sweep(args) => commands::sweep::run(args),
        Command::Index(args) => commands::index::run(args),
        Command::Bench(args) => commands::bench::run(args),
    }
}
