//! A model's answers as f64 arrays: predictions and ∂ŷ/∂x_q by autograd on the input tokens, for
//! the evaluator during training and every measurement after it.

use ndarray::{Array2, Ix2};
use tch::Tensor;

use crate::cache::tensor_to_array;
use crate::models::transformer::{ForwardOptions, Transformer};

/// A model's answers on a batch: predictions (B, o) and ∂ŷ_last/∂x_q (B, d).
pub struct ModelOutputs {
    pub preds: Array2<f64>,
    pub sens: Array2<f64>,
}

pub fn outputs_with_sensitivity(model: &Transformer, tokens: &Tensor) -> anyhow::Result<ModelOutputs> {
    outputs_and_sensitivity(|t| model.forward(t, None), model.dims(), tokens)
}

/// [`outputs_with_sensitivity`] for a model of any family.
pub fn model_outputs(model: &crate::models::Model, tokens: &Tensor) -> anyhow::Result<ModelOutputs> {
    outputs_and_sensitivity(|t| model.forward(t, None), model.dims(), tokens)
}

/// Predictions (B, o) of `forward` and ∂ŷ_last/∂x_q by autograd (the query token is last in every
/// layout and its first d entries are x_q).
fn outputs_and_sensitivity(
    forward: impl Fn(&Tensor) -> Tensor,
    dims: icl_tasks::Dims,
    tokens: &Tensor,
) -> anyhow::Result<ModelOutputs> {
    let d = dims.x_dim as i64;
    let o = dims.y_dim as i64;
    let input = tokens.detach().set_requires_grad(true);
    let preds = forward(&input); // (B, o)
                                 // Each prompt's prediction depends only on its own tokens, so the gradient of the sum gives
                                 // every prompt's sensitivity at once.
    let total = preds.select(1, o - 1).sum(preds.kind());
    let grads = Tensor::run_backward(&[&total], &[&input], false, false);
    let sens = grads[0].select(1, -1).narrow(1, 0, d); // query token's x-entries: (B, d)
    Ok(ModelOutputs {
        preds: tensor_to_array(&preds)?.into_dimensionality::<Ix2>()?,
        sens: tensor_to_array(&sens)?.into_dimensionality::<Ix2>()?,
    })
}

pub fn predictions(model: &Transformer, tokens: &Tensor, opts: ForwardOptions) -> anyhow::Result<Array2<f64>> {
    let preds = tch::no_grad(|| model.forward_with(tokens, None, opts));
    Ok(tensor_to_array(&preds)?.into_dimensionality::<Ix2>()?)
}
