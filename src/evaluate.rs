//! Scoring a model on the fixed evaluation set during training: its loss and, for every reference
//! learner the run compares with (the config decides which), the alignment metrics of von Oswald
//! et al. 2023 (official `train.py: analyse`; spec §1.6); plus the A.3 interpolated model's loss
//! where the architecture allows it. The references' own losses live once in `RunMetrics`.

use ndarray::Array2;
use tch::{nn, Device, Kind, Tensor};

use icl_probes::construct::{gd_construction, interpolate};
use icl_probes::gd::{self, LeastSquaresStats, TunedGd};

use crate::references::{references_for, Reference};
use icl_probes::metrics::{alignment, Alignment};
use icl_probes::NamedWeights;
use icl_tasks::{Prompts, TaskConfig};

use crate::config::RunConfig;
use crate::layout;
use crate::models::outputs::{outputs_with_sensitivity, predictions, ModelOutputs};
use crate::models::transformer::{load_weights, named_weights, Transformer};

pub use crate::runs::{EvalRow, VsReference};

impl EvalRow {
    /// The model's alignment with the reference named `learner`.
    pub fn vs(&self, learner: &str) -> Option<Alignment> {
        self.vs.iter().find(|v| v.learner == learner).map(|v| v.alignment)
    }

    /// The alignment with GD, which every run compares with.
    pub fn vs_gd(&self) -> Alignment {
        self.vs("gd").expect("every run compares with GD")
    }
}

/// Samples `tasks` prompts of `task` from a dedicated seed (see [`crate::rng::prompts`]).
pub fn sample_prompts(task: &TaskConfig, tasks: usize, seed: u64) -> anyhow::Result<Prompts> {
    Ok(crate::rng::prompts(icl_tasks::build(task)?.as_ref(), tasks, seed))
}

/// The GD reference for a model config: K = layers steps from W₀ = 0, one η tuned on `prompts`
/// over the official grid.
pub fn tune_gd(config: &RunConfig, prompts: &Prompts, stats: &LeastSquaresStats) -> TunedGd {
    gd::tune_eta(prompts, stats, config.model.layers, &gd::official_eta_grid())
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
        && !m.first_layer_softmax
        && m.tokens == crate::layout::TokenLayout::Constructed
        && m.pos_enc == 0
        && !m.has_feature_map()
        && m.key_size == Some(config.token_width())
}

pub struct Evaluator {
    pub prompts: Prompts,
    tokens: Tensor,
    /// GD first, then GD++ if compared.
    pub references: Vec<Reference>,
    /// Per reference: final predictions (B, o) and sensitivities (B, d).
    reference_outputs: Vec<(Array2<f64>, Array2<f64>)>,
    construction: NamedWeights,
    interp: Option<(nn::VarStore, Transformer)>,
    /// The evaluation tokens as a host buffer (B, T, D), for models the fused engine evaluates.
    host_tokens: Option<Vec<f32>>,
}

impl Evaluator {
    /// `references`: precomputed for this config's evaluation set (they do not depend on the
    /// seed), or `None` to fit them here.
    pub fn new(
        config: &RunConfig,
        device: Device,
        kind: Kind,
        references: Option<Vec<Reference>>,
    ) -> anyhow::Result<Self> {
        let prompts = sample_prompts(&config.task, config.eval.tasks, config.eval.seed)?;
        let references = match references {
            Some(r) => r,
            None => references_for(config, &prompts)?,
        };
        let reference_outputs = references
            .iter()
            .map(|r| {
                let w = r.weights(&prompts).pop().expect("layers >= 1");
                (gd::predict(&w, &prompts.xq), gd::sensitivity(&w))
            })
            .collect();
        let (tokens, _) = layout::tensors(config.model.tokens, &prompts, kind, device);
        let dims = config.dims();
        let construction = gd_construction(dims.x_dim, dims.y_dim, dims.context_len, &references[0].etas[..1]);
        let interp =
            interpolation_applies(config).then(|| Transformer::new_in_store(&config.model, dims, kind, device));
        let host_tokens = (config.engine() == crate::config::Engine::Fused && config.gpt.is_none())
            .then(|| config.model.tokens.token_buffer(&prompts, |x| x as f32));
        Ok(Self { prompts, tokens, references, reference_outputs, construction, interp, host_tokens })
    }

    /// [`Evaluator::evaluate`] with the predictions and sensitivities computed by the fused
    /// engine (no autograd; the same numbers to float rounding, checked in its tests); `vs` must
    /// hold the same parameters (for the interpolated model).
    pub fn evaluate_fused(
        &self,
        fused: &mut crate::fused_lsa::FusedLsa,
        model: &Transformer,
        vs: &nn::VarStore,
        step: usize,
        wall_s: f64,
    ) -> anyhow::Result<EvalRow> {
        let Some(tokens) = &self.host_tokens else {
            return self.evaluate(model, vs, step, wall_s);
        };
        let (preds, sens) = fused.outputs(tokens);
        let (b, o, d) = (self.prompts.batch(), self.prompts.y_dim(), self.prompts.x_dim());
        let out = ModelOutputs {
            preds: Array2::from_shape_vec((b, o), preds.into_iter().map(f64::from).collect())?,
            sens: Array2::from_shape_vec((b, d), sens.into_iter().map(f64::from).collect())?,
        };
        self.row(out, model, vs, step, wall_s)
    }

    pub fn evaluate(
        &self,
        model: &Transformer,
        vs: &nn::VarStore,
        step: usize,
        wall_s: f64,
    ) -> anyhow::Result<EvalRow> {
        let out = outputs_with_sensitivity(model, &self.tokens)?;
        self.row(out, model, vs, step, wall_s)
    }

    fn row(
        &self,
        out: ModelOutputs,
        model: &Transformer,
        vs: &nn::VarStore,
        step: usize,
        wall_s: f64,
    ) -> anyhow::Result<EvalRow> {
        let interp_loss = match &self.interp {
            Some((ivs, imodel)) => {
                let mixed = interpolate(&named_weights(vs)?, &self.construction, model.dims().x_dim, 1)?;
                load_weights(ivs, &mixed)?;
                let preds = predictions(imodel, &self.tokens, Default::default())?;
                Some(self.prompts.half_mse(&preds))
            }
            None => None,
        };
        let vs = self
            .references
            .iter()
            .zip(&self.reference_outputs)
            .map(|(r, (p, s))| VsReference {
                learner: r.name.clone(),
                alignment: alignment(&out.preds, &out.sens, p, s),
            })
            .collect();
        Ok(EvalRow {
            step,
            loss: self.prompts.half_mse(&out.preds),
            vs,
            interpolated_loss: interp_loss,
            train_loss: None,
            wall_s,
        })
    }
}
