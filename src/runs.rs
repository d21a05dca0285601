//! Run directories: `runs/<name>/seed-<seed>/` holds the resolved `config.toml`, `metrics.json`
//! and `weights.safetensors` of one (config, seed). Loading a run is shared by the CLI, probes,
//! learning curves and figures.

use std::path::Path;

use anyhow::Context;
use tch::{nn, Device};

use crate::config::RunConfig;
use crate::models::{Model, Transformer};

/// Loads a run's final weights into a fresh model on `device`.
pub fn load_run(dir: &Path, config: &RunConfig, device: Device) -> anyhow::Result<(nn::VarStore, Transformer)> {
    let dims = config.dims();
    let (mut vs, model) = Transformer::new_in_store(&config.model, dims, tch::Kind::Float, device);
    let path = dir.join("weights.safetensors");
    vs.load(&path).with_context(|| format!("loading {}", path.display()))?;
    Ok((vs, model))
}

/// Loads a run's final weights into a fresh model of its family (von Oswald et al.'s or
/// GPT-style) on `device`.
pub fn load_model(dir: &Path, config: &RunConfig, device: Device) -> anyhow::Result<(nn::VarStore, Model)> {
    let (mut vs, model) = initial_model(config, device)?;
    let path = dir.join("weights.safetensors");
    vs.load(&path).with_context(|| format!("loading {}", path.display()))?;
    Ok((vs, model))
}

/// A run's model at its initial weights (the untrained control), whichever the family.
pub fn initial_model(config: &RunConfig, device: Device) -> anyhow::Result<(nn::VarStore, Model)> {
    let dims = config.dims();
    match &config.gpt {
        Some(_) => {
            let t = crate::train_gpt::GptTrainer::new(config, dims, device)?;
            Ok((t.vs, Model::Gpt(t.model)))
        }
        None => {
            let t = crate::train::Trainer::new(config, dims, device)?;
            Ok((t.vs, Model::Vo2023(t.model)))
        }
    }
}
