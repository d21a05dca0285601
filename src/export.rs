//! `icl-lab activations`: a trained run's activations on fresh prompts, written as one
//! safetensors file that Python reads with `safetensors` + `numpy` (or torch): every entry of the
//! model's activation cache under its hook name (`tokens`, `layers.{l}.attn.pattern`,
//! `layers.{l}.attn.out`, `layers.{l}.resid_post`, …; see [`crate::cache`]), the prompts
//! (`prompt.xs` (B, N, d), `prompt.ys` (B, N, o), `prompt.xq` (B, d), `prompt.yq` (B, o)) and the
//! model's `prediction` (B, o). Tensors keep the run's dtype (f32 for trained runs). The prompts
//! are drawn from the run's own task with `seed` (stream [`EXPORT_STREAM`]), so an export is a
//! function of (run, prompts, seed). `examples/lsa_numpy.py` recomputes the prediction of a
//! von Oswald et al. model from `weights.safetensors` and this file.
//!
//! `icl-lab prompts` writes prompts without a model: a task's prompts for a (seed, stream) and
//! reference learners' predictions on them, in f64, for the Python module's parity tests and any
//! other tool that should see the lab's prompts exactly.

use std::path::{Path, PathBuf};

use ndarray::ArrayViewD;
use tch::{Device, Kind, Tensor};

use crate::cache::ActivationCache;

/// The RNG stream the exported prompts come from.
pub const EXPORT_STREAM: u64 = 7;

/// The file an export writes by default: beside the weights.
pub const DEFAULT_FILE: &str = crate::runs::ACTIVATIONS_FILE;

/// Tensor names with their shapes, as written.
pub type Written = Vec<(String, Vec<i64>)>;

/// Writes the activations of the run in `run_dir` (checked before use) on `prompts` fresh prompts
/// to `out` (atomically; None: [`DEFAULT_FILE`] in the run directory, under its lock) and returns
/// the path and the names written with their shapes.
pub fn export_activations(
    run_dir: &Path,
    prompts: usize,
    seed: u64,
    out: Option<&Path>,
) -> anyhow::Result<(PathBuf, Written)> {
    anyhow::ensure!((1..=100_000).contains(&prompts), "--prompts: must be in 1..=100000 (got {prompts})");
    let run = crate::runs::open_run(run_dir)?;
    let config = &run.config;
    let n = config.dims().context_len;
    let mut budget = crate::budget::Budget::new();
    // Every hook's activations are kept (as a backward pass would), then copied into the file.
    budget.add("--prompts (the activation cache)", config.activation_memory(prompts, n, true) * 2);
    budget.check()?;
    let (vs, model) = crate::runs::load_model(run_dir, config, Device::Cpu)?;
    let kind = vs.variables().values().next().map_or(Kind::Float, |v| v.kind());
    let task = config.task();
    let sample = task.sample(&mut icl_probes::curve::stream_rng(seed, EXPORT_STREAM), prompts);
    let tokens = model.tokens(&sample, kind, Device::Cpu);
    let mut cache = ActivationCache::all();
    let prediction = tch::no_grad(|| model.forward(&tokens, Some(&mut cache)));
    let mut entries = cache_and_prompts(&cache, &sample, kind)?;
    entries.push(("prediction".into(), prediction.detach().contiguous()));
    let path = write_entries(&run, &entries, out, DEFAULT_FILE)?;
    Ok((path, entries.iter().map(|(n, t)| (n.clone(), t.size())).collect()))
}

/// Every activation `cache` recorded under its hook name (sorted by name), then `prompts` as
/// `prompt.xs`, `prompt.ys`, `prompt.xq`, `prompt.yq` in `kind`: the entries of an activations file.
pub fn cache_and_prompts(
    cache: &ActivationCache,
    prompts: &icl_tasks::Prompts,
    kind: Kind,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let mut entries: Vec<(String, Tensor)> = cache
        .names_recorded()
        .map(|name| cache.tensor(name).map(|t| (name.to_string(), t.detach().contiguous())))
        .collect::<anyhow::Result<_>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let as_tensor = |a: ArrayViewD<f64>| crate::layout::array_to_tensor(&a, kind, Device::Cpu);
    entries.push(("prompt.xs".into(), as_tensor(prompts.xs.view().into_dyn())));
    entries.push(("prompt.ys".into(), as_tensor(prompts.ys.view().into_dyn())));
    entries.push(("prompt.xq".into(), as_tensor(prompts.xq.view().into_dyn())));
    entries.push(("prompt.yq".into(), as_tensor(prompts.yq.view().into_dyn())));
    Ok(entries)
}

/// Writes `entries` as one safetensors file: to `out` atomically, or (None) to `default_name` in
/// the run's directory under its lock ([`crate::runs::write_derived`]); returns the path written.
pub fn write_entries(
    run: &crate::runs::CheckedRun,
    entries: &[(String, Tensor)],
    out: Option<&Path>,
    default_name: &str,
) -> anyhow::Result<PathBuf> {
    let write = |p: &Path| Ok(Tensor::write_safetensors(entries, p)?);
    match out {
        Some(path) => {
            crate::io::with_atomic_path(path, write)?;
            Ok(path.to_path_buf())
        }
        None => {
            crate::runs::write_derived(run, default_name, write)?;
            Ok(run.dir.join(default_name))
        }
    }
}

/// What `icl-lab prompts` draws.
#[derive(Clone, Debug)]
pub struct PromptExport {
    pub batch: usize,
    /// Context pairs (default: the task's context length).
    pub n: Option<usize>,
    pub seed: u64,
    pub stream: u64,
    /// Tuning prompts (stream 1 of `seed`) for the learners' open hyperparameters.
    pub tuning_prompts: usize,
}

/// Writes `batch` prompts of `task` from stream `stream` of `seed` (prompt.xs/ys/xq/yq, and
/// prompt.w where the task has it) and each learner's predictions `pred.<label>` (B, o) and, where
/// defined, `sens.<label>` (B, d), all f64, to `out` atomically; returns the entries' names and shapes.
pub fn export_prompts(
    task: &dyn icl_tasks::Task,
    learners: &[icl_tasks::LearnerSpec],
    opts: &PromptExport,
    out: &Path,
) -> anyhow::Result<Vec<(String, Vec<i64>)>> {
    crate::learners::register();
    let n = opts.n.unwrap_or(task.dims().context_len);
    anyhow::ensure!(opts.batch >= 1, "--batch: at least 1 prompt");
    anyhow::ensure!(n <= icl_tasks::MAX_CONTEXT, "--n: at most {} context pairs (got {n})", icl_tasks::MAX_CONTEXT);
    let mut b = crate::budget::Budget::new();
    b.add("--batch × --n (prompts)", crate::budget::prompt_bytes(opts.batch, n, task.dims()) * 2);
    if !learners.is_empty() {
        b.add("--tuning-prompts × --n", crate::budget::prompt_bytes(opts.tuning_prompts, n, task.dims()) * 2);
    }
    b.check()?;
    let prompts = task.sample_n(&mut crate::rng::seeded_rng(opts.seed, opts.stream), opts.batch, n);
    let tuning = (!learners.is_empty())
        .then(|| task.sample_n(&mut crate::rng::seeded_rng(opts.seed, 1), opts.tuning_prompts, n));
    let as_tensor = |a: ArrayViewD<f64>| crate::layout::array_to_tensor(&a, Kind::Double, Device::Cpu);
    let mut entries = vec![
        ("prompt.xs".to_string(), as_tensor(prompts.xs.view().into_dyn())),
        ("prompt.ys".to_string(), as_tensor(prompts.ys.view().into_dyn())),
        ("prompt.xq".to_string(), as_tensor(prompts.xq.view().into_dyn())),
        ("prompt.yq".to_string(), as_tensor(prompts.yq.view().into_dyn())),
    ];
    if let Some(w) = &prompts.w {
        entries.push(("prompt.w".to_string(), as_tensor(w.view().into_dyn())));
    }
    for spec in learners {
        let learner = icl_probes::learner::fit(spec, tuning.as_ref())
            .map_err(|e| anyhow::anyhow!("learner `{}`: {e}", spec.label()))?;
        let p = learner.predict(&prompts).map_err(|e| anyhow::anyhow!("learner `{}`: {e}", spec.label()))?;
        entries.push((format!("pred.{}", spec.label()), as_tensor(p.preds.view().into_dyn())));
        if let Some(sens) = &p.sens {
            entries.push((format!("sens.{}", spec.label()), as_tensor(sens.view().into_dyn())));
        }
    }
    crate::io::with_atomic_path(out, |p| Ok(Tensor::write_safetensors(&entries, p)?))?;
    Ok(entries.iter().map(|(name, t)| (name.clone(), t.size())).collect())
}
