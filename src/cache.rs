//! The activation cache: how probes see inside a model (after TransformerLens's `run_with_cache`).
//!
//! `tch` has no forward hooks, so the model's forward pass takes an optional cache and records
//! named activations into it, e.g. `layers.0.attn.out` (B, T, D) or `layers.0.resid_post`
//! (B, T, D). Names mirror parameter paths. Recording is opt-in per name, and recorded tensors
//! keep their autograd graph, so a probe can differentiate an activation with respect to the
//! input tokens. Probes read activations only from here, never from model fields.

use std::collections::BTreeMap;

use anyhow::Context;
use ndarray::ArrayD;
use tch::{Kind, Tensor};

/// The hook names every model family records, per applied layer l (0-based): use these instead of
/// formatting names by hand.
pub const TOKENS: &str = "tokens";
/// (B, T, D): the residual stream entering the first layer, for models with a learned feature map
/// (`model.embed`, `model.input_mlp`).
pub const FEATURES: &str = "features";
/// (B, H, T, N): attention weights of layer l.
pub fn attn_pattern(l: usize) -> String {
    format!("layers.{l}.attn.pattern")
}
/// (B, T, D): what layer l's attention adds to the residual stream.
pub fn attn_out(l: usize) -> String {
    format!("layers.{l}.attn.out")
}
/// (B, T, D): the residual stream between attention and MLP (models with an MLP).
pub fn resid_mid(l: usize) -> String {
    format!("layers.{l}.resid_mid")
}
/// (B, T, D): the residual stream after layer l.
pub fn resid_post(l: usize) -> String {
    format!("layers.{l}.resid_post")
}

pub struct ActivationCache {
    filter: Box<dyn Fn(&str) -> bool>,
    entries: BTreeMap<String, Tensor>,
}

impl ActivationCache {
    /// Records every activation the model names.
    pub fn all() -> Self {
        Self::filtered(|_| true)
    }

    /// Records only the activations named here.
    pub fn names<S: AsRef<str>>(names: &[S]) -> Self {
        let names: Vec<String> = names.iter().map(|n| n.as_ref().to_string()).collect();
        Self::filtered(move |n| names.iter().any(|m| m == n))
    }

    pub fn filtered(filter: impl Fn(&str) -> bool + 'static) -> Self {
        Self { filter: Box::new(filter), entries: BTreeMap::new() }
    }

    /// Whether the model should record `name` (it may skip work it otherwise would not do).
    pub fn wants(&self, name: &str) -> bool {
        (self.filter)(name)
    }

    /// Called by models: stores `value` under `name` if wanted.
    pub fn record(&mut self, name: impl Into<String>, value: &Tensor) {
        let name = name.into();
        if self.wants(&name) {
            self.entries.insert(name, value.shallow_clone());
        }
    }

    pub fn tensor(&self, name: &str) -> anyhow::Result<&Tensor> {
        self.entries.get(name).with_context(|| {
            let names: Vec<_> = self.entries.keys().cloned().collect();
            format!("activation `{name}` was not recorded (have: {})", names.join(", "))
        })
    }

    /// A recorded activation copied out as an f64 array of its shape.
    pub fn array(&self, name: &str) -> anyhow::Result<ArrayD<f64>> {
        tensor_to_array(self.tensor(name)?)
    }

    pub fn names_recorded(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// Copies any tensor to the host as an f64 array of the same shape.
pub fn tensor_to_array(t: &Tensor) -> anyhow::Result<ArrayD<f64>> {
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let flat = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view(-1);
    let data = Vec::<f64>::try_from(&flat)?;
    Ok(ArrayD::from_shape_vec(shape, data)?)
}
