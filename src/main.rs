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
        /// A named preset instead of a file: vo2023-fig2, tiny, or a figure model (lsa-1, lsa-2-rec, lsa-3-rec,
        /// lsa-5-sep, lsa-10-rec, softmax-1h, softmax-2h, ln-1, ln-2, classic-2).
        #[arg(long)]
        preset: Option<String>,
        /// Override the config's seed.
        #[arg(long)]
        seed: Option<u64>,
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
        /// The figure: vo2023-fig2, -fig3, -fig5, -fig6, -fig7, -fig9, -fig10, -fig12, -fig14, or vo2023-all.
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
    /// Probe a run directory: loss, alignment with GD, per-layer readouts, weight products, untrained control.
    /// Prints JSON and writes <run-dir>/probe.json.
    Probe { run_dir: PathBuf },
    /// Rebuild reports/vo2023.md, the index of the figure reports present (after running figures one at a time).
    Index {
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
    /// Time training steps (ms/step, data generation included) for the 1-, 2- and 3-layer recurrent models.
    Bench {
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Timed steps per configuration.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// libtorch thread counts to compare (the first is the default setting).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Train { config, preset, seed, device, steps, runs, force } => {
            let mut cfg = match (config, preset) {
                (Some(path), _) => RunConfig::from_file(&path)?,
                (None, Some(name)) => match RunConfig::preset(&name) {
                    Ok(c) => c,
                    // The figures' models are presets too (full setting), e.g. `lsa-2-rec`.
                    Err(e) => icl_lab::figures::models::model(&name, false).map(|m| m.config).map_err(|_| {
                        anyhow::anyhow!("{e}; figure models: {}", icl_lab::figures::models::KEYS.join(", "))
                    })?,
                },
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
            let out = train(&cfg, &runs, TrainOptions { force, ..Default::default() })?;
            let last = out.metrics.rows.last().context("no evaluation rows")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "run_dir": out.dir, "reused": out.reused, "final": last, "references": out.metrics.references,
                }))?
            );
        }
        Command::Reproduce { figure, quick, seeds, jobs, force, device, runs, figures, reports } => {
            anyhow::ensure!(seeds != Some(0), "--seeds: must be at least 1 (got 0)");
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let opts = icl_lab::figures::FigureOptions {
                seeds,
                quick,
                jobs: jobs.unwrap_or(cores),
                force,
                device,
                runs_root: runs,
                figures_root: figures,
                reports_root: reports,
            };
            let summary = icl_lab::figures::reproduce(&figure, &opts)?;
            // The report's JSON, as written to reports/<figure>.json.
            println!("{}", serde_json::to_string_pretty(&summary)?);
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
                eta
            };
            anyhow::ensure!(etas.iter().all(|e| e.is_finite()), "--eta: must be finite numbers");
            anyhow::ensure!(tasks >= 1, "--tasks: must be at least 1 (got 0)");
            let check = icl_lab::construct::check_construction(&cfg, &etas, tasks, seed)?;
            if let Some(dir) = out {
                let (vs, _) = icl_lab::construct::gd_model(&cfg, &etas, tch::Kind::Float, tch::Device::Cpu)?;
                icl_lab::io::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
                icl_lab::io::with_atomic_path(&dir.join("weights.safetensors"), |p| Ok(vs.save(p)?))?;
            }
            println!("{}", serde_json::to_string_pretty(&check)?);
        }
        Command::Probe { run_dir } => {
            let cfg = RunConfig::from_file(&run_dir.join("config.toml"))?;
            let (vs, model) = icl_lab::figures::load_run(&run_dir, &cfg, tch::Device::Cpu)?;
            let report = icl_lab::probe::probe_model(&cfg, &vs, &model, None)?;
            icl_lab::io::write_json_atomic(&run_dir.join("probe.json"), &report)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Index { reports } => {
            let index = icl_lab::figures::vo2023_all::write_index(&reports)?;
            println!("{}", serde_json::to_string_pretty(&index)?);
        }
        Command::Bench { device, steps, threads } => {
            for cfg in icl_lab::bench::default_configs(&device, &threads)? {
                println!("{}", icl_lab::bench::bench_config(&cfg, 30, steps)?);
            }
        }
    }
    Ok(())
}
