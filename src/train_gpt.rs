//! Training the GPT-style model of Garg et al. 2022 ([`crate::models::gpt`]): Adam (their lr 1e-4,
//! batch 64), the loss averaged over every x position of the prompt (their `mean_squared_error`
//! of the predictions at all points), fresh prompts every step, and their curriculum (inputs and
//! prompts grow during training; [`crate::config::Curriculum`]).
//!
//! A run directory is the same as for every run (`config.toml`, `metrics.json`,
//! `weights.safetensors`) plus `checkpoint.safetensors`: the weights, Adam's moments and the step,
//! written atomically in one file at every evaluation. A run killed and started again with the
//! same config continues from that checkpoint, and since each step's prompts come from their own
//! RNG stream (`rng::gpt_batch_rng(seed, step)`), it ends bit-identical to an uninterrupted run
//! on CPU. Adam is written out here (a few lines of libtorch ops, PyTorch's formula) because
//! tch's optimiser cannot save its moments.
//!
//! Evaluation rows hold ½·MSE at the query on the fixed evaluation set (the task's full dimension
//! and length), the same loss every other run reports.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use ndarray::{s, Array2, Array3};
use tch::{nn, Device, Kind, Tensor};

use icl_tasks::{Dims, Prompts, Task};

use crate::config::RunConfig;
use crate::evaluate::EvalRow;
use crate::io::{with_atomic_path, write_atomic, write_json_atomic};
use crate::models::Gpt;
use crate::runs::{RunMetrics, RunStatus};
use crate::training::{clip_global_norm_of, diverged_loss, progress_bar, RunOutcome, TrainOptions, DIVERGED_LOSS};

/// Adam's state, in parameter-name order (PyTorch's `torch.optim.Adam`, no weight decay).
///
/// All parameters live in one flat buffer (`flat`, name order): each model parameter is a view of
/// its segment (`Tensor::set_data`), and the moments are flat too, so an update is a handful of
/// element-wise ops over one buffer instead of 9 per parameter (at the quick size, 55 parameters:
/// ~500 small ops per step were most of the update's time). The checkpoint keeps one entry per
/// parameter and moment, as before.
struct Adam {
    names: Vec<String>,
    /// The model's parameters: views of `flat`.
    params: Vec<Tensor>,
    /// (offset, length) of each parameter in `flat`.
    segments: Vec<(i64, i64)>,
    flat: Tensor,
    m: Tensor,
    v: Tensor,
    /// Steps taken.
    t: i64,
}

impl Adam {
    fn new(vs: &nn::VarStore) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let flat =
            tch::no_grad(|| Tensor::cat(&vars.iter().map(|(_, p)| p.detach().reshape([-1])).collect::<Vec<_>>(), 0));
        let mut segments = Vec::with_capacity(vars.len());
        let mut offset = 0;
        for (_, p) in &mut vars {
            let n = p.numel() as i64;
            let shape = p.size();
            // The parameter keeps its identity (the model and the VarStore hold it) and now reads
            // and writes its segment of `flat`.
            p.set_data(&flat.narrow(0, offset, n).view(shape.as_slice()));
            segments.push((offset, n));
            offset += n;
        }
        let (m, v) = (flat.zeros_like(), flat.zeros_like());
        let (names, params) = vars.into_iter().unzip();
        Self { names, params, segments, flat, m, v, t: 0 }
    }

    /// `flat`'s segment of parameter `i`, shaped as the parameter.
    fn segment(&self, flat: &Tensor, i: usize) -> Tensor {
        let (offset, n) = self.segments[i];
        flat.narrow(0, offset, n).view(self.params[i].size().as_slice())
    }

    /// One update from `grads` (same order as the parameters), over the flat buffers.
    fn step(&mut self, grads: &[Tensor], lr: f64, betas: (f64, f64), eps: f64) {
        let g = tch::no_grad(|| Tensor::cat(&grads.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(), 0)); // (P,)
        self.step_flat(&g, lr, betas, eps);
    }

    /// The parameters' lengths, in order.
    fn lengths(&self) -> Vec<usize> {
        self.segments.iter().map(|&(_, n)| n as usize).collect()
    }

    /// One update from the gradient `g` in the flat layout.
    fn step_flat(&mut self, g: &Tensor, lr: f64, (beta1, beta2): (f64, f64), eps: f64) {
        self.t += 1;
        let bias1 = 1.0 - beta1.powi(self.t as i32);
        let bias2 = 1.0 - beta2.powi(self.t as i32);
        tch::no_grad(|| {
            let g = g.shallow_clone();
            let _ = self.m.lerp_(&g, 1.0 - beta1); // m ← β₁m + (1 − β₁)g
            let _ = self.v.g_mul_scalar_(beta2).addcmul_(&g, &(&g * (1.0 - beta2))); // v ← β₂v + (1 − β₂)g²
            let mut denom = self.v.sqrt();
            let _ = denom.g_div_scalar_(bias2.sqrt()).g_add_scalar_(eps); // √v̂ + ε
            let _ = self.flat.addcdiv_(&(&self.m * (-lr / bias1)), &denom);
            // p ← p − lr·m̂/(√v̂ + ε)
        });
    }

    /// Weights, moments and the step as one list of named tensors (one checkpoint file).
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            out.push((format!("param.{name}"), self.params[i].detach().to_device(Device::Cpu)));
            out.push((format!("adam_m.{name}"), self.segment(&self.m, i).to_device(Device::Cpu)));
            out.push((format!("adam_v.{name}"), self.segment(&self.v, i).to_device(Device::Cpu)));
        }
        out.push(("adam_step".into(), Tensor::from_slice(&[self.t])));
        out
    }

    fn restore(&mut self, state: &[(String, Tensor)]) -> anyhow::Result<()> {
        let get =
            |key: &str| state.iter().find(|(n, _)| n == key).map(|(_, t)| t).with_context(|| format!("no `{key}`"));
        tch::no_grad(|| -> anyhow::Result<()> {
            for (i, name) in self.names.iter().enumerate() {
                self.params[i].shallow_clone().copy_(get(&format!("param.{name}"))?);
                self.segment(&self.m, i).copy_(get(&format!("adam_m.{name}"))?);
                self.segment(&self.v, i).copy_(get(&format!("adam_v.{name}"))?);
            }
            Ok(())
        })?;
        self.t = i64::try_from(get("adam_step")?)?;
        Ok(())
    }
}

/// Prompts of a curriculum stage (inputs of `k` ≤ d dimensions) with the inputs padded by zeros to
/// d dimensions (and the hidden weights, where there are any).
pub fn pad_inputs(p: Prompts, d: usize) -> Prompts {
    let (b, n, k) = (p.batch(), p.context_len(), p.x_dim());
    if k == d {
        return p;
    }
    let mut xs = Array3::zeros((b, n, d));
    xs.slice_mut(s![.., .., ..k]).assign(&p.xs);
    let mut xq = Array2::zeros((b, d));
    xq.slice_mut(s![.., ..k]).assign(&p.xq);
    let w = p.w.map(|w| {
        let mut padded = Array3::zeros((b, w.shape()[1], d));
        padded.slice_mut(s![.., .., ..k]).assign(&w);
        padded
    });
    Prompts { xs, ys: p.ys, xq, yq: p.yq, w }
}

/// The batch of training step `step` (1-based): the curriculum's stage of the task, from that
/// step's own RNG stream, inputs padded to the task's dimension.
pub fn training_batch(config: &RunConfig, task: &dyn Task, step: usize) -> anyhow::Result<Prompts> {
    let dims = task.dims();
    let mut rng = crate::rng::gpt_batch_rng(config.seed, step);
    let (k, points) = stage(config, dims, step);
    let prompts = if (k, points) == (dims.x_dim, dims.context_len + 1) {
        task.sample(&mut rng, config.train.batch)
    } else {
        let stage = icl_tasks::build(&config.task.clone().with("x_dim", k).with("context_len", points - 1))?;
        stage.sample(&mut rng, config.train.batch)
    };
    Ok(pad_inputs(prompts, dims.x_dim))
}

/// The targets at every x position (B, P, o) of a batch, row-major f32: the context's ys, then
/// the query's.
fn gpt_targets(p: &Prompts) -> Vec<f32> {
    let (b, n, o) = (p.batch(), p.context_len(), p.y_dim());
    let mut out = Vec::with_capacity(b * (n + 1) * o);
    for i in 0..b {
        out.extend(p.ys.slice(s![i, .., ..]).iter().map(|&y| y as f32));
        out.extend(p.yq.slice(s![i, ..]).iter().map(|&y| y as f32));
    }
    out
}

/// The curriculum's stage at training step `step` (1-based): (input dimensions, points per prompt).
pub fn stage(config: &RunConfig, dims: Dims, step: usize) -> (usize, usize) {
    match &config.curriculum {
        Some(c) => c.at(step - 1, dims),
        None => (dims.x_dim, dims.context_len + 1),
    }
}

/// Tokens (B, 2P − 1, d) and the targets at every x position (B, P, o) of a batch.
fn batch_tensors(p: &Prompts, device: Device) -> (Tensor, Tensor) {
    let tokens = crate::layout::tensors(crate::layout::TokenLayout::Classic, p, Kind::Float, device).0;
    let (b, n, o) = (p.batch() as i64, p.context_len() as i64, p.y_dim() as i64);
    let targets = Tensor::from_slice(&gpt_targets(p)).view([b, n + 1, o]); // (B, n + 1, o)
    (tokens, targets.to_device(device))
}

/// Where a GPT-style step's time goes, summed over `steps` steps (ms): the batch's tokens and
/// targets as tensors, the forward pass with the loss, the backward pass, and clipping plus the
/// Adam update (with reading the loss).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepPhases {
    pub steps: usize,
    pub tokens_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub update_ms: f64,
}

/// A step's stopwatch: each `lap` adds the time since the last one to a phase of `StepPhases`,
/// when timing was asked for (nothing otherwise).
struct Laps<'a> {
    clock: Instant,
    times: Option<&'a mut StepPhases>,
}

impl<'a> Laps<'a> {
    fn new(times: Option<&'a mut StepPhases>) -> Self {
        Self { clock: Instant::now(), times }
    }

    fn lap(&mut self, phase: fn(&mut StepPhases) -> &mut f64) {
        if let Some(t) = self.times.as_deref_mut() {
            let now = Instant::now();
            *phase(t) += (now - self.clock).as_secs_f64() * 1e3;
            self.clock = now;
        }
    }

    /// The step is over: counts it.
    fn finish(self) {
        if let Some(t) = self.times {
            t.steps += 1;
        }
    }
}

/// The model with its parameters and optimiser.
pub struct GptTrainer {
    pub vs: nn::VarStore,
    pub model: Gpt,
    adam: Adam,
    /// With `train.engine = "fused"`: the hand-written step and its gradient buffer.
    fused: Option<(crate::fused_gpt::FusedGpt, Vec<f32>)>,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    grad_clip: f64,
}

impl GptTrainer {
    /// The model at its initial weights (the run's init stream).
    pub fn new(config: &RunConfig, dims: Dims, device: Device) -> anyhow::Result<Self> {
        config.gpt.as_ref().context("a GPT-style config")?;
        let (vs, model) = crate::models::initial(config, dims, device)?;
        let model = model.into_gpt().expect("checked: a GPT-style config");
        let t = &config.train;
        let adam = Adam::new(&vs);
        let fused = if config.engine() == crate::config::Engine::Fused {
            anyhow::ensure!(device == Device::Cpu, "train.engine: \"fused\" trains on the CPU only");
            let gpt = config.gpt.as_ref().context("a GPT-style config")?;
            let step = crate::fused_gpt::FusedGpt::new(&adam.names, &adam.lengths(), gpt, dims)?;
            let grad = vec![0.0; step.parameters()];
            Some((step, grad))
        } else {
            None
        };
        Ok(Self {
            vs,
            model,
            adam,
            fused,
            lr: t.lr,
            betas: (t.beta1, t.beta2),
            eps: t.eps,
            grad_clip: t.grad_clip.context("resolved config")?,
        })
    }

    /// One step on a batch; returns the loss before the update (mean squared error over every x
    /// position, as Garg et al.).
    pub fn step(&mut self, prompts: &Prompts) -> anyhow::Result<f64> {
        self.step_timed(prompts, None)
    }

    /// [`GptTrainer::step`], adding the time of each phase to `times` when given (`icl-lab bench`
    /// reports where a step's time goes).
    pub fn step_timed(&mut self, prompts: &Prompts, times: Option<&mut StepPhases>) -> anyhow::Result<f64> {
        let mut laps = Laps::new(times);
        if self.fused.is_some() {
            let tokens = crate::layout::TokenLayout::Classic.token_buffer(prompts, |x| x as f32);
            let targets = gpt_targets(prompts);
            laps.lap(|t| &mut t.tokens_ms);
            return self.fused_step(&tokens, &targets, prompts.batch(), laps);
        }
        let (tokens, targets) = batch_tensors(prompts, self.vs.device());
        laps.lap(|t| &mut t.tokens_ms);
        self.step_on(&tokens, &targets, laps)
    }

    /// One step on a batch already in tensors on the trainer's device (`train.data = "device"`):
    /// tokens (B, 2P − 1, d) and targets (B, P, o).
    pub fn step_tensors(&mut self, tokens: &Tensor, targets: &Tensor) -> anyhow::Result<f64> {
        self.step_tensors_timed(tokens, targets, None)
    }

    /// [`GptTrainer::step_tensors`], adding each phase's time to `times` when given.
    pub fn step_tensors_timed(
        &mut self,
        tokens: &Tensor,
        targets: &Tensor,
        times: Option<&mut StepPhases>,
    ) -> anyhow::Result<f64> {
        let mut laps = Laps::new(times);
        if self.fused.is_some() {
            let batch = tokens.size()[0] as usize;
            let host = |t: &Tensor| Vec::<f32>::try_from(t.to_device(Device::Cpu).reshape([-1]));
            let (tokens, targets) = (host(tokens)?, host(targets)?);
            laps.lap(|t| &mut t.tokens_ms);
            return self.fused_step(&tokens, &targets, batch, laps);
        }
        self.step_on(tokens, targets, laps)
    }

    /// The libtorch step on tensors: forward, loss, autograd, clipping, Adam.
    fn step_on(&mut self, tokens: &Tensor, targets: &Tensor, mut laps: Laps) -> anyhow::Result<f64> {
        let all = self.model.forward_all(tokens, None); // (B, 2P − 1, o)
        let t = all.size()[1];
        let at_x = all.slice(1, 0, t, 2); // (B, P, o): the predictions at x₁, …, x_q
        let loss = (at_x - targets).square().mean(Kind::Float);
        laps.lap(|t| &mut t.forward_ms);
        // Gradients as fresh tensors (nothing accumulates in .grad, so nothing needs zeroing).
        let mut grads = Tensor::run_backward(&[&loss], &self.adam.params, false, false);
        laps.lap(|t| &mut t.backward_ms);
        clip_global_norm_of(&mut grads, self.grad_clip);
        self.adam.step(&grads, self.lr, self.betas, self.eps);
        let loss = f64::try_from(loss)?;
        laps.lap(|t| &mut t.update_ms);
        laps.finish();
        Ok(loss)
    }

    /// The fused engine's step on host buffers: loss and gradient by [`crate::fused_gpt`] (one
    /// pass, timed as the backward phase), then the same clipping and Adam update.
    fn fused_step(&mut self, tokens: &[f32], targets: &[f32], batch: usize, mut laps: Laps) -> anyhow::Result<f64> {
        let (step, grad) = self.fused.as_mut().expect("checked by the caller");
        let flat = &self.adam.flat;
        let numel = flat.numel();
        assert!(flat.kind() == Kind::Float && flat.device() == Device::Cpu && flat.is_contiguous());
        // SAFETY: `flat` is a live, contiguous f32 CPU tensor of `numel` elements, and nothing
        // writes to it while this slice lives (the update below comes after).
        let params = unsafe { std::slice::from_raw_parts(flat.data_ptr() as *const f32, numel) };
        let loss = step.loss_and_grad(params, tokens, targets, batch, grad)?;
        laps.lap(|t| &mut t.backward_ms);
        let mut grads = [Tensor::from_slice(grad.as_slice())];
        clip_global_norm_of(&mut grads, self.grad_clip);
        self.adam.step_flat(&grads[0], self.lr, self.betas, self.eps);
        laps.lap(|t| &mut t.update_ms);
        laps.finish();
        Ok(loss as f64)
    }

    /// ½·MSE at the query on `prompts`, in chunks.
    pub fn query_loss(&self, prompts: &Prompts) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for start in (0..prompts.batch()).step_by(1024) {
            let chunk = prompts.slice(start..(start + 1024).min(prompts.batch()));
            let tokens =
                crate::layout::tensors(crate::layout::TokenLayout::Classic, &chunk, Kind::Float, self.vs.device()).0;
            let preds = tch::no_grad(|| self.model.forward(&tokens, None));
            let preds = crate::cache::tensor_to_array(&preds)?.into_dimensionality::<ndarray::Ix2>()?;
            total += chunk.half_mse(&preds) * chunk.batch() as f64;
        }
        Ok(total / prompts.batch() as f64)
    }
}

/// Trains (or resumes) the GPT-style run of `config` in `dir` on `device`; see the module docs.
/// [`crate::train::train`] (the one entry point) calls it once a complete run was not found to reuse.
pub(crate) fn train(
    config: &RunConfig,
    dir: PathBuf,
    lock: crate::runs::RunLock,
    device: tch::Device,
    opts: TrainOptions,
) -> anyhow::Result<RunOutcome> {
    let task = config.task();
    let dims = task.dims();
    let eval_prompts = crate::rng::prompts(task.as_ref(), config.eval.tasks, config.eval.seed);
    let mut trainer = GptTrainer::new(config, dims, device)?;
    let checkpoint_path = dir.join("checkpoint.safetensors");
    crate::runs::begin_training(&dir)?;

    // Resume from the checkpoint of an interrupted run with this exact config.
    let mut metrics = RunMetrics::started(config, Vec::new());
    let mut first_step = 1;
    if let Some((state, previous)) = (!opts.force).then(|| resumable(&dir, config)).flatten() {
        trainer.adam.restore(&state)?;
        let done = trainer.adam.t as usize;
        metrics.rows = previous.rows.into_iter().filter(|r| r.step <= done).collect();
        metrics.wall_s = previous.wall_s;
        metrics.steps_done = done;
        metrics.weights_step = done;
        first_step = done + 1;
        crate::warnln!("{}: resuming from the checkpoint of step {done}", config.name);
    } else {
        let _ = std::fs::remove_file(&checkpoint_path);
        write_atomic(&dir.join("config.toml"), config.to_toml().as_bytes())?;
        let _ = std::fs::remove_file(dir.join("metrics.json"));
    }

    let steps = config.train.steps;
    let bar = opts.progress.unwrap_or_else(|| progress_bar(steps as u64, &config.name));
    bar.set_position(first_step as u64 - 1);
    let start = Instant::now();
    let wall_before = metrics.wall_s;
    let checkpoint = |metrics: &mut RunMetrics, trainer: &GptTrainer, step: usize| -> anyhow::Result<bool> {
        let loss = trainer.query_loss(&eval_prompts)?;
        metrics.steps_done = step;
        metrics.wall_s = wall_before + start.elapsed().as_secs_f64();
        if diverged_loss(loss) {
            return Ok(false);
        }
        // One file holds weights, moments and step, so a resume never mixes two steps.
        with_atomic_path(&checkpoint_path, |p| Ok(Tensor::write_safetensors(&trainer.adam.state(), p)?))?;
        with_atomic_path(&dir.join("weights.safetensors"), |p| Ok(trainer.vs.save(p)?))?;
        metrics.rows.push(EvalRow {
            step,
            loss,
            vs: Vec::new(),
            interpolated_loss: None,
            train_loss: None,
            wall_s: metrics.wall_s,
        });
        metrics.weights_step = step;
        write_json_atomic(&dir.join("metrics.json"), metrics)?;
        Ok(true)
    };
    let diverged = |metrics: &mut RunMetrics, what: String| metrics.stop_diverged(&dir, &bar, what);
    if first_step == 1 && !checkpoint(&mut metrics, &trainer, 0)? {
        return Err(diverged(&mut metrics, "the initial evaluation loss is not finite".into()));
    }
    // The training prompts' task: with `train.task_pool`, hidden functions from the run's pool
    // (the config check keeps pools and curricula apart).
    let training = config.training_task();
    let on_device = match config.train.data {
        crate::config::DataPath::Device => Some(crate::device_data::GaussianLinearSampler::for_task(&config.task)?),
        crate::config::DataPath::Host => None,
    };
    for step in first_step..=steps {
        let loss = match &on_device {
            Some(sampler) => {
                let (k, points) = stage(config, dims, step);
                let (tokens, targets) = sampler.gpt_batch(config.seed, step, config.train.batch, k, points, device)?;
                trainer.step_tensors(&tokens, &targets)?
            }
            None => trainer.step(&training_batch(config, training.as_ref(), step)?)?,
        };
        if diverged_loss(loss) {
            metrics.steps_done = step;
            return Err(diverged(&mut metrics, format!("training loss is {loss} at step {step}")));
        }
        if step % 10 == 0 || step == steps {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4}"));
        }
        let evaluate = step % config.eval.every == 0 || step == steps;
        if evaluate && !checkpoint(&mut metrics, &trainer, step)? {
            return Err(diverged(
                &mut metrics,
                format!("evaluation loss is not finite or above {DIVERGED_LOSS:e} at step {step}"),
            ));
        }
    }
    metrics.wall_s = wall_before + start.elapsed().as_secs_f64();
    metrics.complete(&dir, config, &bar, &lock)?;
    Ok(RunOutcome { dir, metrics, reused: false })
}

/// The checkpoint and metrics of an interrupted run of exactly `config`, if there is one.
fn resumable(dir: &Path, config: &RunConfig) -> Option<(Vec<(String, Tensor)>, RunMetrics)> {
    let stored = RunConfig::from_file(&dir.join("config.toml")).ok()?;
    let metrics: RunMetrics = serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).ok()?).ok()?;
    if stored != *config || metrics.status != RunStatus::Running {
        return None;
    }
    let state = Tensor::read_safetensors(dir.join("checkpoint.safetensors")).ok()?;
    Some((state, metrics))
}
