//! `icl-lab bench`: training speed in ms/step, data generation included, for the paper's
//! 1-, 2- and 3-layer recurrent configurations and the 5-separate-layer model of Figs. 3 and 6,
//! with each engine (fused, libtorch) and thread count; beside each line the FLOPs of a step,
//! the achieved GFLOP/s and the machine's own f32 peak measured in the same command (a large
//! matrix product through libtorch), and optionally the plain PyTorch and JAX baselines
//! (`../shared/bench/lsa_bench.py`, run unedited as a subprocess). Every line is measured in
//! the same process, one after another, so ratios between lines are meaningful on a shared,
//! noisy machine.
//!
//! What a bench line times is what training does: [`SteppedModel::step`] on batches from the
//! training data thread, reading every loss (the divergence check), without evaluations.
//!
//! FLOPs per step are counted from the shapes, 2 per multiply-add of the step as the fused
//! engine computes it ([`crate::fused_lsa::LsaShape::flops_per_step`]); the same count is used
//! for libtorch lines, so GFLOP/s compare engines on equal work. Data generation and the Adam
//! update (4·D² parameters per layer) are not counted.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::config::{Engine, RunConfig};
use crate::fused_lsa::LsaShape;
use crate::train::SteppedModel;

#[derive(Clone, Debug, Serialize)]
pub struct BenchLine {
    pub name: String,
    pub layers: usize,
    pub recurrent: bool,
    pub engine: String,
    pub threads: usize,
    pub device: String,
    pub ms_per_step: f64,
    /// Sampling alone, ms per batch on one core (overlapped with the step when training).
    pub data_ms_per_batch: f64,
    /// FLOPs of one step (see the module docs).
    pub mflop_per_step: f64,
    pub gflops: f64,
}

/// Times `steps` training steps after `warmup` untimed ones.
pub fn bench_config(config: &RunConfig, warmup: usize, steps: usize) -> anyhow::Result<BenchLine> {
    let device = crate::device::open(&config.train.device)?;
    tch::set_num_threads(config.train.threads as i32);
    let task = config.task();
    let mut model = SteppedModel::new(config, device)?;
    let mut run = |n: usize| -> anyhow::Result<()> {
        for _ in 0..n {
            // The training loop reads every loss (divergence check): so does the benchmark.
            std::hint::black_box(model.step()?);
        }
        Ok(())
    };
    run(warmup)?;
    let start = Instant::now();
    run(steps)?;
    let ms_per_step = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    drop(model);

    let mut rng = crate::rng::seeded_rng(config.seed, 99);
    let start = Instant::now();
    let reps = 20;
    for _ in 0..reps {
        let p = task.sample(&mut rng, config.train.batch);
        std::hint::black_box(config.model.tokens.token_buffer(&p, |x| x as f32));
    }
    let data_ms_per_batch = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
    let flops = LsaShape::of(config).map(|s| s.flops_per_step(config.train.batch)).unwrap_or(f64::NAN);
    Ok(BenchLine {
        name: config.name.clone(),
        layers: config.model.layers,
        recurrent: config.model.recurrent,
        engine: format!("{:?}", config.engine()).to_lowercase(),
        threads: config.train.threads,
        device: config.train.device.clone(),
        ms_per_step,
        data_ms_per_batch,
        mflop_per_step: flops / 1e6,
        gflops: flops / (ms_per_step * 1e6),
    })
}

impl BenchLine {
    /// The depth label shared with the baselines: `1 layer`, `3 recurrent`, `5 separate`.
    pub fn depth(&self) -> String {
        match (self.layers, self.recurrent) {
            (1, _) => "1 layer".into(),
            (l, true) => format!("{l} recurrent"),
            (l, false) => format!("{l} separate"),
        }
    }
}

/// ms per step of `seeds` seeds of `config` trained together (as [`crate::train::train_together`]
/// steps them: every seed's batch from its own data stream, the models stepped side by side on
/// `workers` threads), evaluations not included.
pub fn bench_together(
    config: &RunConfig,
    seeds: usize,
    workers: usize,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<f64> {
    tch::set_num_threads(1);
    let device = crate::device::open(&config.train.device)?;
    let mut runs = (0..seeds as u64)
        .map(|s| SteppedModel::new(&RunConfig { seed: config.seed + s, ..config.clone() }, device))
        .collect::<anyhow::Result<Vec<_>>>()?;
    time_side_by_side(&mut runs, workers, warmup, steps, |run, _| run.step())
}

/// ms per step of stepping all of `runs` side by side on `workers` threads, `steps` timed steps
/// after `warmup` untimed ones; `step(run, k)` takes run's k-th step (1-based).
fn time_side_by_side<R: Send>(
    runs: &mut [R],
    workers: usize,
    warmup: usize,
    steps: usize,
    step: impl Fn(&mut R, usize) -> anyhow::Result<f64> + Sync,
) -> anyhow::Result<f64> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers.clamp(1, runs.len().max(1))).build()?;
    let mut run = |from: usize, n: usize| -> anyhow::Result<()> {
        for k in from..from + n {
            pool.install(|| runs.par_iter_mut().map(|r| step(r, k)).collect::<anyhow::Result<Vec<f64>>>())?;
        }
        Ok(())
    };
    run(1, warmup)?;
    let start = Instant::now();
    run(warmup + 1, steps)?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / steps as f64)
}

/// The machine's f32 matrix-product peak through libtorch at `threads` threads, GFLOP/s: the best
/// of a few n × n products (n = 1024).
pub fn matmul_peak(threads: usize) -> f64 {
    tch::set_num_threads(threads as i32);
    let n = 1024i64;
    let a = tch::Tensor::randn([n, n], (tch::Kind::Float, tch::Device::Cpu));
    let b = tch::Tensor::randn([n, n], (tch::Kind::Float, tch::Device::Cpu));
    let _ = a.matmul(&b);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let _ = std::hint::black_box(a.matmul(&b));
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// The configurations `icl-lab bench` measures: vo2023-fig2 with 1, 2, 3 recurrent layers and
/// with 5 separate layers (the model of Figs. 3 and 6), for each engine and thread count.
pub fn default_configs(device: &str, engines: &[Engine], threads: &[usize]) -> anyhow::Result<Vec<RunConfig>> {
    let mut out = Vec::new();
    for (layers, recurrent) in [(1usize, true), (2, true), (3, true), (5, false)] {
        for &engine in engines {
            for &t in threads {
                let mut c = RunConfig::preset("vo2023-fig2")?;
                let kind = if recurrent { "" } else { " sep" };
                let e = format!("{engine:?}").to_lowercase();
                c.name = format!("L={layers}{kind} {e} t={t}");
                c.model.layers = layers;
                c.model.recurrent = recurrent;
                c.model.init_scale = None;
                c.train.grad_clip = None;
                c.train.device = device.to_string();
                c.train.threads = t;
                c.train.engine = engine;
                out.push(c.resolve()?);
            }
        }
    }
    Ok(out)
}

/// One baseline measurement: `python lsa_bench.py <framework> <steps> <layers>`, unedited.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineLine {
    pub framework: String,
    pub layers: usize,
    pub ms_per_step: f64,
}

/// Runs the baseline script for `framework` (`torch`, `jax`) at `layers` recurrent layers.
pub fn run_baseline(
    python: &Path,
    script: &Path,
    framework: &str,
    steps: usize,
    layers: usize,
) -> anyhow::Result<BaselineLine> {
    let out = std::process::Command::new(python)
        .arg(script)
        .args([framework, &steps.to_string(), &layers.to_string()])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    let ms = parse_ms_per_step(&out).with_context(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        format!("{framework} baseline printed no ms_per_step: {}", err.lines().last().unwrap_or(""))
    })?;
    Ok(BaselineLine { framework: framework.into(), layers, ms_per_step: ms })
}

impl std::fmt::Display for BenchLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<24} {:>8.2} ms/step  {:>6.0} MFLOP  {:>5.1} GFLOP/s  ({}; sampling alone {:.2} ms/batch)",
            self.name, self.ms_per_step, self.mflop_per_step, self.gflops, self.device, self.data_ms_per_batch
        )
    }
}

/// What `icl-lab bench` measures.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub device: String,
    pub steps: usize,
    pub engines: Vec<Engine>,
    pub threads: Vec<usize>,
    /// A Python with PyTorch and JAX, and the baseline script: run for every depth when given.
    pub baselines: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub baseline_steps: usize,
    /// Also time this many seeds of the 1-layer model trained together against one (0: skip).
    pub together: usize,
    /// Also time this many steps of the 5-layer GD++ reference fit, eigenbasis vs autograd (0: skip).
    pub fit_steps: usize,
    /// Time the linear-attention family (von Oswald's models) and the GPT-style family.
    pub lsa: bool,
    pub gpt: Vec<GptSize>,
    /// Timed GPT-style steps per size (None: each size's default).
    pub gpt_steps: Option<usize>,
    /// Garg et al.'s model as their code builds it, run by the baseline Python for every GPT line.
    pub gpt_baseline_script: Option<std::path::PathBuf>,
    /// Where the GPT-style lines draw their batches (`train.data`).
    pub gpt_data: crate::config::DataPath,
}

impl BenchOptions {
    /// Refuses, in one line naming the flag, what cannot be measured (0 threads, 0 steps, a
    /// thread count past what libtorch and the fused engine take).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=1_000_000).contains(&self.steps), "--steps: must be in 1..=1000000 (got {})", self.steps);
        anyhow::ensure!(!self.threads.is_empty(), "--threads: give at least one thread count");
        for &t in &self.threads {
            anyhow::ensure!((1..=1024).contains(&t), "--threads: each must be in 1..=1024 (got {t})");
        }
        anyhow::ensure!(!self.engines.is_empty(), "--engines: give at least one engine");
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.baseline_steps),
            "--baseline-steps: must be in 1..=1000000 (got {})",
            self.baseline_steps
        );
        anyhow::ensure!(self.together <= 1000, "--together: at most 1000 seeds (got {})", self.together);
        anyhow::ensure!(self.fit_steps <= 1_000_000, "--fit-steps: at most 1000000 (got {})", self.fit_steps);
        if let Some(n) = self.gpt_steps {
            anyhow::ensure!((1..=1_000_000).contains(&n), "--gpt-steps: must be in 1..=1000000 (got {n})");
        }
        anyhow::ensure!(self.lsa || !self.gpt.is_empty(), "--families: give at least one family (lsa, gpt)");
        crate::device::parse_device(&self.device).context("--device")?;
        Ok(())
    }
}

/// Everything one `icl-lab bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// f32 matmul peak, GFLOP/s, per thread count.
    pub peak_gflops: Vec<(usize, f64)>,
    pub lines: Vec<BenchLine>,
    pub baselines: Vec<BaselineLine>,
    /// (seeds, workers, ms per step of all of them, ms per step of one seed alone).
    pub together: Option<(usize, usize, f64, f64)>,
    /// ms per step of the 5-layer GD++ fit: (in the eigenbasis, by libtorch autograd).
    pub reference_fit: Option<(f64, f64)>,
    pub gpt_lines: Vec<GptBenchLine>,
    pub gpt_baselines: Vec<GptBaselineLine>,
    /// GPT-style quick model, fused: (seeds, workers, ms per step of all, ms per step of one).
    pub gpt_together: Option<(usize, usize, f64, f64)>,
}

impl BenchReport {
    /// Per depth: our fastest fused line, the faster baseline, and the ratio.
    pub fn ratios(&self) -> Vec<(String, f64, f64, f64)> {
        let mut out = Vec::new();
        let mut depths: Vec<(usize, String)> = self.lines.iter().map(|l| (l.layers, l.depth())).collect();
        depths.dedup();
        for (layers, depth) in depths {
            let ours =
                self.lines.iter().filter(|l| l.depth() == depth).map(|l| l.ms_per_step).fold(f64::INFINITY, f64::min);
            let theirs = self
                .baselines
                .iter()
                .filter(|b| b.layers == layers)
                .map(|b| b.ms_per_step)
                .fold(f64::INFINITY, f64::min);
            if theirs.is_finite() {
                out.push((depth, ours, theirs, theirs / ours));
            }
        }
        out
    }

    /// Per GPT-style line with a baseline at the same size and threads: (label, ours, theirs,
    /// theirs / ours).
    pub fn gpt_ratios(&self) -> Vec<(String, f64, f64, f64)> {
        self.gpt_lines
            .iter()
            .filter_map(|l| {
                let b = self.gpt_baselines.iter().find(|b| b.size == l.size.name && b.threads == l.threads)?;
                let label = format!("gpt {} {} t={}", l.size.name, l.engine, l.threads);
                Some((label, l.ms_per_step, b.ms_per_step, b.ms_per_step / l.ms_per_step))
            })
            .collect()
    }
}

/// A GPT-style size `icl-lab bench` times, with the arguments garg_gpt_bench.py takes for it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GptSize {
    pub name: &'static str,
    pub x_dim: usize,
    /// Points per prompt, the query included (Garg's `n_points`).
    pub points: usize,
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    /// Timed steps unless `--gpt-steps` says otherwise.
    pub default_steps: usize,
}

/// The quick size of `reproduce garg2022-fig2 --quick` and Garg et al.'s `standard` model at d = 20.
pub const GPT_SIZES: [GptSize; 2] = [
    GptSize { name: "quick", x_dim: 5, points: 11, layers: 3, heads: 2, width: 32, default_steps: 200 },
    GptSize { name: "standard", x_dim: 20, points: 41, layers: 12, heads: 8, width: 256, default_steps: 3 },
];

impl GptSize {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        GPT_SIZES.iter().copied().find(|s| s.name == name).with_context(|| {
            let known: Vec<&str> = GPT_SIZES.iter().map(|s| s.name).collect();
            format!("--gpt: unknown size `{name}` (known: {})", known.join(", "))
        })
    }

    /// The run config timed: garg2022-fig2's training settings (Adam 1e-4, batch 64) at this size,
    /// without the curriculum (every step at the full size, as the baseline script).
    /// Batches are drawn where `data` says (`train.data`).
    pub fn config(
        &self,
        device: &str,
        threads: usize,
        engine: Engine,
        data: crate::config::DataPath,
    ) -> anyhow::Result<RunConfig> {
        let mut c = RunConfig::preset("garg2022-fig2")?;
        c.name = format!("gpt {} t={threads}", self.name);
        c.train.engine = engine;
        c.train.data = data;
        c.task = c.task.with("x_dim", self.x_dim).with("context_len", self.points - 1);
        c.gpt = Some(crate::models::GptConfig { layers: self.layers, heads: self.heads, width: self.width });
        c.curriculum = None;
        c.train.device = device.to_string();
        c.train.threads = threads;
        c.resolve()
    }

    /// FLOPs of one training step at batch `batch`: 2 per multiply-add of the matrix products
    /// (read-in, q/k/v/o, the two attention products over all T × T positions, the MLP,
    /// read-out), times 3 for the forward and the two products of the backward pass.
    pub fn flops_per_step(&self, batch: usize) -> f64 {
        let (d, w, l) = (self.x_dim as f64, self.width as f64, self.layers as f64);
        let t = (2 * self.points - 1) as f64;
        let per_token = d * w + l * (12.0 * w * w + 2.0 * t * w) + w;
        3.0 * 2.0 * per_token * t * batch as f64
    }
}

/// The engine a GPT-style bench line asks for: `fused` is the GPT fused step, anything else libtorch.
fn engine_for_gpt(engine: Engine) -> Engine {
    if engine == Engine::Fused {
        Engine::Fused
    } else {
        Engine::Libtorch
    }
}

/// One GPT-style bench line, with where the time went.
#[derive(Clone, Debug, Serialize)]
pub struct GptBenchLine {
    pub size: GptSize,
    /// `host` or `device` (`train.data`).
    pub data: String,
    /// `libtorch` or `fused` ([`crate::fused_gpt`], one thread).
    pub engine: String,
    pub threads: usize,
    pub ms_per_step: f64,
    pub mflop_per_step: f64,
    pub gflops: f64,
    /// Per step, ms: sampling the batch, then the phases of [`crate::train_gpt::StepPhases`].
    pub sampling_ms: f64,
    pub phases: crate::train_gpt::StepPhases,
}

/// Times `steps` GPT-style training steps at `size` after `warmup` untimed ones, sampling
/// included (each step draws its batch as training does, on the training thread).
#[allow(clippy::too_many_arguments)]
pub fn bench_gpt(
    size: GptSize,
    device: &str,
    threads: usize,
    engine: Engine,
    data: crate::config::DataPath,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<GptBenchLine> {
    let config = size.config(device, threads, engine, data)?;
    let device = crate::device::open(&config.train.device)?;
    tch::set_num_threads(threads as i32);
    let task = config.training_task();
    let mut trainer = crate::train_gpt::GptTrainer::new(&config, task.dims(), device)?;
    let sampler = match data {
        crate::config::DataPath::Device => Some(crate::device_data::GaussianLinearSampler::for_task(&config.task)?),
        crate::config::DataPath::Host => None,
    };
    let mut phases = crate::train_gpt::StepPhases::default();
    let mut sampling = 0.0;
    let mut start = Instant::now();
    for step in 1..=warmup + steps {
        if step == warmup + 1 {
            (phases, sampling, start) = (Default::default(), 0.0, Instant::now());
        }
        let t0 = Instant::now();
        let loss = match &sampler {
            Some(s) => {
                let (tokens, targets) =
                    s.gpt_batch(config.seed, step, config.train.batch, size.x_dim, size.points, device)?;
                sampling += t0.elapsed().as_secs_f64() * 1e3;
                trainer.step_tensors_timed(&tokens, &targets, Some(&mut phases))?
            }
            None => {
                let batch = crate::train_gpt::training_batch(&config, task.as_ref(), step)?;
                sampling += t0.elapsed().as_secs_f64() * 1e3;
                trainer.step_timed(&batch, Some(&mut phases))?
            }
        };
        std::hint::black_box(loss);
    }
    let ms_per_step = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let n = steps as f64;
    phases = crate::train_gpt::StepPhases {
        steps: 1,
        tokens_ms: phases.tokens_ms / n,
        forward_ms: phases.forward_ms / n,
        backward_ms: phases.backward_ms / n,
        update_ms: phases.update_ms / n,
    };
    let flops = size.flops_per_step(config.train.batch);
    Ok(GptBenchLine {
        size,
        data: format!("{data:?}").to_lowercase(),
        engine: format!("{:?}", config.engine()).to_lowercase(),
        threads,
        ms_per_step,
        mflop_per_step: flops / 1e6,
        gflops: flops / (ms_per_step * 1e6),
        sampling_ms: sampling / n,
        phases,
    })
}

impl std::fmt::Display for GptBenchLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.phases;
        write!(
            f,
            "{:<24} {:>8.2} ms/step  {:>6.0} MFLOP  {:>5.1} GFLOP/s  (sampling {:.2}, tensors {:.2}, forward {:.2}, backward {:.2}, Adam {:.2} ms)",
            format!(
                "gpt {} {}{} t={}",
                self.size.name,
                self.engine,
                if self.data == "device" { " dev-data" } else { "" },
                self.threads
            ),
            self.ms_per_step,
            self.mflop_per_step,
            self.gflops,
            self.sampling_ms,
            p.tokens_ms,
            p.forward_ms,
            p.backward_ms,
            p.update_ms
        )
    }
}

/// ms per step of `seeds` seeds of the GPT-style model at `size` stepped side by side, each by the
/// fused engine on its own batch stream, on `workers` threads (one step loop for all; each seed's
/// numbers are what it gives alone, since nothing is shared), sampling included.
pub fn bench_gpt_together(
    size: GptSize,
    seeds: usize,
    workers: usize,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<f64> {
    tch::set_num_threads(1);
    let base = size.config("cpu", 1, Engine::Fused, crate::config::DataPath::Host)?;
    let task = base.training_task();
    let mut runs = (0..seeds as u64)
        .map(|s| {
            let c = RunConfig { seed: base.seed + s, ..base.clone() };
            Ok((crate::train_gpt::GptTrainer::new(&c, task.dims(), tch::Device::Cpu)?, c))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    time_side_by_side(&mut runs, workers, warmup, steps, |(trainer, c), k| {
        trainer.step(&crate::train_gpt::training_batch(c, task.as_ref(), k)?)
    })
}

/// One run of Garg et al.'s model as their code builds it (`garg_gpt_bench.py d pts L H W steps
/// threads`, unedited).
#[derive(Clone, Debug, Serialize)]
pub struct GptBaselineLine {
    pub size: String,
    pub threads: usize,
    pub ms_per_step: f64,
}

pub fn run_gpt_baseline(
    python: &Path,
    script: &Path,
    size: GptSize,
    steps: usize,
    threads: usize,
) -> anyhow::Result<GptBaselineLine> {
    let args: Vec<String> = [size.x_dim, size.points, size.layers, size.heads, size.width, steps, threads]
        .iter()
        .map(|n| n.to_string())
        .collect();
    let out = std::process::Command::new(python)
        .arg(script)
        .args(&args)
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    let ms = parse_ms_per_step(&out).with_context(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        format!("the GPT baseline printed no ms_per_step: {}", err.lines().last().unwrap_or(""))
    })?;
    Ok(GptBaselineLine { size: size.name.into(), threads, ms_per_step: ms })
}

fn parse_ms_per_step(out: &std::process::Output) -> Option<f64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split("ms_per_step=").nth(1).map(str::to_owned))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// Runs the benchmark; `print` receives each line as it is measured.
pub fn run(opts: &BenchOptions, mut print: impl FnMut(&str)) -> anyhow::Result<BenchReport> {
    opts.check()?;
    let peak_gflops: Vec<(usize, f64)> =
        if opts.device == "cpu" { opts.threads.iter().map(|&t| (t, matmul_peak(t))).collect() } else { Vec::new() };
    for (t, p) in &peak_gflops {
        print(&format!("f32 matmul peak (libtorch, 1024³, {t} thread(s)): {p:.1} GFLOP/s"));
    }
    let mut lines = Vec::new();
    let mut baselines = Vec::new();
    let configs = if opts.lsa { default_configs(&opts.device, &opts.engines, &opts.threads)? } else { Vec::new() };
    let mut depth_done = None;
    for cfg in configs {
        let line = bench_config(&cfg, 30, opts.steps)?;
        let peak = peak_gflops.iter().find(|(t, _)| *t == line.threads).map(|(_, p)| *p);
        let of_peak = peak.map(|p| format!("  {:.0}% of peak", 100.0 * line.gflops / p)).unwrap_or_default();
        print(&format!("{line}{of_peak}"));
        let depth = (line.layers, line.recurrent);
        lines.push(line);
        let last_of_depth = depth_done != Some(depth);
        depth_done = Some(depth);
        if let (Some((python, script)), true) = (&opts.baselines, last_of_depth) {
            // The script has recurrent layers only: 5 recurrent layers stand in for 5 separate
            // ones (the same shapes and FLOPs per step).
            for framework in ["torch", "jax"] {
                let b = run_baseline(python, script, framework, opts.baseline_steps, depth.0)?;
                print(&format!(
                    "{:<24} {:>8.2} ms/step  (lsa_bench.py {framework} {} {}, unedited)",
                    format!("baseline {framework} L={}", depth.0),
                    b.ms_per_step,
                    opts.baseline_steps,
                    depth.0
                ));
                baselines.push(b);
            }
        }
    }
    let mut gpt_lines = Vec::new();
    let mut gpt_baselines = Vec::new();
    for &size in &opts.gpt {
        let steps = opts.gpt_steps.unwrap_or(size.default_steps);
        for &t in &opts.threads {
            for &engine in &opts.engines {
                // The fused GPT step is one thread and CPU only: timed once, at the first thread count.
                if engine == Engine::Fused && (t != opts.threads[0] || opts.device != "cpu") {
                    continue;
                }
                let line = bench_gpt(size, &opts.device, t, engine_for_gpt(engine), opts.gpt_data, 2, steps)?;
                let peak = peak_gflops.iter().find(|(pt, _)| *pt == t).map(|(_, p)| *p);
                let of_peak = peak.map(|p| format!("  {:.0}% of peak", 100.0 * line.gflops / p)).unwrap_or_default();
                print(&format!("{line}{of_peak}"));
                gpt_lines.push(line);
            }
            if let (Some((python, _)), Some(script)) = (&opts.baselines, &opts.gpt_baseline_script) {
                let b = run_gpt_baseline(python, script, size, steps, t)?;
                print(&format!(
                    "{:<24} {:>8.2} ms/step  (garg_gpt_bench.py {} {} {} {} {} {steps} {t}, unedited)",
                    format!("baseline garg {} t={t}", size.name),
                    b.ms_per_step,
                    size.x_dim,
                    size.points,
                    size.layers,
                    size.heads,
                    size.width
                ));
                gpt_baselines.push(b);
            }
        }
    }
    let mut gpt_together = None;
    if opts.together > 1 && opts.device == "cpu" && opts.engines.contains(&Engine::Fused) {
        if let Some(&size) = opts.gpt.iter().find(|s| s.name == "quick") {
            let steps = opts.gpt_steps.unwrap_or(size.default_steps);
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
            let one = bench_gpt_together(size, 1, 1, 2, steps)?;
            let all = bench_gpt_together(size, opts.together, workers, 2, steps)?;
            print(&format!(
                "{} seeds of gpt quick fused together ({workers} workers): {all:.2} ms/step for all vs {one:.2} ms/step for one seed: {:.2}× the time of one",
                opts.together,
                all / one
            ));
            gpt_together = Some((opts.together, workers, all, one));
        }
    }
    let together = if opts.lsa && opts.together > 1 && opts.device == "cpu" {
        let mut c = RunConfig::preset("vo2023-fig2")?;
        c.name = "seeds together".into();
        c.train.engine = Engine::Fused;
        let c = c.resolve()?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let one = bench_together(&c, 1, 1, 30, opts.steps)?;
        let all = bench_together(&c, opts.together, workers, 30, opts.steps)?;
        print(&format!(
            "{} seeds of L=1 together ({workers} workers): {all:.2} ms/step for all vs {one:.2} ms/step for one seed: {:.2}× the time of one",
            opts.together,
            all / one
        ));
        Some((opts.together, workers, all, one))
    } else {
        None
    };
    let reference_fit = if opts.lsa && opts.fit_steps > 0 {
        let task = RunConfig::preset("vo2023-fig2")?.task;
        tch::set_num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()) as i32);
        let (spectral, autograd) = crate::references::time_fit_gradients(&task, 5, 512, opts.fit_steps)?;
        print(&format!(
            "GD++ fit, 5 separate layers, batch 512 (sampling included): {spectral:.2} ms/step in the eigenbasis vs \
             {autograd:.2} ms/step by libtorch autograd (f64): {:.1}× faster",
            autograd / spectral
        ));
        Some((spectral, autograd))
    } else {
        None
    };
    Ok(BenchReport { peak_gflops, lines, baselines, together, reference_fit, gpt_lines, gpt_baselines, gpt_together })
}
