//! The `icl-lab` command line.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use icl_lab::config::RunConfig;
use icl_lab::train::{train, TrainOptions};

#[derive(Parser)]
#[command(name = "icl-lab", version, about = "Does attention implement gradient descent? Train, probe and reproduce.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one model: (config, seed) → runs/<name>/seed-<seed>/{config.toml, metrics.json, weights.safetensors}.
    Train {
        /// A TOML run config (tables [task], [model], [train], [eval]; every key optional).
        #[arg(long, conflicts_with = "preset")]
        config: Option<PathBuf>,
        /// A named preset instead of a file: vo2023-fig2, tiny, vo2023-fig4 (sine waves, feature map + LSA) and
        /// vo2023-fig4-mlp-gd (its MLP + 1-step-GD baseline), a figure model (lsa-1, lsa-2-rec, lsa-3-rec,
        /// lsa-5-sep, lsa-10-rec, softmax-1h, softmax-2h, ln-1, ln-2, classic-2, mlp-12-sep-4h), or Garg et al.'s GPT-style model on
        /// their linear regression (garg2022-fig2 = garg2022-standard, garg2022-small, garg2022-tiny), or a point
        /// of Akyürek et al.'s depth × width grid (akyurek2023-L<1,2,4,8,12,16>-H<16,32,…,512>; d = 8, 4 heads).
        #[arg(long)]
        preset: Option<String>,
        /// Override the config's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Train this many seeds (the config's seed and the next ones) together, in one step loop
        /// (fused engine; each run is bit for bit what training it alone gives).
        #[arg(long)]
        seeds: Option<usize>,
        /// Workers for --seeds (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Override the config's device: cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<String>,
        /// Override the number of training steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Folder that holds run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Retrain even if a complete run with this exact config exists.
        #[arg(long)]
        force: bool,
    },
    /// Reproduce a paper figure: train its seeds, probe them, render figures/<name>/*.png|svg and reports/<name>.{md,json}.
    Reproduce {
        /// The figure: vo2023-fig1, -fig2, -fig3, -fig4, -fig5, -fig6, -fig7, -fig8, -fig9, -fig10, -fig11, -fig12, -fig13,
        /// -fig14, -fig15, -fig16, vo2023-all, vo2023-tournament, vo2023-interventions, garg2022-fig2, garg2022-ood,
        /// garg2022-families, garg2022-baselines, akyurek2023-phases, akyurek2023-interventions, akyurek2023-probes,
        /// fu2023-newton, ahn2023 (the README's table says what each shows).
        figure: String,
        /// Shortened training (minutes on a CPU); the report says so. Default: the paper's setting.
        #[arg(long)]
        quick: bool,
        /// Seeds 0..N (curves show the mean and a min–max band); default: the figure's
        /// (1 for vo2023-fig2, 5 where the paper shows 5 seeds).
        #[arg(long)]
        seeds: Option<usize>,
        /// Seeds trained in parallel (one libtorch thread each); default: the number of cores.
        #[arg(long)]
        jobs: Option<usize>,
        /// Retrain runs even if complete ones with the same config exist in --runs.
        #[arg(long)]
        force: bool,
        /// Device for training: cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<String>,
        /// Train for this many steps instead of the setting's (e.g. to fit a device budget); the
        /// report says so. Figures that support it: garg2022-fig2.
        #[arg(long)]
        steps: Option<usize>,
        /// Print the report's JSON instead of its Markdown summary.
        #[arg(long)]
        json: bool,
        /// Folder that holds run directories (runs/<name>/seed-<seed>).
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Folder for the figure's PNG and SVG files (figures/<name>/).
        #[arg(long, default_value = "figures")]
        figures: PathBuf,
        /// Folder for the report (reports/<name>.md and .json).
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
    /// Build the hard-coded GD construction (Proposition 1) into the transformer and check it against GD.
    Construct {
        /// Layers K (K GD steps).
        #[arg(long, default_value_t = 1)]
        layers: usize,
        /// Separate parameter layers (one η each) instead of one shared layer.
        #[arg(long)]
        separate: bool,
        /// Learning rate(s) η, comma-separated (one, or one per layer with --separate);
        /// default: the η tuned for K steps on the evaluation set.
        #[arg(long, value_delimiter = ',')]
        eta: Vec<f64>,
        /// Random prompts to check on.
        #[arg(long, default_value_t = 1000)]
        tasks: usize,
        /// Seed of the random prompts the construction is checked on.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write a run directory (config.toml + weights.safetensors) that `icl-lab probe` reads.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The in-context learning curve: normalised error (zero predictor = 1) against the number of
    /// in-context examples, for a task's reference learners and any trained runs, with 90% bootstrap
    /// intervals. Writes <out>/curve.{json,png,svg} and prints a summary.
    Curve {
        /// Task by registry name (see `icl-lab list`), with its default parameters unless --set.
        #[arg(long, conflicts_with = "config")]
        task: Option<String>,
        /// A task parameter as KEY=VALUE (repeatable), e.g. --set x_dim=5 --set covariance=diagonal.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Take the task from a run config file's [task] table.
        #[arg(long)]
        config: Option<PathBuf>,
        /// `default` (the task's own learners), `none`, or a list such as
        /// "least_squares,gd(steps=2),lasso(alpha=0.1),precond_gd(steps=1, p=[[1,0],[0,2]])", in which
        /// `default` stands for the task's learners; `+list` adds to them. Each spec is its own line.
        #[arg(long, default_value = "default")]
        learners: String,
        /// A trained run directory to put on the curve (repeatable); its task is used when neither
        /// --task nor --config is given.
        #[arg(long = "run", value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Also read every run out after each of its layers.
        #[arg(long)]
        per_layer: bool,
        /// Largest number of in-context examples (default: the task's context length).
        #[arg(long)]
        n_max: Option<usize>,
        /// Step between the numbers of in-context examples evaluated (0, step, 2·step, …).
        #[arg(long, default_value_t = 1)]
        n_step: usize,
        /// Evaluation prompts (Garg et al.: 1,280).
        #[arg(long, default_value_t = 1280)]
        prompts: usize,
        /// Prompts the learners' step sizes, λ and P are tuned on, per n (never the evaluation prompts).
        #[arg(long, default_value_t = 4096)]
        tuning_prompts: usize,
        /// Seed of the evaluation and tuning prompts (their RNG streams).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Evaluate under a distribution shift, KIND=VALUE: input_scale, teacher_scale, label_noise,
        /// condition_number, context_orthant=1 or query_from_context=1, where the task has it
        /// (`icl-lab list`; tuning stays on the training distribution).
        #[arg(long, value_name = "KIND=VALUE")]
        shift: Option<String>,
        /// Output folder (default: curves/<task>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print every row as JSON instead of the summary table.
        #[arg(long)]
        json: bool,
    },
    /// The hypothesis tournament: each model read out after every layer, compared at every n with
    /// every candidate learner (fitted on separate prompts) by SPD, ILWD, model cos and preds diff,
    /// and the candidates ranked per layer, with the untrained model and order sensitivity as
    /// controls. Writes <reports>/<name>.{json,md} and <figures>/<name>/spd.{png,svg}.
    Tournament {
        /// Run directories: a run (…/seed-0) or a folder of seed-* runs of one configuration
        /// (all its seeds). The first one's task is the tournament's.
        #[arg(required_unless_present = "rerender", value_name = "RUN_DIR")]
        run_dirs: Vec<PathBuf>,
        /// Rebuild the Markdown report and the figure from a tournament's JSON (no measuring).
        #[arg(long, value_name = "JSON", conflicts_with = "run_dirs")]
        rerender: Option<PathBuf>,
        /// Runs trained on a control task (e.g. `linear` with fixed_w = true), as contestants of
        /// their own, evaluated on the first run's task (repeatable).
        #[arg(long = "control-task", value_name = "RUN_DIR")]
        control_task: Vec<PathBuf>,
        /// Leave out each model's untrained twin (its seed's initial weights).
        #[arg(long)]
        no_untrained: bool,
        /// Candidates: `default` (the task's learners), a list such as "gd(steps=1),knn(k=1),knn(k=8)"
        /// (each spec is its own candidate; values may be lists), or `+list` to add to the task's.
        /// A candidate with `steps` runs `steps = layer`.
        #[arg(long, default_value = "default")]
        learners: String,
        /// Report name (default: tournament-<first run name>).
        #[arg(long)]
        name: Option<String>,
        /// Numbers of in-context examples, comma-separated (default: 1…N).
        #[arg(long, value_delimiter = ',')]
        n: Vec<usize>,
        /// Evaluation prompts per n.
        #[arg(long, default_value_t = 512)]
        prompts: usize,
        /// Prompts the candidates' hyperparameters are fitted on, per n.
        #[arg(long, default_value_t = 4096)]
        tuning_prompts: usize,
        /// Random context orders for the order-sensitivity control.
        #[arg(long, default_value_t = 8)]
        orders: usize,
        /// Seed of the evaluation, tuning and query prompts and the context orders.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Folder for <name>.json and <name>.md (results/ is ignored by git; the paper reports live in reports/).
        #[arg(long, default_value = "results/reports")]
        reports: PathBuf,
        /// Folder for <name>/spd.{png,svg} (results/ is ignored by git).
        #[arg(long, default_value = "results/figures")]
        figures: PathBuf,
        /// Print the whole report as JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Linear probes of every layer's hidden states (Akyürek et al. 2023 §5): how well the task's
    /// hidden w, Xᵀy, w_OLS and w_ridge can be decoded from the query token and from all tokens,
    /// for each model, its untrained twin and control-task runs. Writes <reports>/<name>.{json,md}
    /// and <figures>/<name>/r2.{png,svg}.
    ProbeLayers {
        /// Run directories: a run or a folder of seed-* runs (all its seeds).
        #[arg(required = true, value_name = "RUN_DIR")]
        run_dirs: Vec<PathBuf>,
        /// Runs trained on a control task, probed on the first run's task (repeatable).
        #[arg(long = "control-task", value_name = "RUN_DIR")]
        control_task: Vec<PathBuf>,
        /// Leave out each model's untrained twin.
        #[arg(long)]
        no_untrained: bool,
        /// Report name (default: probes-<first run name>).
        #[arg(long)]
        name: Option<String>,
        /// Numbers of in-context examples, comma-separated (default: N).
        #[arg(long, value_delimiter = ',')]
        n: Vec<usize>,
        /// Prompts the probes are fitted on.
        #[arg(long, default_value_t = 2048)]
        fit_prompts: usize,
        /// Held-out prompts they are scored on.
        #[arg(long, default_value_t = 1024)]
        test_prompts: usize,
        /// Adam steps of the MLP probe on all tokens (0: linear probes only).
        #[arg(long, default_value_t = 1000)]
        mlp_steps: usize,
        /// Adam steps of the attention-pooling probe (Akyürek et al.'s learned pooling over positions; 0: none).
        #[arg(long, default_value_t = 300)]
        pool_steps: usize,
        /// Seed of the fit, test and tuning prompts and of the probes' initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Folder for <name>.json and <name>.md (results/ is ignored by git).
        #[arg(long, default_value = "results/reports")]
        reports: PathBuf,
        /// Folder for <name>/r2.{png,svg} (results/ is ignored by git).
        #[arg(long, default_value = "results/figures")]
        figures: PathBuf,
    },
    /// List the registered tasks (with their parameters and default learners) and learners.
    List,
    /// Draw prompts of a task and write them, with reference learners' predictions on them, as float64
    /// safetensors (prompt.xs/ys/xq/yq/w, pred.<learner>, sens.<learner>): the Rust side of the Python
    /// module's parity tests, and prompts for any other tool. Prints what it wrote.
    Prompts {
        /// Task by registry name (see `icl-lab list`), with its default parameters unless --set.
        #[arg(long, default_value = "linear")]
        task: String,
        /// A task parameter as KEY=VALUE (repeatable), e.g. --set x_dim=5.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Number of prompts.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Context pairs per prompt (default: the task's context length).
        #[arg(long)]
        n: Option<usize>,
        /// Seed of the prompts.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// RNG stream of the seed (0: the evaluation prompts every command draws; 1: tuning prompts).
        #[arg(long, default_value_t = 0)]
        stream: u64,
        /// Learners to predict the prompts with, as for `curve` (`none`, `default` or a list); open
        /// hyperparameters are tuned on --tuning-prompts prompts of stream 1 of the seed.
        #[arg(long, default_value = "none")]
        learners: String,
        /// Prompts the learners' open hyperparameters are tuned on (stream 1 of --seed, n pairs).
        #[arg(long, default_value_t = 4096)]
        tuning_prompts: usize,
        /// Output file (.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Probe a run directory: loss, alignment with GD, per-layer readouts, weight products, untrained control.
    /// Prints a summary (--json: everything) and writes <run-dir>/probe.json.
    Probe {
        /// A run directory (config.toml + weights.safetensors).
        run_dir: PathBuf,
        /// Print the whole report as JSON (with the weight products) instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Export a run's activations on fresh prompts as safetensors (every hook name of the activation cache,
    /// the prompts as prompt.xs/ys/xq/yq, and the prediction), for Python: see examples/lsa_numpy.py.
    Activations {
        /// A run directory (config.toml + weights.safetensors).
        run_dir: PathBuf,
        /// Prompts drawn from the run's task.
        #[arg(long, default_value_t = 16)]
        prompts: usize,
        /// Seed of the prompts.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file [default: <run-dir>/activations.safetensors].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Change a run's activations at named hooks and measure what follows: prints the loss change and writes
    /// every hook's intervened activation (hook names as keys), the prompts, `prediction` and `clean.prediction`
    /// as safetensors. Give --hook with its --op once per intervention (several apply in one forward, in order).
    Intervene {
        /// A run directory (config.toml + weights.safetensors).
        run_dir: PathBuf,
        /// Hook name, e.g. layers.0.resid_post, layers.1.attn.out, layers.0.attn.pattern, layers.0.mlp.out, tokens
        /// (an unknown name lists the model's). Repeat for several interventions.
        #[arg(long, required = true)]
        hook: Vec<String>,
        /// What to do there, one per --hook: zero; mean (over a reference batch); resample (from another batch of
        /// the same size, same positions); replace=FILE, add=FILE (a safetensors tensor of the hook's shape or one
        /// that broadcasts to it, named after the hook or the file's only entry); project-onto=FILE, project-out=FILE
        /// (a basis (D, k) of the channel space).
        #[arg(long, required = true)]
        op: Vec<String>,
        /// Token positions: all, context, query, or 0-based positions like 0,3,5 or 2..5. Once for all
        /// interventions or once per --hook.
        #[arg(long)]
        tokens: Vec<String>,
        /// Channels (the last axis): all, x or y (von Oswald et al.'s token layout), or numbers like 0,3 or 0..10.
        /// Once for all interventions or once per --hook.
        #[arg(long)]
        channels: Vec<String>,
        /// Prompts drawn from the run's task.
        #[arg(long, default_value_t = 256)]
        prompts: usize,
        /// Seed of the prompts (and of the resample and mean batches).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file [default: <run-dir>/intervened.safetensors].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The four intervention protocols (P1 layer knockout, P2 iterate interchange, P3 activation
    /// patching, P4 influence profiles) for each model, its untrained twin and control-task runs, against
    /// every candidate learner (fitted on separate prompts) and beside the output comparison the tournament
    /// makes. Writes <reports>/<name>.{json,md} and <figures>/<name>/{p3,p4}.{png,svg}.
    Interventions {
        /// Run directories: a run (…/seed-0) or a folder of seed-* runs of one configuration (all its
        /// seeds). The first one's task is the protocols'.
        #[arg(required_unless_present = "rerender", value_name = "RUN_DIR")]
        run_dirs: Vec<PathBuf>,
        /// Rebuild the Markdown report and the figures from an interventions JSON (no measuring).
        #[arg(long, value_name = "JSON", conflicts_with = "run_dirs")]
        rerender: Option<PathBuf>,
        /// Runs trained on a control task (e.g. `linear` with fixed_w = true), evaluated on the first
        /// run's task (repeatable).
        #[arg(long = "control-task", value_name = "RUN_DIR")]
        control_task: Vec<PathBuf>,
        /// Leave out each model's untrained twin (its seed's initial weights).
        #[arg(long)]
        no_untrained: bool,
        /// Candidates: `default` (the task's learners), a list such as "gd(steps=1),ridge", or `+list` to
        /// add to the task's. A candidate with `steps` runs `steps = layer`; P1 and P2 use the GD and GD++
        /// candidates, P4 every candidate linear in y.
        #[arg(long, default_value = "+gd++(steps=1),newton(steps=1)")]
        learners: String,
        /// Report name (default: interventions-<first run name>).
        #[arg(long)]
        name: Option<String>,
        /// Numbers of in-context examples, comma-separated (default: N; P3 runs at the largest).
        #[arg(long, value_delimiter = ',')]
        n: Vec<usize>,
        /// Evaluation prompts per n (P2's source prompts and P3's corruptions are as many).
        #[arg(long, default_value_t = 256)]
        prompts: usize,
        /// Prompts the candidates' hyperparameters are fitted on, per n.
        #[arg(long, default_value_t = 1024)]
        tuning_prompts: usize,
        /// Bootstrap resamples of each row's 90% interval.
        #[arg(long, default_value_t = 1000)]
        resamples: usize,
        /// Seed of the evaluation, source and tuning prompts.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Folder for <name>.json and <name>.md (results/ is ignored by git; the paper reports live in reports/).
        #[arg(long, default_value = "results/reports")]
        reports: PathBuf,
        /// Folder for <name>/{p3,p4}.{png,svg} (results/ is ignored by git).
        #[arg(long, default_value = "results/figures")]
        figures: PathBuf,
        /// Print the whole report as JSON instead of the findings.
        #[arg(long)]
        json: bool,
    },
    /// Sweeps: a grid of config overrides × seeds as run directories, run here or as a Slurm array job.
    Sweep {
        #[command(subcommand)]
        action: SweepAction,
    },
    /// Rebuild reports/vo2023.md, the index of the figure reports present (after running figures one at a time).
    Index {
        /// Folder of the figure reports to index.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
    /// Time training steps (ms/step, data generation included) for the 1-, 2- and 3-layer recurrent models and the 5-separate-layer model.
    Bench {
        /// Device to time on: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Timed steps per configuration.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// Thread counts to compare (libtorch's intra-op threads; the fused engine's workers).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Engines to compare: fused, libtorch.
        #[arg(long, value_delimiter = ',', default_value = "fused,libtorch")]
        engines: Vec<String>,
        /// A Python with PyTorch and JAX: also run the plain baselines (lsa_bench.py, unedited) at
        /// every depth and print our speed-up over the faster one (see scripts/bench-baselines.sh).
        #[arg(long)]
        baseline_python: Option<PathBuf>,
        /// The baseline script run by --baseline-python (unedited, from ../shared/bench).
        #[arg(long, default_value = "../shared/bench/lsa_bench.py")]
        baseline_script: PathBuf,
        /// Timed steps of each baseline run.
        #[arg(long, default_value_t = 200)]
        baseline_steps: usize,
        /// Also time this many seeds of the 1-layer model trained together against one seed (0: skip).
        #[arg(long, default_value_t = 5)]
        together: usize,
        /// Also time this many steps of the 5-layer GD++ reference fit, eigenbasis vs autograd (0: skip).
        #[arg(long, default_value_t = 100)]
        fit_steps: usize,
        /// Print the measurements as JSON at the end.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SweepAction {
    /// List the runs a sweep file expands to and how many are complete; trains nothing.
    Plan {
        /// The sweep file (TOML: name, preset or config, seeds, [grid] of dotted keys → values).
        sweep: PathBuf,
        /// Folder that holds run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Train every run of the sweep on this machine (complete runs are reused).
    Run {
        /// The sweep file (TOML: name, preset or config, seeds, [grid] of dotted keys → values).
        sweep: PathBuf,
        /// Folder that holds run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Parallel training jobs (one run and one libtorch thread per worker).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Write a Slurm array job: one resolved config per (config, seed) and sweep.sbatch; submit it with sbatch.
    Slurm {
        /// The sweep file (TOML: name, preset or config, seeds, [grid] of dotted keys → values).
        sweep: PathBuf,
        /// Where the runs go (shared by the cluster's nodes).
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Directory for the configs, the job script and the logs [default: sweeps/<name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wall-time limit per array task.
        #[arg(long, default_value = "01:00:00")]
        time: String,
        /// CPU cores per array task (--cpus-per-task).
        #[arg(long, default_value_t = 1)]
        cpus: usize,
        /// Memory per array task, as Slurm writes it (e.g. 2G, 500M).
        #[arg(long, default_value = "2G")]
        mem: String,
        /// Slurm partition(s), comma-separated (none: the cluster's default).
        #[arg(long)]
        partition: Option<String>,
        /// At most this many array tasks running at once.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Read the finished runs (refusing an incomplete sweep) and write reports/<name>.{md,json} and a figure.
    Collect {
        /// The sweep file whose runs to collect.
        sweep: PathBuf,
        /// Folder that holds run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Folder for <name>.json and <name>.md (results/ is ignored by git).
        #[arg(long, default_value = "results/reports")]
        reports: PathBuf,
        /// Folder for <name>/final-loss.{png,svg} (results/ is ignored by git).
        #[arg(long, default_value = "results/figures")]
        figures: PathBuf,
        /// Print the report as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// The one line that ends a command which wrote files.
fn print_written(files: &[PathBuf]) {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    icl_lab::outln!("wrote {}", names.join(", "));
}

/// `--n`: numbers of in-context examples, each in 1..=the task's context length, each once.
fn checked_n_values(n: Vec<usize>, context_len: usize) -> anyhow::Result<Vec<usize>> {
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
fn checked_jobs(jobs: Option<usize>) -> anyhow::Result<Option<usize>> {
    if let Some(j) = jobs {
        anyhow::ensure!((1..=256).contains(&j), "--jobs: must be in 1..=256 (got {j})");
    }
    Ok(jobs)
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Train { config, preset, seed, seeds, jobs, device, steps, runs, force } => {
            anyhow::ensure!(seeds != Some(0), "--seeds: must be at least 1 (got 0)");
            let jobs = checked_jobs(jobs)?;
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
                let bars = icl_lab::progress::multi();
                let bars: Vec<_> = configs.iter().map(|c| bars.add(icl_lab::train::run_progress_bar(c))).collect();
                let workers = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                let outs = icl_lab::train::train_together(
                    &configs,
                    &runs,
                    TrainOptions { force, ..Default::default() },
                    workers,
                    &bars,
                );
                let mut failed = 0;
                for (c, out) in configs.iter().zip(outs) {
                    match out {
                        Ok(out) => {
                            let last = out.metrics.rows.last().context("no evaluation rows")?;
                            icl_lab::outln!(
                                "seed {}: final loss {:.6}  {}{}",
                                c.seed,
                                last.loss,
                                out.dir.display(),
                                if out.reused { " (reused)" } else { "" }
                            );
                        }
                        Err(e) => {
                            failed += 1;
                            icl_lab::warnln!("seed {}: {e:#}", c.seed);
                        }
                    }
                }
                anyhow::ensure!(failed == 0, "{failed} of {n} seeds failed");
                return Ok(());
            }
            let out = train(&cfg, &runs, TrainOptions { force, ..Default::default() })?;
            let last = out.metrics.rows.last().context("no evaluation rows")?;
            icl_lab::outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "run_dir": out.dir, "reused": out.reused, "final": last, "references": out.metrics.references,
                }))?
            );
        }
        Command::Reproduce { figure, quick, seeds, jobs, force, device, steps, json, runs, figures, reports } => {
            anyhow::ensure!(seeds != Some(0), "--seeds: must be at least 1 (got 0)");
            let jobs = checked_jobs(jobs)?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let opts = icl_lab::figures::FigureOptions {
                seeds,
                quick,
                jobs: jobs.unwrap_or(cores),
                force,
                device,
                steps,
                runs_root: runs,
                figures_root: figures,
                reports_root: reports,
            };
            let summary = icl_lab::figures::reproduce(&figure, &opts)?;
            let markdown = opts.reports_root.join(format!("{figure}.md"));
            if json {
                // The report's JSON, as written to reports/<figure>.json.
                icl_lab::outln!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                // The report is written for people: print it, then where everything is.
                if let Ok(text) = std::fs::read_to_string(&markdown) {
                    icl_lab::outln!("{}", text.trim_end());
                }
                icl_lab::outln!(
                    "\nwrote {} and {} (full rows: --json or the JSON file)",
                    markdown.display(),
                    opts.reports_root.join(format!("{figure}.json")).display()
                );
            }
        }
        Command::Construct { layers, separate, eta, tasks, seed, out } => {
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
                let p = icl_lab::evaluate::sample_prompts(&cfg.task, cfg.eval.tasks, cfg.eval.seed)?;
                let stats = icl_probes::gd::LeastSquaresStats::new(&p);
                vec![icl_lab::evaluate::tune_gd(&cfg, &p, &stats).eta; cfg.model.param_layers()]
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
            icl_lab::construct::memory(&cfg, tasks).check()?;
            let check = icl_lab::construct::check_construction(&cfg, &etas, tasks, seed)?;
            if let Some(dir) = out {
                let (vs, _) = icl_lab::construct::gd_model(&cfg, &etas, tch::Kind::Float, tch::Device::Cpu)?;
                icl_lab::construct::write_run(&dir, &cfg, &vs)?;
            }
            icl_lab::outln!("{}", serde_json::to_string_pretty(&check)?);
        }
        Command::Activations { run_dir, prompts, seed, out } => {
            let (out, written) = icl_lab::export::export_activations(&run_dir, prompts, seed, out.as_deref())?;
            for (name, shape) in &written {
                icl_lab::outln!("{name:<28} {shape:?}");
            }
            print_written(&[out]);
        }
        Command::Interventions {
            run_dirs,
            rerender,
            control_task,
            no_untrained,
            learners,
            name,
            n,
            prompts,
            tuning_prompts,
            resamples,
            seed,
            reports,
            figures,
            json,
        } => {
            if let Some(path) = rerender {
                let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let report: icl_lab::protocols::InterventionsReport = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not an interventions report", path.display()))?;
                let files = icl_lab::protocols::write(&report, &reports, &figures)?;
                print_written(&files);
                return Ok(());
            }
            icl_lab::learners::register();
            let (entrants, config) = icl_lab::tournament::load_entrants(&run_dirs, &control_task, no_untrained)?;
            let task = config.task();
            let defaults = icl_lab::tournament::default_candidates(&entrants);
            let candidates = icl_lab::curve::resolve_learners(&learners, &defaults)?;
            let mut opts = icl_lab::protocols::ProtocolOptions::for_task(task.as_ref());
            if !n.is_empty() {
                opts.n_values = checked_n_values(n, task.dims().context_len)?;
            }
            opts.prompts = prompts;
            opts.tuning_prompts = tuning_prompts;
            opts.resamples = resamples;
            opts.seed = seed;
            let name = name.unwrap_or_else(|| format!("interventions-{}", config.name));
            icl_lab::tournament::check_report_name(&name)?;
            let bar = icl_lab::progress::spinner("interventions");
            let report = icl_lab::protocols::run(&name, task.as_ref(), &entrants, &candidates, &opts, &|what| {
                bar.set_message(what.to_string());
                bar.tick();
            })?;
            bar.finish_and_clear();
            let command: Vec<String> = std::env::args().collect();
            let report = icl_lab::protocols::InterventionsReport {
                command: format!("icl-lab {}", command[1..].join(" ")),
                ..report
            };
            let files = icl_lab::protocols::write(&report, &reports, &figures)?;
            if json {
                icl_lab::outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for f in report.findings() {
                    icl_lab::outln!("- {f}");
                }
                for s in &report.skipped {
                    icl_lab::outln!("left out: {s}");
                }
                print_written(&files);
            }
        }
        Command::Intervene { run_dir, hook, op, tokens, channels, prompts, seed, out, json } => {
            let per_hook = |values: Vec<String>, what: &str| -> anyhow::Result<Vec<String>> {
                match values.len() {
                    0 => Ok(vec!["all".to_string(); hook.len()]),
                    1 => Ok(vec![values[0].clone(); hook.len()]),
                    k if k == hook.len() => Ok(values),
                    k => anyhow::bail!("--{what}: give it once or once per --hook ({} hooks, {k} values)", hook.len()),
                }
            };
            anyhow::ensure!(
                op.len() == hook.len(),
                "--op: give one per --hook ({} hooks, {} ops)",
                hook.len(),
                op.len()
            );
            let (tokens, channels) = (per_hook(tokens, "tokens")?, per_hook(channels, "channels")?);
            let args: Vec<icl_lab::interventions::InterventionArgs> = (0..hook.len())
                .map(|i| icl_lab::interventions::InterventionArgs {
                    hook: hook[i].clone(),
                    op: op[i].clone(),
                    tokens: tokens[i].clone(),
                    channels: channels[i].clone(),
                })
                .collect();
            let summary = icl_lab::interventions::run_intervene(&run_dir, &args, prompts, seed, out.as_deref())?;
            if json {
                icl_lab::outln!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                icl_lab::outln!("{}", summary.summary());
                print_written(std::slice::from_ref(&summary.file));
            }
        }
        Command::Sweep { action } => match action {
            SweepAction::Plan { sweep, runs } => {
                let sweep = icl_lab::sweep::Sweep::load(&sweep)?;
                icl_lab::out!("{}", icl_lab::sweep::plan(&sweep, &runs));
            }
            SweepAction::Run { sweep, runs, jobs } => {
                checked_jobs(Some(jobs))?;
                let sweep = icl_lab::sweep::Sweep::load(&sweep)?;
                let (total, reused) = icl_lab::sweep::run_local(&sweep, &runs, jobs)?;
                icl_lab::outln!(
                    "sweep `{}`: {total} runs complete ({reused} reused) under {}",
                    sweep.name,
                    runs.display()
                );
            }
            SweepAction::Slurm { sweep, runs, out, time, cpus, mem, partition, limit } => {
                let opts = icl_lab::sweep::SlurmOptions { time, cpus, mem, partition, limit };
                opts.check()?;
                let sweep = icl_lab::sweep::Sweep::load(&sweep)?;
                let out = out.unwrap_or_else(|| PathBuf::from("sweeps").join(&sweep.name));
                let script = icl_lab::sweep::write_slurm(&sweep, &runs, &out, &opts)?;
                icl_lab::outln!(
                    "sweep `{}`: {} array tasks; submit with: sbatch {}",
                    sweep.name,
                    sweep.runs().len(),
                    script.display()
                );
            }
            SweepAction::Collect { sweep, runs, reports, figures, json } => {
                let sweep = icl_lab::sweep::Sweep::load(&sweep)?;
                let rows = icl_lab::sweep::collect(&sweep, &runs)?;
                let report = icl_lab::sweep::write_report(&sweep, rows, &reports, &figures)?;
                if json {
                    icl_lab::outln!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    icl_lab::out!("{}", icl_lab::sweep::markdown(&report));
                    icl_lab::outln!("wrote {}", reports.join(format!("{}.md", sweep.name)).display());
                }
            }
        },
        Command::Probe { run_dir, json } => {
            let run = icl_lab::runs::open_run(&run_dir)?;
            let cfg = run.config.clone();
            let (vs, model) = icl_lab::runs::load_model(&run_dir, &cfg, tch::Device::Cpu)?;
            let report = icl_lab::probe::probe_model(&cfg, &vs, &model, None)?;
            icl_lab::runs::write_derived(&run, icl_lab::runs::PROBE_FILE, |p| {
                Ok(std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")?)
            })?;
            if json {
                icl_lab::outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                icl_lab::outln!("{}", report.summary(&cfg));
                icl_lab::outln!(
                    "wrote {} (everything, with the weight products)",
                    run_dir.join(icl_lab::runs::PROBE_FILE).display()
                );
            }
        }
        Command::Curve {
            task,
            set,
            config,
            learners,
            runs,
            per_layer,
            n_max,
            n_step,
            prompts,
            tuning_prompts,
            seed,
            shift,
            out,
            json,
        } => {
            icl_lab::learners::register();
            let runs: Vec<icl_lab::curve::RunOnCurve> =
                runs.iter().map(|d| icl_lab::curve::RunOnCurve::load(d)).collect::<anyhow::Result<_>>()?;
            let mut task_config = match (task, config) {
                (Some(name), _) => icl_tasks::TaskConfig::new(&name),
                (None, Some(path)) => RunConfig::from_file(&path)?.task,
                (None, None) => match runs.first() {
                    Some(r) => r.config.task.clone(),
                    None => anyhow::bail!("give --task <name>, --config <run.toml> or --run <run-dir>"),
                },
            };
            for kv in &set {
                let (k, v) = kv.split_once('=').with_context(|| format!("--set: `{kv}` is not KEY=VALUE"))?;
                task_config
                    .set(k.trim(), icl_lab::curve::parse_value(v.trim()).with_context(|| format!("--set {kv}"))?);
            }
            let task = icl_tasks::build(&task_config)?;
            // A run trained on a pool of tasks (on this task) brings the learners of its pool
            // (the posterior mean over it, `dmmse`), one per run.
            let mut defaults = task.learners();
            for r in runs.iter().filter(|r| r.config.task == task_config) {
                for spec in r.config.training_task().learners() {
                    if !defaults.contains(&spec) {
                        defaults.push(spec);
                    }
                }
            }
            let learners = icl_lab::curve::resolve_learners(&learners, &defaults)?;
            let shift = shift
                .map(|s| -> anyhow::Result<icl_tasks::Shift> {
                    let (k, v) = s.split_once('=').with_context(|| format!("--shift: `{s}` is not KIND=VALUE"))?;
                    let kind = icl_tasks::ShiftKind::from_name(k.trim()).with_context(|| {
                        let known: Vec<&str> = icl_tasks::ShiftKind::ALL.iter().map(|k| k.name()).collect();
                        format!("--shift: unknown kind `{k}` (known: {})", known.join(", "))
                    })?;
                    let value: f64 = v.trim().parse().map_err(|_| anyhow::anyhow!("--shift: `{v}` is not a number"))?;
                    anyhow::ensure!(value.is_finite(), "--shift: `{v}` is not a finite number");
                    task.shifted(icl_tasks::Shift { kind, value }).context("--shift")?;
                    Ok(icl_tasks::Shift { kind, value })
                })
                .transpose()?;
            let n_max = n_max.unwrap_or(task.dims().context_len);
            anyhow::ensure!(n_step >= 1, "--n-step: must be at least 1");
            anyhow::ensure!((1..=1_000_000).contains(&prompts), "--prompts: must be in 1..=1000000 (got {prompts})");
            anyhow::ensure!(
                (1..=1_000_000).contains(&tuning_prompts),
                "--tuning-prompts: must be in 1..=1000000 (got {tuning_prompts})"
            );
            anyhow::ensure!(
                n_max <= icl_tasks::MAX_CONTEXT,
                "--n-max: must be at most {} (got {n_max})",
                icl_tasks::MAX_CONTEXT
            );
            let opts = icl_probes::curve::CurveOptions {
                prompts,
                tuning_prompts,
                n_values: (0..=n_max).step_by(n_step).collect(),
                seed,
                shift,
                ..Default::default()
            };
            icl_lab::curve::memory(task.as_ref(), &runs, &opts).check()?;
            let rows = icl_lab::curve::measure(task.as_ref(), &learners, &runs, per_layer, &opts)?;
            let out = out.unwrap_or_else(|| PathBuf::from("curves").join(task.name()));
            let file = icl_lab::curve::CurveFile {
                task: task.config(),
                prompts,
                tuning_prompts,
                seed,
                shift,
                runs: runs.iter().map(|r| r.dir.display().to_string()).collect(),
                measurements: rows,
            };
            let title = format!("{}: in-context learning curve", task.name());
            let files = icl_lab::curve::write(&out, &file, &title)?;
            if json {
                icl_lab::outln!("{}", serde_json::to_string_pretty(&file.measurements)?);
            } else {
                icl_lab::outln!("{} — normalised error (zero predictor = 1), mean over {prompts} prompts", task.name());
                icl_lab::out!("{}", icl_lab::curve::summary(&file.measurements, 6));
                print_written(&files);
            }
        }
        Command::Tournament {
            run_dirs,
            rerender,
            control_task,
            no_untrained,
            learners,
            name,
            n,
            prompts,
            tuning_prompts,
            orders,
            seed,
            reports,
            figures,
            json,
        } => {
            if let Some(path) = rerender {
                let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let mut report: icl_lab::tournament::TournamentReport = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not a tournament report", path.display()))?;
                report.rerank()?;
                let files = icl_lab::tournament::write(&report, &reports, &figures)?;
                print_written(&files);
                return Ok(());
            }
            icl_lab::learners::register();
            let (entrants, config) = icl_lab::tournament::load_entrants(&run_dirs, &control_task, no_untrained)?;
            let task = config.task();
            let defaults = icl_lab::tournament::default_candidates(&entrants);
            let candidates = icl_lab::curve::resolve_learners(&learners, &defaults)?;
            let mut opts = icl_lab::tournament::TournamentOptions::for_task(task.as_ref());
            if !n.is_empty() {
                opts.n_values = checked_n_values(n, task.dims().context_len)?;
            }
            anyhow::ensure!((1..=100_000).contains(&prompts), "--prompts: must be in 1..=100000 (got {prompts})");
            anyhow::ensure!(
                (1..=1_000_000).contains(&tuning_prompts),
                "--tuning-prompts: must be in 1..=1000000 (got {tuning_prompts})"
            );
            anyhow::ensure!((1..=1000).contains(&orders), "--orders: must be in 1..=1000 (got {orders})");
            opts.prompts = prompts;
            opts.tuning_prompts = tuning_prompts;
            opts.orders = orders;
            opts.seed = seed;
            let name = name.unwrap_or_else(|| format!("tournament-{}", config.name));
            icl_lab::tournament::check_report_name(&name)?;
            let bar = icl_lab::progress::spinner("tournament");
            let report = icl_lab::tournament::run(&name, task.as_ref(), &entrants, &candidates, &opts, &|what| {
                bar.set_message(what.to_string());
                bar.tick();
            })?;
            bar.finish_and_clear();
            let command: Vec<String> = std::env::args().collect();
            let report = icl_lab::tournament::TournamentReport {
                command: format!("icl-lab {}", command[1..].join(" ")),
                ..report
            };
            let files = icl_lab::tournament::write(&report, &reports, &figures)?;
            if json {
                icl_lab::outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                icl_lab::out!("{}", report.table());
                for s in &report.skipped {
                    icl_lab::outln!("not fitted: {s}");
                }
                print_written(&files);
            }
        }
        Command::ProbeLayers {
            run_dirs,
            control_task,
            no_untrained,
            name,
            n,
            fit_prompts,
            test_prompts,
            mlp_steps,
            pool_steps,
            seed,
            reports,
            figures,
        } => {
            let (entrants, config) = icl_lab::tournament::load_entrants(&run_dirs, &control_task, no_untrained)?;
            let task = config.task();
            let mut opts = icl_lab::layer_probes::LayerProbeOptions::for_task(task.as_ref());
            if !n.is_empty() {
                opts.n_values = checked_n_values(n, task.dims().context_len)?;
            }
            anyhow::ensure!(
                (20..=100_000).contains(&fit_prompts),
                "--fit-prompts: must be in 20..=100000 (got {fit_prompts})"
            );
            anyhow::ensure!(
                (10..=100_000).contains(&test_prompts),
                "--test-prompts: must be in 10..=100000 (got {test_prompts})"
            );
            anyhow::ensure!(mlp_steps <= 1_000_000, "--mlp-steps: must be at most 1000000 (got {mlp_steps})");
            opts.fit_prompts = fit_prompts;
            opts.test_prompts = test_prompts;
            opts.mlp_steps = mlp_steps;
            anyhow::ensure!(pool_steps <= 1_000_000, "--pool-steps: must be at most 1000000 (got {pool_steps})");
            opts.pool_steps = pool_steps;
            opts.seed = seed;
            let name = name.unwrap_or_else(|| format!("probes-{}", config.name));
            icl_lab::tournament::check_report_name(&name)?;
            let bar = icl_lab::progress::spinner("probes");
            let report = icl_lab::layer_probes::run(&name, task.as_ref(), &entrants, &opts, &|what| {
                bar.set_message(what.to_string());
                bar.tick();
            })?;
            bar.finish_and_clear();
            let command: Vec<String> = std::env::args().collect();
            let files = icl_lab::layer_probes::write(
                &report,
                &reports,
                &figures,
                &format!("icl-lab {}", command[1..].join(" ")),
                "",
            )?;
            let probe = if mlp_steps > 0 { "mlp_probe" } else { "linear_probe" };
            icl_lab::outln!(
                "held-out R² of the {probe} from all tokens at n = {} (mean over seeds):",
                opts.n_values.iter().max().unwrap_or(&0)
            );
            for e in &report.entrants {
                for layer in 0..=e.layers {
                    let cells: Vec<String> = icl_probes::activation_probe::TARGETS
                        .iter()
                        .map(|t| format!("{t} {:.3}", report.value(&e.model, layer, probe, t, "all_tokens", "r2").0))
                        .collect();
                    icl_lab::outln!("  {:<40} layer {layer}: {}", e.model, cells.join(", "));
                }
            }
            print_written(&files);
        }
        Command::Prompts { task, set, batch, n, seed, stream, learners, tuning_prompts, out } => {
            let mut task_config = icl_tasks::TaskConfig::new(&task);
            for kv in &set {
                let (k, v) = kv.split_once('=').with_context(|| format!("--set: `{kv}` is not KEY=VALUE"))?;
                task_config
                    .set(k.trim(), icl_lab::curve::parse_value(v.trim()).with_context(|| format!("--set {kv}"))?);
            }
            let task = icl_tasks::build(&task_config)?;
            let learners = icl_lab::curve::resolve_learners(&learners, &task.learners())?;
            let opts = icl_lab::export::PromptExport { batch, n, seed, stream, tuning_prompts };
            let written = icl_lab::export::export_prompts(task.as_ref(), &learners, &opts, &out)?;
            for (name, shape) in &written {
                icl_lab::outln!("{name:<28} {shape:?}");
            }
            print_written(&[out]);
        }
        Command::List => {
            icl_lab::learners::register();
            icl_lab::outln!("tasks ([task] name = …; keys with their defaults):");
            for entry in icl_tasks::registry::entries() {
                let task = icl_tasks::build(&icl_tasks::TaskConfig::new(entry.name))?;
                let keys: Vec<String> = task.params().iter().map(|(k, v)| format!("{k} = {v}")).collect();
                let learners: Vec<String> = task.learners().iter().map(|l| l.label()).collect();
                icl_lab::outln!("  {:<16} {}", entry.name, entry.about);
                icl_lab::outln!("  {:<16} keys: {}", "", keys.join(", "));
                icl_lab::outln!("  {:<16} learners: {}", "", learners.join(", "));
                let shifts: Vec<&str> = task.shifts().iter().map(|s| s.kind.name()).collect();
                icl_lab::outln!("  {:<16} shifts (curve --shift): {}", "", shifts.join(", "));
            }
            icl_lab::outln!("learners:");
            for f in icl_probes::learner::families() {
                icl_lab::outln!("  {:<16} {}", f.name(), f.about());
            }
        }
        Command::Index { reports } => {
            let index = icl_lab::figures::vo2023_all::write_index(&reports)?;
            icl_lab::outln!("{}", serde_json::to_string_pretty(&index)?);
        }
        Command::Bench {
            device,
            steps,
            threads,
            engines,
            baseline_python,
            baseline_script,
            baseline_steps,
            together,
            fit_steps,
            json,
        } => {
            let engines = engines
                .iter()
                .map(|e| match e.as_str() {
                    "fused" => Ok(icl_lab::config::Engine::Fused),
                    "libtorch" => Ok(icl_lab::config::Engine::Libtorch),
                    other => anyhow::bail!("--engines: unknown engine `{other}` (known: fused, libtorch)"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(python) = &baseline_python {
                anyhow::ensure!(
                    baseline_script.is_file(),
                    "--baseline-script: {} is not a file",
                    baseline_script.display()
                );
                anyhow::ensure!(python.exists(), "--baseline-python: {} does not exist", python.display());
            }
            let opts = icl_lab::bench::BenchOptions {
                device,
                steps,
                engines,
                threads,
                baselines: baseline_python.map(|p| (p, baseline_script)),
                baseline_steps,
                together,
                fit_steps,
            };
            let report = icl_lab::bench::run(&opts, |line| icl_lab::outln!("{line}"))?;
            let ratios = report.ratios();
            if !ratios.is_empty() {
                icl_lab::outln!("\nspeed-up over the faster baseline (our fastest line | theirs):");
                for (depth, ours, theirs, ratio) in ratios {
                    icl_lab::outln!("  {depth:<12} {ratio:>5.1}×   ({ours:.2} ms | {theirs:.2} ms)");
                }
            }
            if json {
                icl_lab::outln!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
    }
    Ok(())
}
