//! Model families. One file per family; each publishes named parameters (through its
//! `VarStore`) and records named activations into an [`ActivationCache`](crate::cache::ActivationCache)
//! under the same hook names ([`crate::cache`]).
//!
//! - [`transformer`]: von Oswald et al. 2023 (tokens (xᵢ, yᵢ), prediction at the query only);
//! - [`gpt`]: Garg et al. 2022 / Akyürek et al. 2023 (interleaved x and y tokens, causal, a
//!   prediction at every x).
//!
//! [`Model`] is either, for everything that only runs a model and reads its activations (the
//! learner view, learning curves, probes, the tournament).

pub mod gpt;
pub mod outputs;
pub mod transformer;

pub use gpt::{Gpt, GptConfig};
pub use transformer::Transformer;

use anyhow::Context;
use tch::{nn, Device, Kind, Tensor};

use icl_tasks::{Dims, Prompts};

use crate::cache::ActivationCache;
use crate::config::RunConfig;
use crate::layout::TokenLayout;
use crate::rng::{seeded_rng, INIT_STREAM};

/// A run's model at its initial weights, from (config, seed) alone: what training starts from and
/// the untrained twin every comparison carries. `dims` are the sizes the model is built for (the
/// task's; a curriculum's largest for GPT-style runs).
pub fn initial(config: &RunConfig, dims: Dims, device: Device) -> anyhow::Result<(nn::VarStore, Model)> {
    let vs = nn::VarStore::new(device);
    let model = match &config.gpt {
        Some(gpt) => {
            let model = Gpt::new(&vs.root(), gpt, dims);
            Gpt::init(&vs, gpt.layers, &mut seeded_rng(config.seed, INIT_STREAM));
            Model::Gpt(model)
        }
        None => {
            let model = Transformer::new(&vs.root(), &config.model, dims);
            let init_scale = config.model.init_scale.context("resolved config")?;
            Transformer::init(&vs, init_scale, &mut seeded_rng(config.seed, INIT_STREAM));
            model.load_fixed_attention(&vs)?;
            Model::Vo2023(model)
        }
    };
    Ok((vs, model))
}

/// A model of any family.
#[derive(Debug)]
pub enum Model {
    Vo2023(Transformer),
    Gpt(Gpt),
}

impl Model {
    /// Number of applied layers (readouts after layer 1…layers).
    pub fn layers(&self) -> usize {
        match self {
            Model::Vo2023(m) => m.config().layers,
            Model::Gpt(m) => m.config().layers,
        }
    }

    pub fn dims(&self) -> Dims {
        match self {
            Model::Vo2023(m) => m.dims(),
            Model::Gpt(m) => m.dims(),
        }
    }

    /// How prompts become this model's tokens.
    pub fn layout(&self) -> TokenLayout {
        match self {
            Model::Vo2023(m) => m.config().tokens,
            Model::Gpt(_) => TokenLayout::Classic,
        }
    }

    /// `prompts` as this model's tokens (B, T, width) in `kind` on `device`. Either way the query
    /// token is last and its first d entries are x_q.
    pub fn tokens(&self, prompts: &Prompts, kind: Kind, device: Device) -> Tensor {
        crate::layout::tensors(self.layout(), prompts, kind, device).0
    }

    /// The prediction at the query, (B, o), recording activations the cache asks for.
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut ActivationCache>) -> Tensor {
        match self {
            Model::Vo2023(m) => m.forward(tokens, cache),
            Model::Gpt(m) => m.forward(tokens, cache),
        }
    }

    /// The family's one readout of a residual stream (B, T, D) at the query → (B, o).
    pub fn readout(&self, h: &Tensor) -> Tensor {
        match self {
            Model::Vo2023(m) => m.readout(h),
            Model::Gpt(m) => m.readout(h),
        }
    }

    /// The von Oswald et al. model, for the analyses that only apply to it (weight products,
    /// the construction's statement about tokens).
    pub fn as_vo2023(&self) -> Option<&Transformer> {
        match self {
            Model::Vo2023(m) => Some(m),
            Model::Gpt(_) => None,
        }
    }

    /// The von Oswald et al. model by value (its trainer's).
    pub fn into_vo2023(self) -> Option<Transformer> {
        match self {
            Model::Vo2023(m) => Some(m),
            Model::Gpt(_) => None,
        }
    }

    /// The GPT-style model by value (its trainer's).
    pub fn into_gpt(self) -> Option<Gpt> {
        match self {
            Model::Gpt(m) => Some(m),
            Model::Vo2023(_) => None,
        }
    }
}

impl From<Transformer> for Model {
    fn from(m: Transformer) -> Self {
        Model::Vo2023(m)
    }
}

impl From<Gpt> for Model {
    fn from(m: Gpt) -> Self {
        Model::Gpt(m)
    }
}
