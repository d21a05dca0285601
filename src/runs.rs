//! Run directories: `runs/<name>/seed-<seed>/` holds the resolved `config.toml`, `metrics.json`
//! and `weights.safetensors` of one (config, seed). Loading a run is shared by the CLI, probes,
//! learning curves and figures.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use crate::config::RunConfig;
use crate::models::{Model, Transformer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Complete,
    Diverged,
}

/// The contents of `metrics.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunMetrics {
    pub name: String,
    pub seed: u64,
    pub status: RunStatus,
    /// Steps taken when the file was written.
    pub steps_done: usize,
    /// Step whose weights `weights.safetensors` holds.
    pub weights_step: usize,
    pub wall_s: f64,
    pub device: String,
    /// The reference learners the rows compare against (GD first).
    pub references: Vec<crate::references::Reference>,
    pub rows: Vec<EvalRow>,
}

/// One evaluation of a model during training.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    pub step: usize,
    /// ½·MSE of the model on the evaluation set.
    pub loss: f64,
    /// The model against each of the run's references (`RunMetrics::references`, same order):
    /// preds diff, model diff, model cos.
    pub vs: Vec<VsReference>,
    /// ½·MSE of the interpolated model (A.3), where the architecture allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpolated_loss: Option<f64>,
    /// Runs on a fixed task pool (`train.task_pool`): the mean training-batch loss since the
    /// previous evaluation, i.e. on the pool's tasks with fresh inputs (`loss` is on fresh tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Seconds since training started.
    pub wall_s: f64,
}

/// A model's alignment with one reference learner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VsReference {
    /// The reference's name (`gd`, `gd++`).
    pub learner: String,
    #[serde(flatten)]
    pub alignment: icl_probes::metrics::Alignment,
}

/// Loads a run's final weights into a fresh model on `device`, after [`check_run`].
pub fn load_run(dir: &Path, config: &RunConfig, device: Device) -> anyhow::Result<(nn::VarStore, Transformer)> {
    check_run(dir, config)?;
    let dims = config.dims();
    let (vs, model) = Transformer::new_in_store(&config.model, dims, tch::Kind::Float, device);
    load_weights(&vs, &dir.join("weights.safetensors"))?;
    Ok((vs, model))
}

/// Loads a run's final weights into a fresh model of its family (von Oswald et al.'s or
/// GPT-style) on `device`, after [`check_run`].
pub fn load_model(dir: &Path, config: &RunConfig, device: Device) -> anyhow::Result<(nn::VarStore, Model)> {
    check_run(dir, config)?;
    let (vs, model) = initial_model(config, device)?;
    load_weights(&vs, &dir.join("weights.safetensors"))?;
    Ok((vs, model))
}

/// Loads a safetensors file into `vs`, refusing in one line (naming the file and the tensor) a
/// file that is missing or unreadable, that lacks a parameter or has one too many, whose shapes
/// differ from the model's (weights and config.toml disagree), or that holds NaN or inf.
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> anyhow::Result<()> {
    let stored = read_safetensors(path)?;
    load_tensors(vs, &stored, &path.display().to_string())
}

/// Every tensor of a safetensors file, refusing in one line (naming the file) one that is
/// missing or unreadable.
pub fn read_safetensors(path: &Path) -> anyhow::Result<Vec<(String, tch::Tensor)>> {
    let shown = path.display();
    anyhow::ensure!(path.is_file(), "{shown}: missing");
    tch::Tensor::read_safetensors(path).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        anyhow::anyhow!("{shown}: not a readable safetensors file ({first})")
    })
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

/// A run's model at its initial weights (the untrained control), whichever the family
/// ([`crate::models::initial`]).
pub fn initial_model(config: &RunConfig, device: Device) -> anyhow::Result<(nn::VarStore, Model)> {
    crate::models::initial(config, config.dims(), device)
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
    check_run(dir, config)?;
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

/// The lock of a run directory, held while anything writes to it: training, adopting a run
/// (its manifest) and the files derived from a run (`probe.json`, activations). Released on drop.
pub struct RunLock {
    _file: std::fs::File,
    dir: std::path::PathBuf,
}

impl RunLock {
    /// Fails unless this is the lock of `dir` (a writer must hold the lock of the directory it
    /// writes to, not any lock).
    fn of(&self, dir: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.dir == dir,
            "internal: {} written under the lock of {}",
            dir.display(),
            self.dir.display()
        );
        Ok(())
    }
}

/// Takes the run directory's lock (creating the directory). If another process holds it, says so
/// in one line on stderr and waits for it: what to do with the run (reuse it or train it) is
/// decided once the lock is held, so two processes asking for the same run train it once.
pub fn lock(dir: &Path) -> anyhow::Result<RunLock> {
    let file = lock_file(dir)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            crate::term::warn(&format!(
                "{}: waiting for another icl-lab process that holds its lock (.lock)",
                dir.display()
            ));
            file.lock().with_context(|| format!("locking {}", dir.join(".lock").display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", dir.join(".lock").display()))
        }
    }
    Ok(RunLock { _file: file, dir: dir.to_path_buf() })
}

/// Takes the run directory's lock, or fails in one line if another process holds it (for
/// tests and tools that must not wait).
pub fn try_lock(dir: &Path) -> anyhow::Result<RunLock> {
    let file = lock_file(dir)?;
    let path = dir.join(".lock");
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file, dir: dir.to_path_buf() }),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "{} is in use by another icl-lab process (it holds {}); wait for it or use another --runs folder",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

fn lock_file(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Files that commands derive from a run's weights and keep beside them: `icl-lab probe`'s
/// report, `activations`' export and `intervene`'s output. Training removes them all (they would
/// describe old weights).
pub const PROBE_FILE: &str = "probe.json";
pub const ACTIVATIONS_FILE: &str = "activations.safetensors";
pub const INTERVENED_FILE: &str = "intervened.safetensors";
pub const DERIVED_FILES: &[&str] = &[PROBE_FILE, ACTIVATIONS_FILE, INTERVENED_FILE];

/// Prepares a locked run directory for (re)training: no manifest, no derived files, no partial
/// files left by a killed writer.
pub fn begin_training(dir: &Path) -> anyhow::Result<()> {
    for name in [MANIFEST, SNAPSHOTS].iter().chain(DERIVED_FILES) {
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
    /// `device` when the training batches were drawn on the device (absent: on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::config::DataPath>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_entry(path: &Path) -> anyhow::Result<FileEntry> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileEntry { bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) })
}

/// Writes the manifest of a run that has just completed (after every other file), under the
/// run's lock.
pub fn write_manifest(
    dir: &Path,
    config: &RunConfig,
    steps: usize,
    weights_step: usize,
    lock: &RunLock,
) -> anyhow::Result<()> {
    lock.of(dir)?;
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
        data: (config.train.data == crate::config::DataPath::Device).then_some(crate::config::DataPath::Device),
    };
    crate::io::write_json_atomic(&dir.join(MANIFEST), &manifest)
}

/// Whether the run in `dir` is a complete run of exactly `config`: Ok, or why not (one line).
pub fn verify(dir: &Path, config: &RunConfig) -> Result<Manifest, String> {
    let text = std::fs::read(dir.join(MANIFEST)).map_err(|_| "no manifest.json (not complete)".to_string())?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("manifest.json is not a run's manifest ({e})"))?;
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
            return Err(format!(
                "{name} differs from manifest.json: changed after training ({} bytes, SHA-256 {}…; the manifest says {} bytes, {}…)",
                got.bytes,
                &got.sha256[..12],
                want.bytes,
                &want.sha256[..12]
            ));
        }
    }
    Ok(manifest)
}

/// A run directory that has been checked before use ([`open_run`], [`check_run`]).
#[derive(Clone, Debug)]
pub struct CheckedRun {
    pub dir: std::path::PathBuf,
    /// The run's own config (`config.toml`).
    pub config: RunConfig,
    pub metrics: RunMetrics,
    pub manifest: Manifest,
}

/// Opens the run in `dir` for reading: its `config.toml` parses, `metrics.json` says complete,
/// and `manifest.json` matches that config and every file of the run (weights included), so
/// nothing was changed, swapped or left half-trained. Anything else is refused in one line
/// naming the directory and the file. Every command that reads a run goes through here.
pub fn open_run(dir: &Path) -> anyhow::Result<CheckedRun> {
    let config_path = dir.join("config.toml");
    if !config_path.is_file() {
        anyhow::ensure!(dir.is_dir(), "{}: no such run directory", dir.display());
        anyhow::bail!("{}: missing (not a run directory)", config_path.display());
    }
    let config = RunConfig::from_file(&config_path)?;
    let metrics_path = dir.join("metrics.json");
    let bytes = std::fs::read(&metrics_path)
        .map_err(|_| anyhow::anyhow!("{}: missing (the run was never trained here)", metrics_path.display()))?;
    let metrics: RunMetrics = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a run's metrics ({e})", metrics_path.display()))?;
    match metrics.status {
        RunStatus::Complete => {}
        RunStatus::Running => anyhow::bail!(
            "{}: not complete (metrics.json says `running`: it is being trained, or its training was stopped at step {}); train it again to complete it",
            dir.display(),
            metrics.steps_done
        ),
        RunStatus::Diverged => anyhow::bail!(
            "{}: diverged at step {} (metrics.json says `diverged`); it is not a trained model",
            dir.display(),
            metrics.steps_done
        ),
    }
    let manifest = verify(dir, &config).map_err(|why| anyhow::anyhow!("{}: {why}", dir.display()))?;
    Ok(CheckedRun { dir: dir.to_path_buf(), config, metrics, manifest })
}

/// [`open_run`], and the run was trained with `config` up to its seed (figures pass the config
/// they trained for every seed): a run of another config in its place is refused.
pub fn check_run(dir: &Path, config: &RunConfig) -> anyhow::Result<CheckedRun> {
    let run = open_run(dir)?;
    anyhow::ensure!(
        RunConfig { seed: run.config.seed, ..config.clone() } == run.config,
        "{}: trained with another config than `{}` asks for (its config.toml differs)",
        dir.display(),
        config.name
    );
    Ok(run)
}

/// Writes a file derived from the checked run (`probe.json`, activations) into its directory:
/// under the run's lock, and only if the run is still the one checked (a run retrained
/// meanwhile would otherwise get a file that describes other weights).
pub fn write_derived(
    run: &CheckedRun,
    name: &str,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let lock = lock(&run.dir)?;
    lock.of(&run.dir)?;
    let now = verify(&run.dir, &run.config).map_err(|why| anyhow::anyhow!("{}: {why}", run.dir.display()))?;
    anyhow::ensure!(now == run.manifest, "{}: retrained while it was read; run the command again", run.dir.display());
    crate::io::with_atomic_path(&run.dir.join(name), write)
}
