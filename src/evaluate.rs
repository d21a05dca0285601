//! Scoring a model on the fixed evaluation set against its gradient-descent reference
//! (von Oswald et al. 2023, official `train.py: analyse`; spec §1.6): the model's loss, the loss of
//! K-step GD with a tuned constant η, the interpolated model's loss, and the alignment metrics.

use anyhow::Context;
use ndarray::Array2;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use icl_probes::construct::{gd_construction, interpolate};
use icl_probes::gd::{self, LeastSquaresStats, TunedGd};
use icl_probes::metrics::{alignment, Alignment};
use icl_probes::NamedWeights;
use icl_tasks::{Prompts, TaskConfig, TaskRng};

use crate::config::RunConfig;
use crate::layout;
use crate::models::transformer::{load_weights, named_weights, Transformer};
use crate::probe::{outputs_with_sensitivity, predictions};

/// One evaluation of a model during training.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    pub step: usize,
    /// ½·MSE of the model on the evaluation set.
    pub loss: f64,
    /// ½·MSE of K-step GD (K = layers, constant tuned η).
    pub gd_loss: f64,
    /// ½·MSE of the interpolated model (A.3), where the architecture allows it.
    pub interp_loss: Option<f64>,
    /// Model vs GD: preds diff, model diff, model cos.
    pub vs_gd: Alignment,
    /// Seconds since training started.
    pub wall_s: f64,
}

/// Samples `tasks` prompts of `task` from a dedicated seed.
pub fn sample_prompts(task: &TaskConfig, tasks: usize, seed: u64) -> anyhow::Result<Prompts> {
    let task = icl_tasks::build(task)?;
    Ok(task.sample(&mut TaskRng::seed_from_u64(seed), tasks))
}

/// The GD reference for a model config: K = layers steps from W₀ = 0, one η tuned on `prompts`
/// over the official grid.
pub fn tune_gd(config: &RunConfig, prompts: &Prompts, stats: &LeastSquaresStats) -> TunedGd {
    gd::tune_eta(
        prompts,
        stats,
        config.model.layers,
        &gd::official_eta_grid(),
    )
}

/// Whether the A.3 interpolation applies: one recurrent linear-attention head, attention only.
pub fn interpolation_applies(config: &RunConfig) -> bool {
    let m = &config.model;
    m.heads == 1
        && !m.softmax
        && !m.layer_norm
        && !m.mlp
        && m.recurrent
        && m.token_clip.is_none()
        && m.key_size == Some(config.token_width())
}

pub struct Evaluator {
    pub prompts: Prompts,
    tokens: Tensor,
    pub gd: TunedGd,
    gd_preds: Array2<f64>,
    gd_sens: Array2<f64>,
    construction: NamedWeights,
    interp: Option<(nn::VarStore, Transformer)>,
}

impl Evaluator {
    pub fn new(config: &RunConfig, device: Device, kind: Kind) -> anyhow::Result<Self> {
        let prompts = sample_prompts(&config.task, config.eval.tasks, config.eval.seed)?;
        let stats = LeastSquaresStats::new(&prompts);
        let gd = tune_gd(config, &prompts, &stats);
        let w = gd::gd_weights(&stats, &vec![gd.eta; config.model.layers])
            .pop()
            .context("layers >= 1")?;
        let (tokens, _) = layout::tensors(&prompts, kind, device);
        let t = &config.task;
        let construction = gd_construction(t.x_dim, t.y_dim, t.context_len, &[gd.eta]);
        let interp = interpolation_applies(config).then(|| {
            let mut vs = nn::VarStore::new(device);
            let model = Transformer::new(
                &vs.root(),
                &config.model,
                icl_tasks::build(t).expect("checked").dims(),
            );
            vs.set_kind(kind);
            (vs, model)
        });
        Ok(Self {
            gd_preds: gd::predict(&w, &prompts.xq),
            gd_sens: gd::sensitivity(&w),
            prompts,
            tokens,
            gd,
            construction,
            interp,
        })
    }

    pub fn evaluate(
        &self,
        model: &Transformer,
        vs: &nn::VarStore,
        step: usize,
        wall_s: f64,
    ) -> anyhow::Result<EvalRow> {
        let out = outputs_with_sensitivity(model, &self.tokens)?;
        let interp_loss = match &self.interp {
            Some((ivs, imodel)) => {
                let mixed = interpolate(
                    &named_weights(vs)?,
                    &self.construction,
                    model.dims().x_dim,
                    1,
                )?;
                load_weights(ivs, &mixed)?;
                let preds = predictions(imodel, &self.tokens, Default::default())?;
                Some(self.prompts.half_mse(&preds))
            }
            None => None,
        };
        Ok(EvalRow {
            step,
            loss: self.prompts.half_mse(&out.preds),
            gd_loss: self.gd.loss,
            interp_loss,
            vs_gd: alignment(&out.preds, &out.sens, &self.gd_preds, &self.gd_sens),
            wall_s,
        })
    }
}
