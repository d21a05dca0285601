//! The libtorch side of probing: runs a model on prompts and copies what the probes crate needs
//! into f64 arrays. Sensitivities ∂ŷ/∂x_q come from autograd on the input tokens; per-layer
//! readouts come from the activation cache.

use ndarray::{Array2, Ix2};
use tch::Tensor;

use crate::cache::{tensor_to_array, ActivationCache};
use crate::models::transformer::{ForwardOptions, Transformer};

pub use crate::models::outputs::{model_outputs, outputs_with_sensitivity, predictions, ModelOutputs};

/// The prediction read out after every applied layer, (B, o) each: the model's one readout
/// ([`Transformer::readout`]) applied to `layers.{l}.resid_post`.
pub fn per_layer_predictions(
    model: &Transformer,
    tokens: &Tensor,
    opts: ForwardOptions,
) -> anyhow::Result<Vec<Array2<f64>>> {
    let layers = opts.repeats.unwrap_or(model.config().layers);
    let names: Vec<String> = (0..layers).map(crate::cache::resid_post).collect();
    let mut cache = ActivationCache::names(&names);
    let _ = tch::no_grad(|| model.forward_with(tokens, Some(&mut cache), opts));
    names.iter().map(|n| Ok(tensor_to_array(&model.readout(cache.tensor(n)?))?.into_dimensionality::<Ix2>()?)).collect()
}

/// The prediction read out after every applied layer of a model of any family, (B, o) each:
/// the family's one readout applied to `layers.{l}.resid_post`.
pub fn layer_readouts(model: &crate::models::Model, tokens: &Tensor) -> anyhow::Result<Vec<Array2<f64>>> {
    let names: Vec<String> = (0..model.layers()).map(crate::cache::resid_post).collect();
    let mut cache = ActivationCache::names(&names);
    let _ = tch::no_grad(|| model.forward(tokens, Some(&mut cache)));
    names.iter().map(|n| Ok(tensor_to_array(&model.readout(cache.tensor(n)?))?.into_dimensionality::<Ix2>()?)).collect()
}

/// How far the tokens after `layer` applied layers (1-based, read from `layers.{l-1}.resid_post`
/// through the activation cache) are from what the construction says they hold when the model
/// runs `layer` steps of GD++ with (etas, gammas) from W₀ = 0 (γ = 0: GD; von Oswald et al.
/// Prop. 1 and App. A.10): context tokens (x̃ᵢ, yᵢ − W xᵢ) with x̃ᵢ the preconditioned inputs, the
/// query token (M x_q, −W x_q). Returns (max |difference|, ‖difference‖ / ‖expected‖) over all
/// tokens of all prompts. Only for the `constructed` token layout.
pub fn token_residual(
    model: &Transformer,
    tokens: &Tensor,
    prompts: &icl_tasks::Prompts,
    layer: usize,
    etas: &[f64],
    gammas: &[f64],
) -> anyhow::Result<(f64, f64)> {
    anyhow::ensure!(
        model.config().tokens == crate::layout::TokenLayout::Constructed,
        "the construction's statement about tokens is for the constructed layout"
    );
    anyhow::ensure!(etas.len() == layer && gammas.len() == layer, "one (η, γ) per applied layer");
    let name = crate::cache::resid_post(layer - 1);
    let mut cache = ActivationCache::names(&[name.as_str()]);
    let _ = tch::no_grad(|| model.forward(tokens, Some(&mut cache)));
    let actual = cache.array(&name)?.into_dimensionality::<ndarray::Ix3>()?; // (B, N+1, d+o)
    let (n, d) = (prompts.context_len(), prompts.x_dim());
    let (mut max_abs, mut diff_sq, mut norm_sq) = (0.0f64, 0.0, 0.0);
    let mut add = |expected: f64, got: f64| {
        max_abs = max_abs.max((expected - got).abs());
        diff_sq += (expected - got).powi(2);
        norm_sq += expected.powi(2);
    };
    for b in 0..prompts.batch() {
        let xs = prompts.xs.index_axis(ndarray::Axis(0), b);
        let ys = prompts.ys.index_axis(ndarray::Axis(0), b);
        let state = icl_probes::gdpp::trajectory(xs, ys, etas, gammas).pop().expect("layer ≥ 1");
        let token = actual.index_axis(ndarray::Axis(0), b); // (N+1, d+o)
        for i in 0..n {
            for j in 0..d {
                add(state.xs[[i, j]], token[[i, j]]);
            }
            for k in 0..state.ys.ncols() {
                add(state.ys[[i, k]], token[[i, d + k]]);
            }
        }
        let xq = prompts.xq.row(b);
        let mx = state.m.dot(&xq); // (d)
        let wx = state.w.dot(&xq); // (o)
        for j in 0..d {
            add(mx[j], token[[n, j]]);
        }
        for k in 0..wx.len() {
            add(-wx[k], token[[n, d + k]]);
        }
    }
    Ok((max_abs, (diff_sq / norm_sq.max(f64::MIN_POSITIVE)).sqrt()))
}

/// Everything `icl-lab probe` reports about a model, computed on its config's evaluation set.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeReport {
    pub loss: f64,
    /// Loss of the prediction read after each applied layer.
    pub per_layer_loss: Vec<f64>,
    /// GD, and GD++ for models of more than one layer: hyperparameters, alignment, per-step loss.
    pub references: Vec<ReferenceReport>,
    /// The A.3 interpolated model's loss, where the architecture allows it.
    pub interpolated_loss: Option<f64>,
    /// Per parameter layer (single-head models): KQ = W_q W_kᵀ, PV = W_v W_o, and the scale β.
    pub weight_products: Vec<LayerProducts>,
    /// The same config freshly initialised (seed of the run): loss and alignment with GD.
    pub control_untrained: ControlReport,
}

impl ProbeReport {
    /// A few lines for the terminal: the losses, the model against each reference and the
    /// untrained control (preds diff = mean ‖ŷ_model − ŷ_ref‖, model cos = cosine of ∂ŷ/∂x_q).
    pub fn summary(&self, config: &crate::config::RunConfig) -> String {
        let layers: Vec<String> = self.per_layer_loss.iter().map(|l| format!("{l:.4}")).collect();
        let mut out = format!(
            "{} (seed {}): ½·MSE {:.4}; read out after each layer: {}\n",
            config.name,
            config.seed,
            self.loss,
            layers.join(", ")
        );
        for r in &self.references {
            out += &format!(
                "  vs {} ({} step{}, ½·MSE {:.4}): preds diff {:.4}, model cos {:.4}\n",
                r.reference.name,
                r.reference.etas.len(),
                if r.reference.etas.len() == 1 { "" } else { "s" },
                r.reference.loss,
                r.vs.preds_diff,
                r.vs.model_cos
            );
        }
        if let Some(l) = self.interpolated_loss {
            out += &format!("  interpolated model (A.3): ½·MSE {l:.4}\n");
        }
        for p in &self.weight_products {
            out += &format!(
                "  layer {} weights (layers.{}.*) vs the construction: β {:.3}, KQ residual {:.4}, PV residual {:.4}\n",
                p.layer + 1,
                p.layer,
                p.beta,
                p.kq_residual,
                p.pv_residual
            );
        }
        out += &format!(
            "  untrained control: ½·MSE {:.4}, model cos with GD {:.4}",
            self.control_untrained.loss, self.control_untrained.vs_gd.model_cos
        );
        out
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ReferenceReport {
    #[serde(flatten)]
    pub reference: crate::references::Reference,
    /// The model against this reference.
    pub vs: icl_probes::metrics::Alignment,
    /// The reference's loss after each step.
    pub per_step_loss: Vec<f64>,
}

impl ProbeReport {
    pub fn reference(&self, name: &str) -> Option<&ReferenceReport> {
        self.references.iter().find(|r| r.reference.name == name)
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerProducts {
    /// The parameter layer, 0-based as in the parameter names (`layers.0.attn.q`); the terminal
    /// summary numbers layers from 1, as every other output of the lab does.
    pub layer: usize,
    pub beta: f64,
    pub kq: Vec<Vec<f64>>,
    pub pv: Vec<Vec<f64>>,
    /// ‖KQ/β − KQ_GD‖_F and ‖PV·β − PV_GD‖_F against the construction with GD's η.
    pub kq_residual: f64,
    pub pv_residual: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ControlReport {
    pub loss: f64,
    pub vs_gd: icl_probes::metrics::Alignment,
}

/// Probes a model with the parameters in `vs` (built from `config`). References are fitted
/// here (GD; GD++ too for more than one layer of von Oswald et al.'s model) unless given. Weight
/// products and the interpolated model exist for von Oswald et al.'s model only.
pub fn probe_model(
    config: &crate::config::RunConfig,
    vs: &tch::nn::VarStore,
    model: &crate::models::Model,
    references: Option<Vec<crate::references::Reference>>,
) -> anyhow::Result<ProbeReport> {
    use icl_probes::construct::{compare_with_construction, gd_construction, interpolate, kq_scale, weight_products};
    use icl_probes::gd;
    use icl_probes::metrics::alignment;

    let kind = vs.variables().values().next().map_or(tch::Kind::Float, |v| v.kind());
    let device = vs.device();
    let prompts = crate::evaluate::sample_prompts(&config.task, config.eval.tasks, config.eval.seed)?;
    let references = match references {
        Some(r) => r,
        None => {
            let mut c = config.clone();
            c.eval.gdpp = config.gpt.is_none() && config.model.layers > 1;
            crate::references::references_for(&c, &prompts)?
        }
    };
    let tokens = model.tokens(&prompts, kind, device);
    let out = model_outputs(model, &tokens)?;
    let per_layer_loss = layer_readouts(model, &tokens)?.iter().map(|p| prompts.half_mse(p)).collect();
    let mut reports = Vec::new();
    let mut gd_outputs = None;
    for r in &references {
        let steps = r.weights(&prompts);
        let last = steps.last().expect("layers >= 1");
        let (preds, sens) = (gd::predict(last, &prompts.xq), gd::sensitivity(last));
        let vs_ref = alignment(&out.preds, &out.sens, &preds, &sens);
        if gd_outputs.is_none() {
            gd_outputs = Some((preds, sens));
        }
        let per_step_loss = steps.iter().map(|w| prompts.half_mse(&gd::predict(w, &prompts.xq))).collect();
        reports.push(ReferenceReport { reference: r.clone(), vs: vs_ref, per_step_loss });
    }
    let (gd_preds, gd_sens) = gd_outputs.expect("GD is always a reference");

    let t = config.dims();
    let gd_eta = references[0].etas[0];
    let construction = gd_construction(t.x_dim, t.y_dim, t.context_len, &vec![gd_eta; config.model.param_layers()]);
    let trained = crate::models::transformer::named_weights(vs)?;
    let mut weight_products_out = Vec::new();
    let vo2023 = model.as_vo2023();
    if vo2023.is_some() && config.model.heads == 1 {
        for layer in 0..config.model.param_layers() {
            let p = weight_products(&trained, layer)?;
            let c = weight_products(&construction, layer)?;
            let beta = kq_scale(&p, t.x_dim);
            let (kq_residual, pv_residual) = match compare_with_construction(&p, &c, t.x_dim) {
                Ok(cmp) => (cmp.kq_residual, cmp.pv_residual),
                Err(_) => (f64::NAN, f64::NAN), // key_size ≠ token width: no construction to compare with
            };
            let rows = |a: &ndarray::Array2<f64>| a.outer_iter().map(|r| r.to_vec()).collect();
            weight_products_out.push(LayerProducts {
                layer,
                beta,
                kq: rows(&p.kq),
                pv: rows(&p.pv),
                kq_residual,
                pv_residual,
            });
        }
    }
    let interpolated_loss = if vo2023.is_some() && crate::evaluate::interpolation_applies(config) {
        let (ivs, imodel) = Transformer::new_in_store(&config.model, model.dims(), kind, device);
        crate::models::transformer::load_weights(&ivs, &interpolate(&trained, &construction, t.x_dim, 1)?)?;
        Some(prompts.half_mse(&predictions(&imodel, &tokens, ForwardOptions::default())?))
    } else {
        None
    };

    let control = match vo2023 {
        // Drawn directly in the model's dtype (f64 in tests), as before the GPT family existed.
        Some(vo) => {
            let (cvs, control) = Transformer::new_in_store(&config.model, vo.dims(), kind, device);
            Transformer::init(
                &cvs,
                config.model.init_scale.unwrap_or(0.0),
                &mut crate::rng::seeded_rng(config.seed, crate::rng::INIT_STREAM),
            );
            (cvs, crate::models::Model::Vo2023(control))
        }
        None => {
            let (mut cvs, control) = crate::runs::initial_model(config, device)?;
            cvs.set_kind(kind);
            (cvs, control)
        }
    };
    let c_out = model_outputs(&control.1, &tokens)?;

    Ok(ProbeReport {
        loss: prompts.half_mse(&out.preds),
        per_layer_loss,
        references: reports,
        interpolated_loss,
        weight_products: weight_products_out,
        control_untrained: ControlReport {
            loss: prompts.half_mse(&c_out.preds),
            vs_gd: alignment(&c_out.preds, &c_out.sens, &gd_preds, &gd_sens),
        },
    })
}

/// The copy analysis of von Oswald et al. 2023 Fig. 5 (official `analyse_copy`): for each token k
/// (all but the last two), the batch-mean gradient of the sum of the first layer's output at k with
/// respect to every input token, reduced to a norm per input token; then the norm for token k
/// itself (`own`), for k+1 (`next`), and the official average over the rest (`other`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CopyAnalysis {
    pub own: Vec<f64>,
    pub next: Vec<f64>,
    pub other: Vec<f64>,
}

impl CopyAnalysis {
    pub fn means(&self) -> (f64, f64, f64) {
        let m = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        (m(&self.own), m(&self.next), m(&self.other))
    }
}

pub fn copy_analysis(model: &Transformer, tokens: &Tensor) -> anyhow::Result<CopyAnalysis> {
    let input = tokens.detach().set_requires_grad(true);
    let name = crate::cache::resid_post(0);
    let mut cache = ActivationCache::names(&[name.as_str()]);
    let _ = model.forward(&input, Some(&mut cache));
    let first = cache.tensor(&name)?; // (B, T, W')
    let t = first.size()[1];
    let (mut own, mut next, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..t - 2 {
        let target = first.select(1, k).sum(first.kind());
        let grads = Tensor::run_backward(&[&target], &[&input], true, false);
        // (B, T, W) → batch mean (T, W) → norm per input token (T)
        let per_token = grads[0].mean_dim(0, false, grads[0].kind()).norm_scalaropt_dim(2.0, 1, false);
        let g = Vec::<f64>::try_from(&per_token.to_kind(tch::Kind::Double))?;
        let k = k as usize;
        own.push(g[k]);
        next.push(g[k + 1]);
        let rest: f64 = g[..k].iter().sum::<f64>() + g[k + 1..].iter().sum::<f64>();
        other.push(rest / (g.len() - 2) as f64);
    }
    Ok(CopyAnalysis { own, next, other })
}
