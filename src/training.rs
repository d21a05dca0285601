//! What both trainers share (`train.rs` for von Oswald et al.'s models, `train_gpt.rs` for the
//! GPT-style family of Garg et al.), so that neither imports the other: the divergence rule,
//! global-norm gradient clipping (optax's), progress bars, a run's options and outcome, and the
//! started → diverged | complete transitions of its `metrics.json`.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use tch::{nn, Kind, Tensor};

use crate::config::RunConfig;
use crate::io::write_json_atomic;
use crate::runs::{RunMetrics, RunStatus};

/// A training or evaluation loss above this counts as divergence (the lab's losses are O(1): the
/// zero predictor scores ½·E‖y‖²), like NaN and inf: the run stops and keeps its last good weights.
pub const DIVERGED_LOSS: f64 = 1e10;

/// Whether a loss means the run has diverged (NaN, inf, or above [`DIVERGED_LOSS`]).
pub fn diverged_loss(loss: f64) -> bool {
    !loss.is_finite() || loss > DIVERGED_LOSS
}

impl RunMetrics {
    /// The metrics of a run of `config` that has just started.
    pub fn started(config: &RunConfig, references: Vec<crate::references::Reference>) -> Self {
        Self {
            name: config.name.clone(),
            seed: config.seed,
            status: RunStatus::Running,
            steps_done: 0,
            weights_step: 0,
            wall_s: 0.0,
            device: config.train.device.clone(),
            references,
            rows: Vec::new(),
        }
    }

    /// Marks the run diverged on disk and returns the error that stops it (`what` went wrong; the
    /// weights of the last good evaluation stay in `dir`).
    pub fn stop_diverged(&mut self, dir: &Path, bar: &ProgressBar, what: String) -> anyhow::Error {
        bar.abandon_with_message(format!("diverged ({what})"));
        self.status = RunStatus::Diverged;
        if let Err(e) = write_json_atomic(&dir.join("metrics.json"), self) {
            return e;
        }
        let kept = if self.rows.is_empty() {
            "no evaluation was finite, so no weights were kept".to_string()
        } else {
            format!("the weights of step {} are kept in {}", self.weights_step, dir.display())
        };
        anyhow::anyhow!("training diverged: {what}; {kept}")
    }

    /// Marks the run complete on disk: metrics, then the manifest (written last, under the lock).
    pub fn complete(
        &mut self,
        dir: &Path,
        config: &RunConfig,
        bar: &ProgressBar,
        lock: &crate::runs::RunLock,
    ) -> anyhow::Result<()> {
        self.status = RunStatus::Complete;
        write_json_atomic(&dir.join("metrics.json"), self)?;
        crate::runs::write_manifest(dir, config, self.steps_done, self.weights_step, lock)?;
        bar.finish_with_message(format!("loss {:.4}", self.rows.last().map_or(f64::NAN, |r| r.loss)));
        Ok(())
    }

    /// The reference named `name` (`gd`, `gd++`).
    pub fn reference(&self, name: &str) -> Option<&crate::references::Reference> {
        self.references.iter().find(|r| r.name == name)
    }
}

/// optax's `clip_by_global_norm`: g ← g·c/max(‖g‖, c) over every parameter of `vs`, computed on
/// the device (no sync).
pub fn clip_global_norm(vs: &nn::VarStore, clip: f64) {
    let mut grads: Vec<Tensor> = vs.trainable_variables().iter().map(|v| v.grad()).filter(|g| g.defined()).collect();
    clip_global_norm_of(&mut grads, clip);
}

/// [`clip_global_norm`] of gradients held as tensors (scaled in place). An infinite `clip` is no
/// clipping (`train.grad_clip = inf`; c/max(‖g‖, c) would be inf/inf).
pub fn clip_global_norm_of(grads: &mut [Tensor], clip: f64) {
    if grads.is_empty() || clip.is_infinite() {
        return;
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
        let norm = Tensor::stack(&norms, 0).sum(Kind::Float).sqrt();
        let scale = norm.clamp_min(clip).reciprocal() * clip;
        for g in grads.iter_mut() {
            let _ = g.g_mul_(&scale);
        }
    });
}

#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Retrain even if a complete run with the same config exists.
    pub force: bool,
    /// Show a progress bar (plain `[progress]` lines when stderr is not a terminal).
    pub progress: Option<ProgressBar>,
    /// References fitted for this config's evaluation set, shared by its seeds.
    pub references: Option<Vec<crate::references::Reference>>,
}

/// What `train` produced.
pub struct RunOutcome {
    pub dir: PathBuf,
    pub metrics: RunMetrics,
    /// Whether an existing complete run was reused.
    pub reused: bool,
}

/// The progress bar of one run among several: `<name> s<seed>`, one tick per training step.
pub fn run_progress_bar(config: &RunConfig) -> ProgressBar {
    progress_bar(config.train.steps as u64, &format!("{} s{}", config.name, config.seed))
}

pub fn progress_bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), crate::progress::draw_target());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} steps  {msg}  ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
