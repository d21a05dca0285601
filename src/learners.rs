//! In-context learners that need libtorch, behind the same [`Learner`] interface as the f64
//! reference learners of `icl-probes`:
//!
//! - [`ModelLearner`]: a trained (or constructed) model read out after layer l, through the
//!   activation cache and the model's one readout ([`Model::readout`](crate::models::Model::readout));
//! - the `nn` family: Garg et al. 2022's in-context 2-layer ReLU network baseline, fitted on each
//!   prompt's context by Adam (lr 5e-3, 100 full-batch steps), all prompts at once as a batched
//!   computation (each prompt's loss only reaches its own weights, so this is B independent fits);
//! - [`Reference`], the fitted GD/GD++ of a run, is a learner too.
//!
//! [`register`] adds the `nn` family to the learner registry, so a task can name it.

use std::sync::{Mutex, Once};

use anyhow::Context;
use ndarray::{Array2, Array3, Ix2};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use icl_probes::learner::{
    linear_prediction, parse_spec, register_family, to_params, Learner, LearnerFamily, Prediction,
};
use icl_probes::ProbeError;
use icl_tasks::{LearnerSpec, Params, Prompts};

use crate::cache::{tensor_to_array, ActivationCache};
use crate::config::RunConfig;
use crate::models::Model;
use crate::references::Reference;

/// Adds this crate's learner families (`nn`) to the registry; idempotent.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_family(&NnFamily).expect("`nn` is registered once");
        icl_probes::learners::register_precond_fitter(crate::references::fit_preconditioners_on);
    });
}

fn torch_error(e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Unsupported(format!("libtorch: {e}"))
}

/// A model as an in-context learner: prediction = the readout of the residual stream after
/// `layer` applied layers (None: all, the model's own output).
pub struct ModelLearner {
    /// Run name (or a label for a construction / an untrained control).
    pub run: String,
    pub seed: Option<u64>,
    pub layer: Option<usize>,
    /// Compute ∂ŷ/∂x_q by autograd (one backward pass per call).
    pub sensitivity: bool,
    model: Mutex<(nn::VarStore, Model)>,
}

impl ModelLearner {
    pub fn new(run: &str, seed: Option<u64>, vs: nn::VarStore, model: impl Into<Model>) -> Self {
        Self { run: run.into(), seed, layer: None, sensitivity: true, model: Mutex::new((vs, model.into())) }
    }

    /// Loads a run directory's final weights, whichever the model family (see
    /// [`crate::runs::load_model`]).
    /// The model goes where the run was trained if that device is here (see
    /// [`crate::device::open_or_cpu`]).
    pub fn from_run(dir: &std::path::Path, config: &RunConfig) -> anyhow::Result<Self> {
        let device = crate::device::open_or_cpu(&config.train.device);
        let (vs, model) = crate::runs::load_model(dir, config, device)?;
        Ok(Self::new(&config.name, Some(config.seed), vs, model))
    }

    /// The untrained control of a run: its model at the run's initial weights.
    pub fn untrained(label: &str, config: &RunConfig) -> anyhow::Result<Self> {
        let (vs, model) = crate::runs::initial_model(config, Device::Cpu)?;
        Ok(Self::new(label, Some(config.seed), vs, model))
    }

    /// A trained run's final weights; `config` is the run's (any seed: the architecture is what
    /// matters), the run name and seed come from the run.
    pub fn from_outcome(run: &crate::train::RunOutcome, config: &RunConfig) -> anyhow::Result<Self> {
        let device = crate::device::open_or_cpu(&config.train.device);
        let (vs, model) = crate::runs::load_model(&run.dir, config, device)?;
        Ok(Self::new(&run.metrics.name, Some(run.metrics.seed), vs, model))
    }

    /// The same model read out after `layer` applied layers (1-based).
    pub fn at_layer(mut self, layer: Option<usize>) -> Self {
        self.layer = layer;
        self
    }

    pub fn without_sensitivity(mut self) -> Self {
        self.sensitivity = false;
        self
    }

    /// Runs `f` with the model (the store and the model are behind a lock: tch tensors are not
    /// `Sync`).
    pub fn with_model<T>(&self, f: impl FnOnce(&nn::VarStore, &Model) -> T) -> T {
        let guard = self.model.lock().expect("model lock");
        f(&guard.0, &guard.1)
    }

    /// Runs `f` with the model and `prompts` laid out as its tokens (its layout, dtype and device).
    pub fn with_tokens<T>(&self, prompts: &Prompts, f: impl FnOnce(&Model, &Tensor) -> T) -> T {
        self.with_model(|vs, model| {
            let kind = vs.variables().values().next().map_or(Kind::Float, |v| v.kind());
            f(model, &model.tokens(prompts, kind, vs.device()))
        })
    }

    fn run_model(&self, prompts: &Prompts) -> anyhow::Result<Prediction> {
        self.with_tokens(prompts, |model, tokens| {
            let layers = model.layers();
            let layer = self.layer.unwrap_or(layers);
            anyhow::ensure!(
                (1..=layers).contains(&layer),
                "layer {layer} of a model with {layers} applied layers (layers are 1-based)"
            );
            let input = tokens.detach().set_requires_grad(self.sensitivity);
            let forward = || -> anyhow::Result<Tensor> {
                if layer == layers {
                    return Ok(model.forward(&input, None)); // (B, o)
                }
                let name = crate::cache::resid_post(layer - 1);
                let mut cache = ActivationCache::names(&[name.as_str()]);
                let _ = model.forward(&input, Some(&mut cache));
                Ok(model.readout(cache.tensor(&name)?)) // (B, T, D) → (B, o)
            };
            let preds = if self.sensitivity { forward()? } else { tch::no_grad(forward)? };
            let sens = if self.sensitivity {
                // Each prompt's prediction depends only on its own tokens: the gradient of the sum
                // gives every prompt's ∂ŷ_last/∂x_q (the query token's first d entries).
                let o = preds.size()[1];
                let total = preds.select(1, o - 1).sum(preds.kind());
                let grads = Tensor::run_backward(&[&total], &[&input], false, false);
                let d = prompts.x_dim() as i64;
                Some(tensor_to_array(&grads[0].select(1, -1).narrow(1, 0, d))?.into_dimensionality::<Ix2>()?)
            } else {
                None
            };
            Ok(Prediction { preds: tensor_to_array(&preds)?.into_dimensionality::<Ix2>()?, sens })
        })
    }
}

impl Learner for ModelLearner {
    fn name(&self) -> &str {
        "model"
    }
    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert("run".into(), self.run.clone().into());
        if let Some(l) = self.layer {
            p.insert("layer".into(), l.into());
        }
        p
    }
    fn predict(&self, prompts: &Prompts) -> Result<Prediction, ProbeError> {
        self.run_model(prompts).map_err(|e| ProbeError::Unsupported(format!("{e:#}")))
    }
    fn label(&self) -> String {
        match self.layer {
            Some(l) => format!("{} (layer {l})", self.run),
            None => self.run.clone(),
        }
    }
}

impl Learner for Reference {
    fn name(&self) -> &str {
        &self.name
    }
    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert("steps".into(), self.etas.len().into());
        p.insert("etas".into(), self.etas.clone().into());
        if self.name == "gd++" {
            p.insert("gammas".into(), self.gammas.clone().into());
        }
        p
    }
    fn weights(&self, prompts: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        Some(Ok(Reference::weights(self, prompts).pop().expect("at least one step")))
    }
    fn predict(&self, prompts: &Prompts) -> Result<Prediction, ProbeError> {
        let w = Reference::weights(self, prompts).pop().expect("at least one step");
        Ok(linear_prediction(&w, &prompts.xq))
    }
    fn label(&self) -> String {
        format!("{} ({} steps)", if self.name == "gd" { "GD" } else { "GD++" }, self.etas.len())
    }
}

/// Garg et al.'s `NeuralNetwork` baseline: in → hidden (ReLU) → 1 with biases, PyTorch's default
/// Linear initialisation U(−1/√fan_in, 1/√fan_in), Adam on the context's mean squared error.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InContextNet {
    pub hidden: usize,
    pub steps: usize,
    pub lr: f64,
    /// Seed of the initial weights (drawn in Rust, so the same on every device).
    pub seed: u64,
}

impl Default for InContextNet {
    fn default() -> Self {
        Self { hidden: 100, steps: 100, lr: 5e-3, seed: 0 }
    }
}

pub struct NnFamily;

impl LearnerFamily for NnFamily {
    fn name(&self) -> &'static str {
        "nn"
    }
    fn about(&self) -> &'static str {
        "a 2-layer ReLU net fitted on the context by Adam (Garg et al.'s baseline; lr 5e-3, 100 steps)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let net: InContextNet = parse_spec(spec)?;
        if !(1..=10_000).contains(&net.hidden) || net.steps > 100_000 || !(net.lr.is_finite() && net.lr > 0.0) {
            return Err(ProbeError::InvalidSpec("learner `nn`: hidden in 1..=10000, steps ≤ 100000, lr > 0".into()));
        }
        Ok(Box::new(net))
    }
}

impl InContextNet {
    /// Prompts fitted together: large enough to keep libtorch busy, small enough that the
    /// activations (chunk × n × hidden) stay off the allocator's mmap path.
    const CHUNK: usize = 128;

    fn fit_and_predict(&self, p: &Prompts) -> anyhow::Result<Array2<f64>> {
        anyhow::ensure!(p.y_dim() == 1, "learner `nn` predicts one output");
        let mut rng = crate::rng::seeded_rng(self.seed, 0);
        let mut out = Array2::zeros((p.batch(), 1));
        for start in (0..p.batch()).step_by(Self::CHUNK) {
            let end = (start + Self::CHUNK).min(p.batch());
            let chunk = p.slice(start..end);
            let preds = self.fit_chunk(&chunk, &mut rng)?;
            out.slice_mut(ndarray::s![start..end, ..]).assign(&preds);
        }
        Ok(out)
    }

    /// One independent net per prompt, trained together: in f32, as Garg et al.'s PyTorch baseline.
    fn fit_chunk(&self, p: &Prompts, rng: &mut icl_tasks::TaskRng) -> anyhow::Result<Array2<f64>> {
        let (b, n, d) = (p.batch(), p.context_len(), p.x_dim());
        if n == 0 {
            return Ok(Array2::zeros((b, 1)));
        }
        let h = self.hidden;
        let mut uniform = |count: usize, fan_in: usize| -> Tensor {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let v: Vec<f32> = (0..count).map(|_| rng.random_range(-bound..bound)).collect();
            Tensor::from_slice(&v)
        };
        // (B, d, h), (B, 1, h), (B, h, 1), (B, 1, 1)
        let w1 = uniform(b * d * h, d).view([b as i64, d as i64, h as i64]).set_requires_grad(true);
        let b1 = uniform(b * h, d).view([b as i64, 1, h as i64]).set_requires_grad(true);
        let w2 = uniform(b * h, h).view([b as i64, h as i64, 1]).set_requires_grad(true);
        let b2 = uniform(b, h).view([b as i64, 1, 1]).set_requires_grad(true);
        let params = [w1, b1, w2, b2];
        let f32s = |a: &[f64]| a.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let x =
            Tensor::from_slice(&f32s(p.xs.as_slice().context("standard layout")?)).view([b as i64, n as i64, d as i64]);
        let y = Tensor::from_slice(&f32s(p.ys.as_slice().context("standard layout")?)).view([b as i64, n as i64, 1]);
        let net = |x: &Tensor| (x.matmul(&params[0]) + &params[1]).relu().matmul(&params[2]) + &params[3]; // (B, ·, 1)
                                                                                                           // Adam (β 0.9, 0.999, ε 1e-8) over the batched parameters, as torch.optim.Adam's defaults.
        let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut m: Vec<Tensor> = params.iter().map(|t| t.zeros_like()).collect();
        let mut v: Vec<Tensor> = params.iter().map(|t| t.zeros_like()).collect();
        for step in 1..=self.steps {
            // Sum over prompts of each prompt's mean squared error: prompt b's gradient is its own.
            let loss = (net(&x) - &y).square().mean_dim(1, false, Kind::Float).sum(Kind::Float);
            let grads = Tensor::run_backward(&[&loss], &params.iter().collect::<Vec<_>>(), false, false);
            tch::no_grad(|| {
                let (c1, c2) = (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32));
                for (i, g) in grads.iter().enumerate() {
                    m[i] = &m[i] * beta1 + g * (1.0 - beta1);
                    v[i] = &v[i] * beta2 + g.square() * (1.0 - beta2);
                    let update = (&m[i] / c1) / ((&v[i] / c2).sqrt() + eps) * self.lr;
                    let mut param = params[i].shallow_clone();
                    let _ = param.g_sub_(&update);
                }
            });
        }
        let xq = Tensor::from_slice(&f32s(p.xq.as_slice().context("standard layout")?)).view([b as i64, 1, d as i64]);
        let out = tch::no_grad(|| net(&xq)).view([b as i64, 1]);
        Ok(tensor_to_array(&out)?.into_dimensionality::<Ix2>()?)
    }
}

impl Learner for InContextNet {
    fn name(&self) -> &str {
        "nn"
    }
    fn params(&self) -> Params {
        to_params(self)
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        let preds = self.fit_and_predict(p).map_err(torch_error)?;
        Ok(Prediction { preds, sens: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    #[test]
    fn the_in_context_net_fits_a_line_and_is_seeded() {
        // One prompt, d = 1: y = 2x on 20 points in [−1, 1]; a ReLU net fitted by Adam predicts the
        // line at x = 0.5 (a ReLU net is piecewise linear, so it can represent 2x exactly).
        let xs: Vec<f64> = (0..20).map(|i| -1.0 + 2.0 * i as f64 / 19.0).collect();
        let p = Prompts {
            xs: Array3::from_shape_vec((1, 20, 1), xs.clone()).unwrap(),
            ys: Array3::from_shape_vec((1, 20, 1), xs.iter().map(|x| 2.0 * x).collect()).unwrap(),
            xq: Array2::from_elem((1, 1), 0.5),
            yq: Array2::from_elem((1, 1), 1.0),
            w: None,
        };
        let net = InContextNet { hidden: 32, steps: 500, lr: 0.01, seed: 3 };
        let a = net.predict(&p).unwrap().preds[[0, 0]];
        assert!((a - 1.0).abs() < 0.05, "{a}");
        assert_eq!(a, net.predict(&p).unwrap().preds[[0, 0]], "same seed, same fit");
        // No context: the prediction is 0.
        assert_eq!(net.predict(&p.prefix(0)).unwrap().preds[[0, 0]], 0.0);
    }
}
