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
        /// -fig14, -fig15, -fig16, vo2023-all, vo2023-tournament, garg2022-fig2, garg2022-ood, garg2022-families,
        /// garg2022-baselines, akyurek2023-phases, akyurek2023-probes, fu2023-newton, ahn2023 (the README's
        /// table says what each shows).
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
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        #[arg(long, default_value = "figures")]
        figures: PathBuf,
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
        /// "least_squares,gd(steps=2),lasso(alpha=0.1),tree(max_depth=none)".
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
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Evaluate under a distribution shift, KIND=VALUE: input_scale, teacher_scale, label_noise
        /// or condition_number (tuning stays on the training distribution).
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
        /// Candidates: `default` (the task's learners), a list such as "gd(steps=1),ridge", or
        /// `+list` to add to the task's. A candidate with `steps` runs `steps = layer`.
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
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        #[arg(long, default_value = "figures")]
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
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        #[arg(long, default_value = "figures")]
        figures: PathBuf,
    },
    /// List the registered tasks (with their parameters and default learners) and learners.
    List,
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
    /// Sweeps: a grid of config overrides × seeds as run directories, run here or as a Slurm array job.
    Sweep {
        #[command(subcommand)]
        action: SweepAction,
    },
    /// Rebuild reports/vo2023.md, the index of the figure reports present (after running figures one at a time).
    Index {
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
    /// Time training steps (ms/step, data generation included) for the 1-, 2- and 3-layer recurrent models and the 5-separate-layer model.
    Bench {
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
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Train every run of the sweep on this machine (complete runs are reused).
    Run {
        sweep: PathBuf,
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Parallel training jobs (one run and one libtorch thread per worker).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Write a Slurm array job: one resolved config per (config, seed) and sweep.sbatch; submit it with sbatch.
    Slurm {
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
        #[arg(long, default_value_t = 1)]
        cpus: usize,
        #[arg(long, default_value = "2G")]
        mem: String,
        #[arg(long)]
        partition: Option<String>,
        /// At most this many array tasks running at once.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Read the finished runs (refusing an incomplete sweep) and write reports/<name>.{md,json} and a figure.
    Collect {
        sweep: PathBuf,
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        #[arg(long, default_value = "figures")]
        figures: PathBuf,
        /// Print the report as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// The one line that ends a command which wrote files.
fn print_written(files: &[PathBuf]) {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
}

/// `--n`: numbers of in-context examples, each in 1..=MAX_CONTEXT.
fn checked_n_values(n: Vec<usize>) -> anyhow::Result<Vec<usize>> {
    anyhow::ensure!(
        n.iter().all(|&k| (1..=icl_tasks::MAX_CONTEXT).contains(&k)),
        "--n: every value must be in 1..={}",
        icl_tasks::MAX_CONTEXT
    );
    Ok(n)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain, outermost first.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    icl_probes::learners::serial_blas();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Train { config, preset, seed, seeds, jobs, device, steps, runs, force } => {
            anyhow::ensure!(seeds != Some(0), "--seeds: must be at least 1 (got 0)");
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
                            println!(
                                "seed {}: final loss {:.6}  {}{}",
                                c.seed,
                                last.loss,
                                out.dir.display(),
                                if out.reused { " (reused)" } else { "" }
                            );
                        }
                        Err(e) => {
                            failed += 1;
                            eprintln!("seed {}: {e:#}", c.seed);
                        }
                    }
                }
                anyhow::ensure!(failed == 0, "{failed} of {n} seeds failed");
                return Ok(());
            }
            let out = train(&cfg, &runs, TrainOptions { force, ..Default::default() })?;
            let last = out.metrics.rows.last().context("no evaluation rows")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "run_dir": out.dir, "reused": out.reused, "final": last, "references": out.metrics.references,
                }))?
            );
        }
        Command::Reproduce { figure, quick, seeds, jobs, force, device, steps, json, runs, figures, reports } => {
            anyhow::ensure!(seeds != Some(0), "--seeds: must be at least 1 (got 0)");
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
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                // The report is written for people: print it, then where everything is.
                if let Ok(text) = std::fs::read_to_string(&markdown) {
                    println!("{}", text.trim_end());
                }
                println!(
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
            let cfg = cfg.resolve()?;
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
            let check = icl_lab::construct::check_construction(&cfg, &etas, tasks, seed)?;
            if let Some(dir) = out {
                let (vs, _) = icl_lab::construct::gd_model(&cfg, &etas, tch::Kind::Float, tch::Device::Cpu)?;
                icl_lab::io::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
                icl_lab::io::with_atomic_path(&dir.join("weights.safetensors"), |p| Ok(vs.save(p)?))?;
            }
            println!("{}", serde_json::to_string_pretty(&check)?);
        }
        Command::Activations { run_dir, prompts, seed, out } => {
            let out = out.unwrap_or_else(|| icl_lab::export::default_path(&run_dir));
            let written = icl_lab::export::export_activations(&run_dir, prompts, seed, &out)?;
            for (name, shape) in &written {
                println!("{name:<28} {shape:?}");
            }
            print_written(&[out]);
        }
        Command::Sweep { action } => match action {
            SweepAction::Plan { sweep, runs } => {
                let sweep = icl_lab::sweep::Sweep::load(&sweep)?;
                print!("{}", icl_lab::sweep::plan(&sweep, &runs));
            }
            SweepAction::Run { sweep, runs, jobs } => {
                anyhow::ensure!((1..=256).contains(&jobs), "--jobs: must be in 1..=256 (got {jobs})");
                let sweep = icl_lab::sweep::Sweep::load(&sweep)?;
                let (total, reused) = icl_lab::sweep::run_local(&sweep, &runs, jobs)?;
                println!("sweep `{}`: {total} runs complete ({reused} reused) under {}", sweep.name, runs.display());
            }
            SweepAction::Slurm { sweep, runs, out, time, cpus, mem, partition, limit } => {
                let sweep = icl_lab::sweep::Sweep::load(&sweep)?;
                anyhow::ensure!((1..=1024).contains(&cpus), "--cpus: must be in 1..=1024 (got {cpus})");
                let out = out.unwrap_or_else(|| PathBuf::from("sweeps").join(&sweep.name));
                let opts = icl_lab::sweep::SlurmOptions { time, cpus, mem, partition, limit };
                let script = icl_lab::sweep::write_slurm(&sweep, &runs, &out, &opts)?;
                println!(
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
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", icl_lab::sweep::markdown(&report));
                    println!("wrote {}", reports.join(format!("{}.md", sweep.name)).display());
                }
            }
        },
        Command::Probe { run_dir, json } => {
            let cfg = RunConfig::from_file(&run_dir.join("config.toml"))?;
            let (vs, model) = icl_lab::runs::load_model(&run_dir, &cfg, tch::Device::Cpu)?;
            let report = icl_lab::probe::probe_model(&cfg, &vs, &model, None)?;
            icl_lab::io::write_json_atomic(&run_dir.join("probe.json"), &report)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.summary(&cfg));
                println!("wrote {} (everything, with the weight products)", run_dir.join("probe.json").display());
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
                task_config.set(k.trim(), icl_lab::curve::parse_value(v.trim())?);
            }
            let task = icl_tasks::build(&task_config)?;
            let learners = match learners.as_str() {
                "default" => task.learners(),
                "none" => Vec::new(),
                list => icl_lab::curve::parse_learners(list)?,
            };
            let shift = shift
                .map(|s| -> anyhow::Result<icl_tasks::Shift> {
                    let (k, v) = s.split_once('=').with_context(|| format!("--shift: `{s}` is not KIND=VALUE"))?;
                    let kind: icl_tasks::ShiftKind = serde_json::from_value(serde_json::Value::String(k.trim().into()))
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "--shift: unknown kind `{k}` (known: input_scale, teacher_scale, label_noise, condition_number)"
                            )
                        })?;
                    let value: f64 = v.trim().parse().map_err(|_| anyhow::anyhow!("--shift: `{v}` is not a number"))?;
                    task.shifted(icl_tasks::Shift { kind, value })?;
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
            let width = task.dims().x_dim + task.dims().y_dim;
            let cells = prompts.max(tuning_prompts) as u128 * (n_max as u128 + 1) * width as u128;
            anyhow::ensure!(
                n_max <= icl_tasks::MAX_CONTEXT && cells <= 1 << 31,
                "--n-max {n_max} with {prompts} prompts of width {width} is too large to hold in memory"
            );
            let opts = icl_probes::curve::CurveOptions {
                prompts,
                tuning_prompts,
                n_values: (0..=n_max).step_by(n_step).collect(),
                seed,
                shift,
                ..Default::default()
            };
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
                println!("{}", serde_json::to_string_pretty(&file.measurements)?);
            } else {
                println!("{} — normalised error (zero predictor = 1), mean over {prompts} prompts", task.name());
                print!("{}", icl_lab::curve::summary(&file.measurements, 6));
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
                report.rerank();
                let files = icl_lab::tournament::write(&report, &reports, &figures)?;
                print_written(&files);
                return Ok(());
            }
            icl_lab::learners::register();
            let (entrants, config) = icl_lab::tournament::load_entrants(&run_dirs, &control_task, no_untrained)?;
            let task = config.task();
            let candidates = match learners.as_str() {
                "default" => task.learners(),
                list if list.starts_with('+') => {
                    let mut all = task.learners();
                    all.extend(icl_lab::curve::parse_learners(&list[1..])?);
                    all
                }
                list => icl_lab::curve::parse_learners(list)?,
            };
            let mut opts = icl_lab::tournament::TournamentOptions::for_task(task.as_ref());
            if !n.is_empty() {
                opts.n_values = checked_n_values(n)?;
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
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
                for s in &report.skipped {
                    println!("not fitted: {s}");
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
                opts.n_values = checked_n_values(n)?;
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
            println!(
                "held-out R² of the {probe} from all tokens at n = {} (mean over seeds):",
                opts.n_values.iter().max().unwrap_or(&0)
            );
            for e in &report.entrants {
                for layer in 0..=e.layers {
                    let cells: Vec<String> = icl_probes::activation_probe::TARGETS
                        .iter()
                        .map(|t| format!("{t} {:.3}", report.value(&e.model, layer, probe, t, "all_tokens", "r2").0))
                        .collect();
                    println!("  {:<40} layer {layer}: {}", e.model, cells.join(", "));
                }
            }
            print_written(&files);
        }
        Command::List => {
            icl_lab::learners::register();
            println!("tasks ([task] name = …; keys with their defaults):");
            for entry in icl_tasks::registry::entries() {
                let task = icl_tasks::build(&icl_tasks::TaskConfig::new(entry.name))?;
                let keys: Vec<String> = task.params().iter().map(|(k, v)| format!("{k} = {v}")).collect();
                let learners: Vec<String> = task.learners().iter().map(|l| l.label()).collect();
                println!("  {:<16} {}", entry.name, entry.about);
                println!("  {:<16} keys: {}", "", keys.join(", "));
                println!("  {:<16} learners: {}", "", learners.join(", "));
            }
            println!("learners:");
            for f in icl_probes::learner::families() {
                println!("  {:<16} {}", f.name(), f.about());
            }
        }
        Command::Index { reports } => {
            let index = icl_lab::figures::vo2023_all::write_index(&reports)?;
            println!("{}", serde_json::to_string_pretty(&index)?);
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
            let report = icl_lab::bench::run(&opts, |line| println!("{line}"))?;
            let ratios = report.ratios();
            if !ratios.is_empty() {
                println!("\nspeed-up over the faster baseline (our fastest line | theirs):");
                for (depth, ours, theirs, ratio) in ratios {
                    println!("  {depth:<12} {ratio:>5.1}×   ({ours:.2} ms | {theirs:.2} ms)");
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
    }
    Ok(())
}
