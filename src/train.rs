//! Training: a (config, seed) → a run directory `runs/<name>/seed-<seed>/` holding the resolved
//! `config.toml`, `metrics.json` (every evaluation row) and `weights.safetensors`.
//!
//! Optimisation follows the official code (spec §1.4): Adam (β1 0.9, β2 0.98, ε 1e-8, no weight
//! decay) after global-norm gradient clipping, a fresh batch of tasks every step, loss ½·MSE.
//! Training data is sampled on a second thread while libtorch computes the step.
//! A run whose loss turns NaN/inf stops with an error and keeps the weights of its last
//! evaluation; every file is replaced atomically, so a crash never leaves one half-written.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use icl_tasks::Dims;

use crate::rng::{seeded_rng, DATA_STREAM};

use crate::config::{Engine, RunConfig};
use crate::evaluate::Evaluator;
use crate::fused_lsa::FusedLsa;
use crate::io::{with_atomic_path, write_atomic, write_json_atomic};
use crate::models::Transformer;

pub use crate::runs::{RunMetrics, RunStatus};
pub use crate::training::{
    clip_global_norm, clip_global_norm_of, diverged_loss, progress_bar, run_progress_bar, RunOutcome, TrainOptions,
    DIVERGED_LOSS,
};

/// A model with its parameters and optimiser. With the fused engine the parameters and Adam's
/// state live in [`FusedLsa`] during training and are copied into `vs` by [`Trainer::sync`]
/// before every evaluation and save.
pub struct Trainer {
    pub vs: nn::VarStore,
    pub model: Transformer,
    opt: nn::Optimizer,
    grad_clip: f64,
    fused: Option<FusedLsa>,
    layout: crate::layout::TokenLayout,
    dims: Dims,
    device: Device,
}

impl Trainer {
    pub fn new(config: &RunConfig, dims: Dims, device: Device) -> anyhow::Result<Self> {
        anyhow::ensure!(config.gpt.is_none(), "a GPT-style config trains with the GPT trainer");
        let (vs, model) = crate::models::initial(config, dims, device)?;
        let model = model.into_vo2023().expect("checked: von Oswald et al.'s family");
        let t = &config.train;
        let opt = nn::Adam { beta1: t.beta1, beta2: t.beta2, wd: 0.0, eps: t.eps, amsgrad: false }.build(&vs, t.lr)?;
        let fused = match config.engine() {
            Engine::Fused => {
                let mut f = FusedLsa::new(config)?;
                f.load_from(&vs)?;
                Some(f)
            }
            _ => None,
        };
        Ok(Self {
            vs,
            model,
            opt,
            grad_clip: t.grad_clip.context("resolved config")?,
            fused,
            layout: config.model.tokens,
            dims,
            device,
        })
    }

    /// One optimisation step on a host batch with the configured engine; returns the loss
    /// before the update.
    pub fn step_host(&mut self, batch: &HostBatch) -> anyhow::Result<f64> {
        if let Some(f) = &mut self.fused {
            return Ok(f.step(&batch.tokens, &batch.targets));
        }
        let (tokens, targets) = batch_tensors(batch, self.layout, self.dims, self.device);
        Ok(f64::try_from(self.step(&tokens, &targets))?)
    }

    /// Makes `vs` hold the current parameters (a copy from the fused engine; nothing otherwise).
    pub fn sync(&self) -> anyhow::Result<()> {
        match &self.fused {
            Some(f) => f.store_into(&self.vs),
            None => Ok(()),
        }
    }

    /// One optimisation step; returns the loss before the update (a scalar tensor).
    pub fn step(&mut self, tokens: &Tensor, targets: &Tensor) -> Tensor {
        let preds = self.model.forward(tokens, None); // (B, o)
        let loss = (preds - targets).square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float) * 0.5;
        self.opt.zero_grad();
        loss.backward();
        self.clip_gradients();
        self.opt.step();
        loss
    }

    fn clip_gradients(&self) {
        clip_global_norm(&self.vs, self.grad_clip);
    }
}

/// A batch on the host: tokens (B, T, D) and targets (B, o), flat f32.
pub struct HostBatch {
    pub tokens: Vec<f32>,
    pub targets: Vec<f32>,
}

/// Samples training batches on a background thread (the training-data stream of `config.seed`).
/// Dropping the receiver stops the thread.
pub fn spawn_data_stream(
    config: &RunConfig,
) -> anyhow::Result<(mpsc::Receiver<HostBatch>, std::thread::JoinHandle<()>)> {
    let task = config.training_task();
    let (batch, seed, layout) = (config.train.batch, config.seed, config.model.tokens);
    let (tx, rx) = mpsc::sync_channel(4);
    let handle = std::thread::Builder::new().name("data".into()).spawn(move || {
        let mut rng = seeded_rng(seed, DATA_STREAM);
        loop {
            let p = task.sample(&mut rng, batch);
            let b = HostBatch {
                tokens: layout.token_buffer(&p, |x| x as f32),
                targets: p.yq.iter().map(|&y| y as f32).collect(),
            };
            if tx.send(b).is_err() {
                return;
            }
        }
    })?;
    Ok((rx, handle))
}

/// A model trained on its own training-data stream: what one training step is, for training,
/// seeds trained together and the benchmark alike.
pub struct SteppedModel {
    pub trainer: Trainer,
    batches: mpsc::Receiver<HostBatch>,
    _data_thread: std::thread::JoinHandle<()>,
}

impl SteppedModel {
    /// `config`'s model at its initialisation, with its data stream started.
    pub fn new(config: &RunConfig, device: Device) -> anyhow::Result<Self> {
        let trainer = Trainer::new(config, config.dims(), device)?;
        let (batches, data_thread) = spawn_data_stream(config)?;
        Ok(Self { trainer, batches, _data_thread: data_thread })
    }

    /// One training step on the next batch; the loss before the update.
    pub fn step(&mut self) -> anyhow::Result<f64> {
        let batch = self.batches.recv().context("the data thread stopped")?;
        self.trainer.step_host(&batch)
    }
}

/// Host batch → tokens (B, T, W) and targets (B, o) on `device`, in `layout`.
pub fn batch_tensors(
    b: &HostBatch,
    layout: crate::layout::TokenLayout,
    dims: Dims,
    device: Device,
) -> (Tensor, Tensor) {
    let (t, w) = layout.shape(dims);
    let tokens = Tensor::from_slice(&b.tokens).view([-1, t as i64, w as i64]).to_device(device); // (B, T, W)
    let targets = Tensor::from_slice(&b.targets).view([-1, dims.y_dim as i64]).to_device(device); // (B, o)
    (tokens, targets)
}

pub fn run_dir(runs_root: &Path, config: &RunConfig) -> PathBuf {
    runs_root.join(&config.name).join(format!("seed-{}", config.seed))
}

/// The metrics of the run in `dir` if it is a complete run of exactly `config`: `metrics.json`
/// says complete and the manifest matches the config and every file ([`crate::runs::verify`]).
/// Reads only; see [`reuse_complete_run`] for what training decides under the lock.
pub fn load_complete_run(dir: &Path, config: &RunConfig) -> Option<RunMetrics> {
    let metrics: RunMetrics = serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).ok()?).ok()?;
    (metrics.status == RunStatus::Complete && crate::runs::verify(dir, config).is_ok()).then_some(metrics)
}

/// Under the run's lock: the complete run of exactly `config` in `dir` to reuse, if there is one
/// ([`load_complete_run`]). A damaged or mismatched run is not reused (one line on stderr says
/// why). A complete run from before manifests existed is adopted, and its manifest written now,
/// only if its stored config is `config`, the libtorch engine trained it (the only one before
/// manifests) and its weights load into the config's model (every parameter, with its shape,
/// finite); otherwise it is trained again.
pub fn reuse_complete_run(dir: &Path, config: &RunConfig, lock: &crate::runs::RunLock) -> Option<RunMetrics> {
    if let Some(metrics) = load_complete_run(dir, config) {
        return Some(metrics);
    }
    let metrics: RunMetrics = serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).ok()?).ok()?;
    if metrics.status != RunStatus::Complete {
        return None;
    }
    if dir.join(crate::runs::MANIFEST).exists() {
        if let Err(reason) = crate::runs::verify(dir, config) {
            crate::warnln!("{}: not reused ({reason}); training it again", dir.display());
        }
        return None;
    }
    let stored = RunConfig::from_file(&dir.join("config.toml")).ok()?;
    if stored != *config || config.engine() != Engine::Libtorch {
        return None;
    }
    let adoptable = crate::runs::initial_model(config, Device::Cpu)
        .and_then(|(vs, _)| crate::runs::load_weights(&vs, &dir.join("weights.safetensors")));
    if let Err(why) = adoptable {
        crate::warnln!("{}: not adopted ({why:#}); training it again", dir.display());
        return None;
    }
    crate::runs::write_manifest(dir, config, metrics.steps_done, metrics.weights_step, lock).ok()?;
    Some(metrics)
}

pub fn train(config: &RunConfig, runs_root: &Path, opts: TrainOptions) -> anyhow::Result<RunOutcome> {
    let dir = run_dir(runs_root, config);
    let device = crate::device::open(&config.train.device)?;
    // Reuse is decided with the lock held: a second process asking for this run waits for the
    // first and then reuses what it trained.
    let lock = crate::runs::lock(&dir)?;
    if !opts.force {
        if let Some(metrics) = reuse_complete_run(&dir, config, &lock) {
            return Ok(RunOutcome { dir, metrics, reused: true });
        }
    }
    tch::set_num_threads(config.train.threads as i32);
    icl_probes::learners::serial_blas();
    if config.gpt.is_some() {
        return crate::train_gpt::train(config, dir, lock, device, opts);
    }
    let evaluator = Evaluator::new(config, device, Kind::Float, opts.references)?;
    let bar = opts.progress.unwrap_or_else(|| progress_bar(config.train.steps as u64, &config.name));
    let mut run = ActiveRun::begin(config, dir, lock, device, &evaluator, bar)?;
    for step in 1..=config.train.steps {
        let loss = run.model.step()?;
        run.after_step(&evaluator, step, loss)?;
    }
    run.complete()
}

/// A run being trained: its locked directory, model, data stream and metrics so far.
struct ActiveRun<'a> {
    config: &'a RunConfig,
    dir: PathBuf,
    _lock: crate::runs::RunLock,
    model: SteppedModel,
    metrics: RunMetrics,
    bar: ProgressBar,
    start: Instant,
    /// Sum and count of the training losses since the last evaluation.
    train_losses: (f64, usize),
    /// With `train.snapshots`: the weights kept at every evaluation so far, named
    /// `step-{step}/{parameter}` as in `snapshots.safetensors`.
    snapshots: Vec<(String, Tensor)>,
}

impl<'a> ActiveRun<'a> {
    /// Clears the locked `dir`, writes the config, starts the data stream and evaluates step 0.
    fn begin(
        config: &'a RunConfig,
        dir: PathBuf,
        lock: crate::runs::RunLock,
        device: Device,
        evaluator: &Evaluator,
        bar: ProgressBar,
    ) -> anyhow::Result<Self> {
        crate::runs::begin_training(&dir)?;
        write_atomic(&dir.join("config.toml"), config.to_toml().as_bytes())?;
        let _ = std::fs::remove_file(dir.join("metrics.json"));
        let model = SteppedModel::new(config, device)?;
        let metrics = RunMetrics::started(config, evaluator.references.clone());
        let mut run = Self {
            config,
            dir,
            _lock: lock,
            model,
            metrics,
            bar,
            start: Instant::now(),
            train_losses: (0.0, 0),
            snapshots: Vec::new(),
        };
        if !run.checkpoint(evaluator, 0)? {
            return Err(run.diverged("the initial evaluation loss is not finite".into()));
        }
        Ok(run)
    }

    /// Evaluates; keeps the weights and the row only if the evaluation loss is finite.
    fn checkpoint(&mut self, evaluator: &Evaluator, step: usize) -> anyhow::Result<bool> {
        self.model.trainer.sync()?;
        let wall = self.start.elapsed().as_secs_f64();
        let t = &mut self.model.trainer;
        let mut row = match &mut t.fused {
            Some(fused) => evaluator.evaluate_fused(fused, &t.model, &t.vs, step, wall)?,
            None => evaluator.evaluate(&t.model, &t.vs, step, wall)?,
        };
        let (sum, count) = std::mem::take(&mut self.train_losses);
        if self.config.train.task_pool.is_some() && count > 0 {
            row.train_loss = Some(sum / count as f64);
        }
        self.metrics.steps_done = step;
        self.metrics.wall_s = self.start.elapsed().as_secs_f64();
        if diverged_loss(row.loss) {
            return Ok(false);
        }
        with_atomic_path(&self.dir.join("weights.safetensors"), |p| Ok(self.model.trainer.vs.save(p)?))?;
        if self.config.train.snapshots {
            let mut vars: Vec<(String, Tensor)> = self.model.trainer.vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, var) in vars {
                self.snapshots.push((format!("{}{name}", crate::runs::snapshot_prefix(step)), var.detach().copy()));
            }
            with_atomic_path(&self.dir.join(crate::runs::SNAPSHOTS), |p| {
                Ok(Tensor::write_safetensors(&self.snapshots, p)?)
            })?;
        }
        self.metrics.rows.push(row);
        self.metrics.weights_step = step;
        write_json_atomic(&self.dir.join("metrics.json"), &self.metrics)?;
        Ok(true)
    }

    fn diverged(&mut self, what: String) -> anyhow::Error {
        self.metrics.stop_diverged(&self.dir, &self.bar, what)
    }

    /// After training step `step` with training loss `loss`: the divergence check, progress and
    /// the periodic evaluation.
    fn after_step(&mut self, evaluator: &Evaluator, step: usize, loss: f64) -> anyhow::Result<()> {
        let steps = self.config.train.steps;
        if diverged_loss(loss) {
            self.metrics.steps_done = step;
            self.metrics.wall_s = self.start.elapsed().as_secs_f64();
            return Err(self.diverged(format!("training loss is {loss} at step {step}")));
        }
        self.train_losses.0 += loss;
        self.train_losses.1 += 1;
        if step.is_multiple_of(10) || step == steps {
            self.bar.set_position(step as u64);
            self.bar.set_message(format!("loss {loss:.4}"));
        }
        if (step.is_multiple_of(self.config.eval.every) || step == steps) && !self.checkpoint(evaluator, step)? {
            return Err(
                self.diverged(format!("evaluation loss is not finite or above {DIVERGED_LOSS:e} at step {step}"))
            );
        }
        Ok(())
    }

    fn complete(mut self) -> anyhow::Result<RunOutcome> {
        self.metrics.wall_s = self.start.elapsed().as_secs_f64();
        self.metrics.complete(&self.dir, self.config, &self.bar, &self._lock)?;
        Ok(RunOutcome { dir: self.dir, metrics: self.metrics, reused: false })
    }
}

/// Trains several seeds of one config together, one step loop for all: each step takes every
/// seed's batch from its own data stream and steps the seeds' models side by side on `workers`
/// threads. Each seed's computation is the one [`train`] does (the fused engine is deterministic
/// and independent of the thread it runs on), so every run directory is bit for bit what
/// training it alone writes (tested). Needs the fused engine and configs that differ only in
/// `seed`; complete runs are reused as by [`train`]. Returns one outcome per config, in order;
/// a seed that diverges stops with its error while the others go on.
pub fn train_together(
    configs: &[RunConfig],
    runs_root: &Path,
    opts: TrainOptions,
    workers: usize,
    bars: &[ProgressBar],
) -> Vec<anyhow::Result<RunOutcome>> {
    let mut out: Vec<Option<anyhow::Result<RunOutcome>>> = configs.iter().map(|_| None).collect();
    let first = match configs.first() {
        Some(c) => c,
        None => return Vec::new(),
    };
    let same_but_seed = configs.iter().all(|c| RunConfig { seed: first.seed, ..c.clone() } == *first);
    if !same_but_seed || first.engine() != Engine::Fused || first.gpt.is_some() {
        return configs
            .iter()
            .zip(bars)
            .map(|(c, bar)| train(c, runs_root, TrainOptions { progress: Some(bar.clone()), ..opts.clone() }))
            .collect();
    }
    // Each run's lock is taken before its reuse is decided and kept while it trains.
    let mut pending = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let dir = run_dir(runs_root, c);
        let lock = match crate::runs::lock(&dir) {
            Ok(lock) => lock,
            Err(e) => {
                out[i] = Some(Err(e));
                continue;
            }
        };
        match (!opts.force).then(|| reuse_complete_run(&dir, c, &lock)).flatten() {
            Some(metrics) => out[i] = Some(Ok(RunOutcome { dir, metrics, reused: true })),
            None => pending.push((i, lock)),
        }
    }
    if !pending.is_empty() {
        for (i, r) in train_pending(configs, pending, runs_root, opts, workers, bars) {
            out[i] = Some(r);
        }
    }
    out.into_iter().map(|r| r.expect("every config has an outcome")).collect()
}

fn train_pending(
    configs: &[RunConfig],
    pending: Vec<(usize, crate::runs::RunLock)>,
    runs_root: &Path,
    opts: TrainOptions,
    workers: usize,
    bars: &[ProgressBar],
) -> Vec<(usize, anyhow::Result<RunOutcome>)> {
    let setup = || -> anyhow::Result<(Evaluator, rayon::ThreadPool)> {
        tch::set_num_threads(1);
        icl_probes::learners::serial_blas();
        let evaluator = Evaluator::new(&configs[pending[0].0], Device::Cpu, Kind::Float, opts.references.clone())?;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers.clamp(1, pending.len())).build()?;
        Ok((evaluator, pool))
    };
    let (evaluator, pool) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("{e:#}");
            return pending.iter().map(|(i, _)| (*i, Err(anyhow::anyhow!(msg.clone())))).collect();
        }
    };
    let mut done = Vec::new();
    let mut active: Vec<(usize, ActiveRun)> = Vec::new();
    let steps = configs[pending[0].0].train.steps;
    for (i, lock) in pending {
        let c = &configs[i];
        match ActiveRun::begin(c, run_dir(runs_root, c), lock, Device::Cpu, &evaluator, bars[i].clone()) {
            Ok(run) => active.push((i, run)),
            Err(e) => done.push((i, Err(e))),
        }
    }
    for step in 1..=steps {
        // Every seed's step, side by side; then the bookkeeping, in seed order.
        let losses: Vec<anyhow::Result<f64>> = pool.install(|| {
            use rayon::prelude::*;
            active.par_iter_mut().map(|(_, run)| run.model.step()).collect()
        });
        let mut still = Vec::new();
        for ((i, mut run), loss) in active.into_iter().zip(losses) {
            match loss.and_then(|l| run.after_step(&evaluator, step, l)) {
                Ok(()) => still.push((i, run)),
                Err(e) => done.push((i, Err(e))),
            }
        }
        active = still;
        if active.is_empty() {
            break;
        }
    }
    for (i, run) in active {
        done.push((i, run.complete()));
    }
    done
}
