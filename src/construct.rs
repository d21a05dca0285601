//! Loading hard-coded constructions (built as named matrices in `icl-probes`) into the same
//! transformer type that is trained, and checking them against the f64 reference learners.
//! Proposition 1 of von Oswald et al. 2023: one linear self-attention layer = one GD step.

use serde::Serialize;
use tch::{nn, Device, Kind};

use icl_probes::construct::gd_construction;
use icl_probes::gd::{self, LeastSquaresStats};

use crate::config::RunConfig;
use crate::layout;
use crate::models::transformer::{load_weights, ForwardOptions, Transformer};
use crate::probe::per_layer_predictions;

/// A model of `config`'s architecture holding the GD construction: parameter layer l does a GD
/// step with learning rate `etas[l]` (one η for a recurrent model).
pub fn gd_model(
    config: &RunConfig,
    etas: &[f64],
    kind: Kind,
    device: Device,
) -> anyhow::Result<(nn::VarStore, Transformer)> {
    anyhow::ensure!(
        etas.len() == config.model.param_layers(),
        "the construction needs one η per parameter layer ({}), got {}",
        config.model.param_layers(),
        etas.len()
    );
    let m = &config.model;
    anyhow::ensure!(
        m.heads == 1
            && !m.softmax
            && !m.first_layer_softmax
            && !m.layer_norm
            && !m.mlp
            && m.tokens == crate::layout::TokenLayout::Constructed
            && m.pos_enc == 0
            && !m.has_feature_map()
            && m.key_size == Some(config.token_width()),
        "the GD construction needs the constructed token layout and one linear attention head with key_size = d+o, no LayerNorm, no MLP"
    );
    let dims = config.dims();
    let (vs, model) = Transformer::new_in_store(&config.model, dims, kind, device);
    load_weights(&vs, &gd_construction(dims.x_dim, dims.y_dim, dims.context_len, etas))?;
    Ok((vs, model))
}

/// Writes a construction as a complete run directory that every command reading runs accepts:
/// `config.toml`, `weights.safetensors`, `metrics.json` (status complete, no training steps)
/// and the manifest, under the directory's lock.
pub fn write_run(dir: &std::path::Path, config: &RunConfig, vs: &nn::VarStore) -> anyhow::Result<()> {
    let lock = crate::runs::lock(dir)?;
    crate::runs::begin_training(dir)?;
    crate::io::write_atomic(&dir.join("config.toml"), config.to_toml().as_bytes())?;
    crate::io::with_atomic_path(&dir.join("weights.safetensors"), |p| Ok(vs.save(p)?))?;
    let metrics = crate::runs::RunMetrics {
        name: config.name.clone(),
        seed: config.seed,
        status: crate::runs::RunStatus::Complete,
        steps_done: 0,
        weights_step: 0,
        wall_s: 0.0,
        device: "cpu".into(),
        references: Vec::new(),
        rows: Vec::new(),
    };
    crate::io::write_json_atomic(&dir.join("metrics.json"), &metrics)?;
    crate::runs::write_manifest(dir, config, 0, 0, &lock)
}

/// What [`check_construction`] holds in memory at once ([`crate::budget`]): the prompts, GD's
/// predictions after every step, and the model's activations in f64 and f32 with every layer's
/// readout kept.
pub fn memory(config: &RunConfig, tasks: usize) -> crate::budget::Budget {
    let dims = config.dims();
    let per_step = tasks as u128 * dims.y_dim as u128 * 8 * (config.model.layers as u128 + 1);
    let mut b = crate::budget::Budget::new();
    b.add("--tasks (prompts)", crate::budget::prompt_bytes(tasks, dims.context_len, dims) * 2)
        .add("--tasks × --layers (GD and model per-layer predictions)", per_step * 3)
        .add(
            "--tasks × --layers (activations in f64 and f32)",
            config.activation_memory(tasks, dims.context_len, true) * 3,
        );
    b
}

/// How far a construction is from GD on random prompts.
#[derive(Clone, Debug, Serialize)]
pub struct ConstructionCheck {
    pub layers: usize,
    pub recurrent: bool,
    pub etas: Vec<f64>,
    pub tasks: usize,
    /// max |ŷ_construction − ŷ_GD| after all layers, in f64 and f32.
    pub max_abs_diff_f64: f64,
    pub max_abs_diff_f32: f64,
    /// The same after each applied layer vs each GD step (f64).
    pub per_layer_max_abs_diff_f64: Vec<f64>,
    /// ½·MSE of the construction and of GD on these prompts.
    pub loss_construction: f64,
    pub loss_gd: f64,
}

pub fn check_construction(
    config: &RunConfig,
    etas: &[f64],
    tasks: usize,
    seed: u64,
) -> anyhow::Result<ConstructionCheck> {
    let layers = config.model.layers;
    let step_etas: Vec<f64> = (0..layers).map(|l| if config.model.recurrent { etas[0] } else { etas[l] }).collect();
    let prompts = crate::rng::prompts(config.task().as_ref(), tasks, seed);
    let stats = LeastSquaresStats::new(&prompts);
    let gd_per_step = gd::predictions_per_step(&stats, &prompts.xq, &step_etas); // (K, B, o)
    let max_diff =
        |a: &ndarray::Array2<f64>, b: ndarray::ArrayView2<f64>| (a - &b).iter().fold(0.0f64, |m, e| m.max(e.abs()));
    let mut out = Vec::new();
    for kind in [Kind::Double, Kind::Float] {
        let (_vs, model) = gd_model(config, etas, kind, Device::Cpu)?;
        let (tokens, _) = layout::tensors(config.model.tokens, &prompts, kind, Device::Cpu);
        out.push(per_layer_predictions(&model, &tokens, ForwardOptions::default())?);
    }
    let per_layer: Vec<f64> =
        out[0].iter().enumerate().map(|(l, p)| max_diff(p, gd_per_step.index_axis(ndarray::Axis(0), l))).collect();
    let last = layers - 1;
    let gd_last = gd_per_step.index_axis(ndarray::Axis(0), last);
    Ok(ConstructionCheck {
        layers,
        recurrent: config.model.recurrent,
        etas: etas.to_vec(),
        tasks,
        max_abs_diff_f64: per_layer[last],
        max_abs_diff_f32: max_diff(&out[1][last], gd_last),
        per_layer_max_abs_diff_f64: per_layer,
        loss_construction: prompts.half_mse(&out[0][last]),
        loss_gd: prompts.half_mse(&gd_last.to_owned()),
    })
}
