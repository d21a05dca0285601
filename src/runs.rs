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
    let (vs, model) = Transformer::new_in_store(&config.model, dims, tch::Kind::Float, device);
    load_weights(&vs, &dir.join("weights.safetensors"))?;
    Ok((vs, model))
}

/// Loads a run's final weights into a fresh model of its family (von Oswald et al.'s or
/// GPT-style) on `device`.
pub fn load_model(dir: &Path, config: &RunConfig, device: Device) -> anyhow::Result<(nn::VarStore, Model)> {
    let (vs, model) = initial_model(config, device)?;
    load_weights(&vs, &dir.join("weights.safetensors"))?;
    Ok((vs, model))
}

/// Loads a safetensors file into `vs`, refusing in one line (naming the file and the tensor) a
/// file that is missing or unreadable, that lacks a parameter or has one too many, whose shapes
/// differ from the model's (weights and config.toml disagree), or that holds NaN or inf.
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    anyhow::ensure!(path.is_file(), "{shown}: missing");
    let stored = tch::Tensor::read_safetensors(path).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        anyhow::anyhow!("{shown}: not a readable safetensors file ({first})")
    })?;
    load_tensors(vs, &stored, &shown.to_string())
}

/// Copies named tensors into `vs` with the checks of [`load_weights`]; `shown` names their source
/// in errors.
fn load_tensors(vs: &nn::VarStore, stored: &[(String, tch::Tensor)], shown: &str) -> anyhow::Result<()> {
    let mut vars = vs.variables();
    for (name, tensor) in stored {
        let var = vars.get_mut(name).with_context(|| {
            format!(
                "{shown}: holds `{name}`, which this config's model does not have (weights and config.toml disagree)"
            )
        })?;
        anyhow::ensure!(
            var.size() == tensor.size(),
            "{shown}: `{name}` is {:?} but this config's model needs {:?} (weights and config.toml disagree)",
            tensor.size(),
            var.size()
        );
        let finite = tensor.isfinite().all().int64_value(&[]) == 1;
        anyhow::ensure!(finite, "{shown}: `{name}` holds non-finite values (NaN or inf)");
    }
    if let Some(missing) = vars.keys().find(|k| !stored.iter().any(|(n, _)| n == *k)) {
        anyhow::bail!("{shown}: lacks `{missing}` (weights and config.toml disagree)");
    }
    tch::no_grad(|| {
        for (name, tensor) in stored {
            let mut var = vars[name].shallow_clone();
            var.copy_(&tensor.to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
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

// --- Run directories that cannot lie ------------------------------------------------------------
//
// A training process holds `.lock` in its run directory (an exclusive OS file lock: a second
// process on the same run gets a one-line error, never mixed files). `manifest.json` is written
// last, when a run completes: the SHA-256 of its resolved config and the size and SHA-256 of every
// file of the run. A run is reused only if its manifest matches the config asked for and the
// files on disk; training removes the manifest first, so a run killed at any moment is never
// taken for complete. Leftover partial files of a killed writer are removed when training starts,
// and so are `probe.json` and `activations.safetensors`, which would describe old weights.

/// The files a complete run consists of (the manifest lists their sizes and checksums), besides
/// [`SNAPSHOTS`] for runs that keep them; see [`run_files`].
pub const RUN_FILES: &[&str] = &["config.toml", "metrics.json", "weights.safetensors"];
pub const MANIFEST: &str = "manifest.json";
/// The weights at every evaluation step (`train.snapshots`), tensors named
/// `step-{step:07}/{parameter}`.
pub const SNAPSHOTS: &str = "snapshots.safetensors";

/// The files a complete run of `config` consists of.
pub fn run_files(config: &RunConfig) -> Vec<&'static str> {
    let mut files = RUN_FILES.to_vec();
    if config.train.snapshots {
        files.push(SNAPSHOTS);
    }
    files
}

/// The name prefix of the snapshot at `step` in [`SNAPSHOTS`].
pub fn snapshot_prefix(step: usize) -> String {
    format!("step-{step:07}/")
}

/// A run's snapshots (`train.snapshots`), each loaded into a fresh model on `device`, in step order.
pub fn load_snapshots(
    dir: &Path,
    config: &RunConfig,
    device: Device,
) -> anyhow::Result<Vec<(usize, nn::VarStore, Transformer)>> {
    let path = dir.join(SNAPSHOTS);
    anyhow::ensure!(path.is_file(), "{}: missing (was the run trained with train.snapshots = true?)", path.display());
    let stored = tch::Tensor::read_safetensors(&path)
        .map_err(|e| anyhow::anyhow!("{}: not a readable safetensors file ({e})", path.display()))?;
    let mut by_step: std::collections::BTreeMap<usize, Vec<(String, tch::Tensor)>> = Default::default();
    for (name, tensor) in stored {
        let (step, param) = name
            .strip_prefix("step-")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(step, param)| Some((step.parse::<usize>().ok()?, param.to_string())))
            .with_context(|| format!("{}: unexpected tensor name `{name}`", path.display()))?;
        by_step.entry(step).or_default().push((param, tensor));
    }
    let dims = config.dims();
    by_step
        .into_iter()
        .map(|(step, tensors)| {
            let (vs, model) = Transformer::new_in_store(&config.model, dims, tch::Kind::Float, device);
            load_tensors(&vs, &tensors, &format!("{} (step {step})", path.display()))?;
            Ok((step, vs, model))
        })
        .collect()
}

/// The lock of a run directory, held while training writes to it (released on drop).
pub struct RunLock {
    _file: std::fs::File,
}

/// Takes the run directory's lock, or fails in one line if another process holds it.
pub fn lock(dir: &Path) -> anyhow::Result<RunLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "{} is in use by another icl-lab process (it holds {}); wait for it or use another --runs folder",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Prepares a locked run directory for (re)training: no manifest, no derived files, no partial
/// files left by a killed writer.
pub fn begin_training(dir: &Path) -> anyhow::Result<()> {
    for name in [MANIFEST, "probe.json", crate::export::DEFAULT_FILE, SNAPSHOTS] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(name).display()))
            }
            _ => {}
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(".partial-") || name.starts_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`: what a complete run is.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// SHA-256 of the resolved config's TOML.
    pub config_sha256: String,
    pub steps: usize,
    pub weights_step: usize,
    pub files: std::collections::BTreeMap<String, FileEntry>,
    /// The engine that trained the run (absent in manifests from before the fused engine:
    /// libtorch).
    #[serde(default)]
    pub engine: Option<crate::config::Engine>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_entry(path: &Path) -> anyhow::Result<FileEntry> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileEntry { bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) })
}

/// Writes the manifest of a run that has just completed (after every other file).
pub fn write_manifest(dir: &Path, config: &RunConfig, steps: usize, weights_step: usize) -> anyhow::Result<()> {
    let files = run_files(config)
        .iter()
        .map(|f| Ok((f.to_string(), file_entry(&dir.join(f))?)))
        .collect::<anyhow::Result<_>>()?;
    let manifest = Manifest {
        config_sha256: sha256_hex(config.to_toml().as_bytes()),
        steps,
        weights_step,
        files,
        engine: Some(config.engine()),
    };
    crate::io::write_json_atomic(&dir.join(MANIFEST), &manifest)
}

/// Whether the run in `dir` is a complete run of exactly `config`: Ok, or why not (one line).
pub fn verify(dir: &Path, config: &RunConfig) -> Result<Manifest, String> {
    let text = std::fs::read(dir.join(MANIFEST)).map_err(|_| "no manifest (not complete)".to_string())?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| format!("unreadable manifest: {e}"))?;
    if manifest.config_sha256 != sha256_hex(config.to_toml().as_bytes()) {
        return Err("trained with another config".into());
    }
    let trained_by = manifest.engine.unwrap_or(crate::config::Engine::Libtorch);
    if trained_by != config.engine() {
        return Err(format!("trained by the {trained_by:?} engine, this config trains with {:?}", config.engine())
            .to_lowercase());
    }
    for name in run_files(config) {
        let want = manifest.files.get(name).ok_or_else(|| format!("the manifest lacks {name}"))?;
        let got = file_entry(&dir.join(name)).map_err(|_| format!("{name} is missing"))?;
        if got != *want {
            return Err(format!("{name} differs from the manifest ({} bytes, expected {})", got.bytes, want.bytes));
        }
    }
    Ok(manifest)
}
