//! Interventions on a model, by hook name through the activation cache, and the model side of
//! the four protocols that test "layer l runs step l of learner L" causally
//! (../shared/reference/interventions-and-bayes.md §2–3; the learner side is
//! `icl_probes::interventions`):
//!
//! - P1 [`knockout`]: skip layer l (the residual stream passes through: its attention and MLP
//!   outputs are zeroed);
//! - P2 [`interchange`]: after layer l, the context tokens' channels S come from another prompt
//!   (von Oswald et al.'s token layout, where Prop. 1 says what those channels hold);
//! - P3 [`patching_map`]: the clean activation at one (layer, position) copied into a run on
//!   corrupted prompts (labels of another task), as the fraction of the loss it recovers;
//! - P4 [`influence`]: the model's smoother ∂ŷ/∂yⱼ by autograd, to compare with each
//!   linear-in-y learner's (`icl_probes::interventions::smoother`).
//!
//! Everything here builds [`Intervention`]s and runs the model's ordinary forward with them, so
//! any model family and any hook the cache records can be intervened on, and a fused-engine run is
//! evaluated through the libtorch forward like any other.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use ndarray::{Array2, Ix2};
use tch::{Kind, Tensor};

use icl_probes::interventions::Channels;
use icl_tasks::Dims;

use crate::cache::{tensor_to_array, ActivationCache, Intervention, Op, TokenSel};
use crate::layout::TokenLayout;
use crate::models::Model;

/// Every hook this model passes activations through on `tokens`, with its shape.
pub fn hook_shapes(model: &Model, tokens: &Tensor) -> BTreeMap<String, Vec<i64>> {
    let mut cache = ActivationCache::all();
    let _ = tch::no_grad(|| model.forward(tokens, Some(&mut cache)));
    cache.names_recorded().map(|n| (n.to_string(), cache.tensor(n).expect("recorded").size())).collect()
}

/// Refuses in one line an intervention at a hook this model does not have (naming the ones it
/// has) or one that does not fit the hook's activation ([`Intervention::check`]).
pub fn check(model: &Model, tokens: &Tensor, interventions: &[Intervention]) -> anyhow::Result<()> {
    let shapes = hook_shapes(model, tokens);
    for i in interventions {
        i.check(shape_of(&shapes, &i.hook)?)?;
    }
    Ok(())
}

/// The shape of `hook` among a model's [`hook_shapes`], refusing an unknown hook in one line that
/// names the ones it has.
fn shape_of<'a>(shapes: &'a BTreeMap<String, Vec<i64>>, hook: &str) -> anyhow::Result<&'a [i64]> {
    let shape = shapes.get(hook).with_context(|| {
        format!("unknown hook `{hook}`: this model has {}", hook_summary(shapes.keys().map(String::as_str)))
    })?;
    Ok(shape)
}

/// Hook names in one line, per-layer names folded (`layers.{0..2}.attn.out`).
pub fn hook_summary<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut folded: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut plain = Vec::new();
    for n in names {
        match n.strip_prefix("layers.").and_then(|r| r.split_once('.')) {
            Some((l, rest)) if l.parse::<usize>().is_ok() => {
                folded.entry(rest.to_string()).or_default().push(l.parse().expect("checked"))
            }
            _ => plain.push(n.to_string()),
        }
    }
    for (rest, ls) in folded {
        let (lo, hi) = (ls.iter().min().expect("≥ 1"), ls.iter().max().expect("≥ 1"));
        plain.push(if lo == hi { format!("layers.{lo}.{rest}") } else { format!("layers.{{{lo}..{hi}}}.{rest}") });
    }
    plain.join(", ")
}

/// The model's predictions (B, o) with `interventions` applied (none: its ordinary forward).
pub fn predict(model: &Model, tokens: &Tensor, interventions: Vec<Intervention>) -> anyhow::Result<Array2<f64>> {
    let mut cache = ActivationCache::none().with_interventions(interventions);
    let preds = tch::no_grad(|| model.forward(tokens, Some(&mut cache)));
    Ok(tensor_to_array(&preds)?.into_dimensionality::<Ix2>()?)
}

/// One activation (the hook's full shape) of the model on `tokens`, optionally under
/// interventions: what `replace` copies from a source run.
pub fn activation(
    model: &Model,
    tokens: &Tensor,
    hook: &str,
    interventions: Vec<Intervention>,
) -> anyhow::Result<Tensor> {
    let mut cache = ActivationCache::names(&[hook]).with_interventions(interventions);
    let _ = tch::no_grad(|| model.forward(tokens, Some(&mut cache)));
    Ok(cache.tensor(hook)?.detach())
}

/// `mean` over a reference batch: the hook's activation on `reference` averaged over prompts,
/// (1, …), as a replacement for every prompt.
pub fn mean_over(model: &Model, reference: &Tensor, hook: &str) -> anyhow::Result<Op> {
    let a = activation(model, reference, hook, Vec::new())?;
    Ok(Op::Replace(a.mean_dim(0, true, a.kind())))
}

/// `resample`: the hook's activation on another batch of the same size (prompt i's from prompt
/// i of `other`, same positions).
pub fn resample_from(model: &Model, other: &Tensor, hook: &str) -> anyhow::Result<Op> {
    Ok(Op::Replace(activation(model, other, hook, Vec::new())?))
}

/// The tensor a `replace`, `add` or `project` op reads from a safetensors file: the entry named
/// after the hook, else the file's only entry, refusing NaN and inf.
pub fn tensor_from_file(path: &Path, hook: &str) -> anyhow::Result<Tensor> {
    let shown = path.display();
    let entries = crate::runs::read_safetensors(path)?;
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let t = match entries.iter().find(|(n, _)| n == hook) {
        Some((_, t)) => t.shallow_clone(),
        None if entries.len() == 1 => entries[0].1.shallow_clone(),
        None => anyhow::bail!("{shown}: no entry `{hook}` (has {}); name it after the hook", names.join(", ")),
    };
    let t = t.to_kind(Kind::Double);
    let bad = t.isfinite().logical_not().any().int64_value(&[]) != 0;
    anyhow::ensure!(!bad, "{shown}: the tensor for `{hook}` holds NaN or inf");
    Ok(t)
}

/// P1: the interventions that skip applied layer `layer` (0-based): its attention output and, in
/// models with one, its MLP output are zeroed, so the residual stream passes through.
pub fn knockout(model: &Model, layer: usize) -> Vec<Intervention> {
    let mut out = vec![Intervention::new(crate::cache::attn_out(layer), Op::Zero)];
    if has_mlp(model) {
        out.push(Intervention::new(crate::cache::mlp_out(layer), Op::Zero));
    }
    out
}

fn has_mlp(model: &Model) -> bool {
    match model {
        Model::Vo2023(m) => m.config().mlp,
        Model::Gpt(_) => true,
    }
}

/// P2: the intervention that, after applied layer `layer` (0-based), takes the context tokens'
/// `channels` from the model's own run on `source` tokens (prompt i from prompt i). Only in von
/// Oswald et al.'s token layout (tokens (xᵢ, yᵢ) with x in the first d channels), where the
/// channels mean what Prop. 1 says.
pub fn interchange(model: &Model, source: &Tensor, layer: usize, channels: Channels) -> anyhow::Result<Intervention> {
    let dims = model.dims();
    anyhow::ensure!(
        model.layout() == TokenLayout::Constructed && model.as_vo2023().is_some_and(|m| !m.config().has_feature_map()),
        "the iterate interchange needs von Oswald et al.'s token layout (tokens (x, y), no feature map)"
    );
    let hook = crate::cache::resid_post(layer);
    let (lo, hi) = channels.range(dims.x_dim, dims.y_dim);
    let op = Op::Replace(activation(model, source, &hook, Vec::new())?);
    Ok(Intervention::new(hook, op).tokens(TokenSel::Context).channels(lo..hi))
}

/// P3's answer: the fraction of the loss recovered, (L_corr − L_patch) / (L_corr − L_clean), per
/// hook (rows: `tokens`, then `layers.{l}.resid_post`) and token position (columns).
#[derive(Clone, Debug)]
pub struct PatchingMap {
    pub hooks: Vec<String>,
    /// (hooks, T).
    pub recovered: Array2<f64>,
    /// ½·MSE on the clean prompts, on the corrupted ones.
    pub loss_clean: f64,
    pub loss_corrupted: f64,
}

/// P3: activation patching. Runs the model on `corrupted` tokens with the activation of the clean
/// run (`clean` tokens) copied in at one hook and one token position at a time; loss against
/// `targets` (the clean prompts' query targets, (B, o)).
pub fn patching_map(
    model: &Model,
    clean: &Tensor,
    corrupted: &Tensor,
    targets: &Tensor,
) -> anyhow::Result<PatchingMap> {
    let loss = |preds: &Tensor| -> f64 { 0.5 * (preds - targets).square().mean(Kind::Double).double_value(&[]) };
    let no_grad_forward = |tokens: &Tensor, iv: Vec<Intervention>| {
        let mut cache = ActivationCache::none().with_interventions(iv);
        tch::no_grad(|| model.forward(tokens, Some(&mut cache)))
    };
    let loss_clean = loss(&no_grad_forward(clean, Vec::new()));
    let loss_corrupted = loss(&no_grad_forward(corrupted, Vec::new()));
    let mut hooks = vec![crate::cache::TOKENS.to_string()];
    hooks.extend((0..model.layers()).map(crate::cache::resid_post));
    let mut cache = ActivationCache::names(&hooks);
    let _ = tch::no_grad(|| model.forward(clean, Some(&mut cache)));
    let t = clean.size()[1] as usize;
    let mut recovered = Array2::zeros((hooks.len(), t));
    let gap = loss_corrupted - loss_clean;
    for (r, hook) in hooks.iter().enumerate() {
        let clean_act = cache.tensor(hook)?.detach();
        for p in 0..t {
            let iv = Intervention::new(hook.clone(), Op::Replace(clean_act.shallow_clone()))
                .tokens(TokenSel::Positions(vec![p]));
            let l = loss(&no_grad_forward(corrupted, vec![iv]));
            recovered[[r, p]] = if gap == 0.0 { f64::NAN } else { (loss_corrupted - l) / gap };
        }
    }
    Ok(PatchingMap { hooks, recovered, loss_clean, loss_corrupted })
}

/// Where context label yⱼ sits in a layout's tokens: (position, first channel).
pub fn label_position(layout: TokenLayout, dims: Dims, j: usize) -> (usize, usize) {
    match layout {
        TokenLayout::Constructed => (j, dims.x_dim),
        TokenLayout::Classic => (2 * j + 1, dims.x_dim - dims.y_dim),
    }
}

/// P4: the model's influence profile ∂ŷ/∂yⱼ (B, N) by autograd on the input tokens, for scalar
/// labels, read out after `layer` applied layers (1-based; None: the model's output), optionally
/// under interventions. For a learner linear in y this is its smoother.
pub fn influence(
    model: &Model,
    tokens: &Tensor,
    layer: Option<usize>,
    interventions: Vec<Intervention>,
) -> anyhow::Result<Array2<f64>> {
    let dims = model.dims();
    anyhow::ensure!(dims.y_dim == 1, "influence profiles are for scalar labels (o = {})", dims.y_dim);
    let layers = model.layers();
    let layer = layer.unwrap_or(layers);
    anyhow::ensure!((1..=layers).contains(&layer), "layer {layer} of a model with {layers} applied layers (1-based)");
    let input = tokens.detach().set_requires_grad(true);
    let preds = if layer == layers {
        let mut cache = ActivationCache::none().with_interventions(interventions);
        model.forward(&input, Some(&mut cache)) // (B, 1)
    } else {
        let name = crate::cache::resid_post(layer - 1);
        let mut cache = ActivationCache::names(&[name.as_str()]).with_interventions(interventions);
        let _ = model.forward(&input, Some(&mut cache));
        model.readout(cache.tensor(&name)?) // (B, T, D) → (B, 1)
    };
    // Each prompt's prediction depends only on its own tokens: one backward gives every prompt's.
    let total = preds.sum(preds.kind());
    let grads = Tensor::run_backward(&[&total], &[&input], false, false);
    let g = tensor_to_array(&grads[0])?; // (B, T, W)
    let n = tokens.size()[1] as usize;
    let n_ctx = match model.layout() {
        TokenLayout::Constructed => n - 1,
        TokenLayout::Classic => (n - 1) / 2,
    };
    let layout = model.layout();
    let b = g.shape()[0];
    let mut s = Array2::zeros((b, n_ctx));
    for j in 0..n_ctx {
        let (pos, ch) = label_position(layout, dims, j);
        for i in 0..b {
            s[[i, j]] = g[[i, pos, ch]];
        }
    }
    Ok(s)
}

/// The RNG streams of `icl-lab intervene`'s prompts: the base batch, the batch `resample` takes
/// activations from, and the reference batch `mean` averages over.
pub const INTERVENE_STREAM: u64 = 11;
pub const RESAMPLE_STREAM: u64 = 12;
pub const MEAN_STREAM: u64 = 13;

/// The file `icl-lab intervene` writes by default: beside the weights.
pub const DEFAULT_FILE: &str = crate::runs::INTERVENED_FILE;

/// One intervention as the command line gives it (resolved against a run by [`resolve`]).
#[derive(Clone, Debug)]
pub struct InterventionArgs {
    pub hook: String,
    /// `zero`, `mean`, `resample`, `replace=FILE`, `add=FILE`, `project-onto=FILE`, `project-out=FILE`.
    pub op: String,
    /// `all`, `context`, `query`, or positions (`0,3,5`, `2..5`).
    pub tokens: String,
    /// `all`, `x`, `y` (von Oswald et al.'s layout), or channels (`0,3`, `0..10`).
    pub channels: String,
}

/// The interventions `args` describe for `model` on `tokens` (the base batch), taking `mean` and
/// `resample` activations from `reference` and `other`; each is checked against the hook's
/// activation ([`check`]) before anything runs.
pub fn resolve(
    model: &Model,
    tokens: &Tensor,
    reference: &Tensor,
    other: &Tensor,
    args: &[InterventionArgs],
) -> anyhow::Result<Vec<Intervention>> {
    let shapes = hook_shapes(model, tokens);
    let dims = model.dims();
    let mut out = Vec::new();
    for a in args {
        let hook = a.hook.as_str();
        let shape = shape_of(&shapes, hook)?;
        let (name, file) = match a.op.split_once('=') {
            Some((n, f)) => (n, Some(Path::new(f))),
            None => (a.op.as_str(), None),
        };
        let needs_file = |f: Option<&'_ Path>| -> anyhow::Result<std::path::PathBuf> {
            Ok(f.with_context(|| format!("--op {name}=FILE: give the safetensors file"))?.to_path_buf())
        };
        let op = match (name, file) {
            ("zero", None) => Op::Zero,
            ("mean", None) => mean_over(model, reference, hook)?,
            ("resample", None) => resample_from(model, other, hook)?,
            ("replace", f) => Op::Replace(tensor_from_file(&needs_file(f)?, hook)?),
            ("add", f) => Op::Add(tensor_from_file(&needs_file(f)?, hook)?),
            ("project-onto", f) => Op::Project { basis: tensor_from_file(&needs_file(f)?, hook)?, keep: true },
            ("project-out", f) => Op::Project { basis: tensor_from_file(&needs_file(f)?, hook)?, keep: false },
            ("zero" | "mean" | "resample", Some(_)) => anyhow::bail!("--op {name} takes no file (got `{}`)", a.op),
            _ => anyhow::bail!(
                "--op: unknown op `{}` (zero, mean, resample, replace=FILE, add=FILE, project-onto=FILE, project-out=FILE)",
                a.op
            ),
        };
        let tokens_sel = TokenSel::parse(&a.tokens)?;
        let mut iv = Intervention::new(hook, op).tokens(tokens_sel);
        match a.channels.trim() {
            "all" => {}
            named @ ("x" | "y") => {
                anyhow::ensure!(
                    model.layout() == TokenLayout::Constructed && hook != crate::cache::FEATURES,
                    "--channels {named}: only in von Oswald et al.'s token layout (give channel numbers)"
                );
                let ch = Channels::from_name(named).expect("x or y");
                let (lo, hi) = ch.range(dims.x_dim, dims.y_dim);
                iv = iv.channels(lo..hi);
            }
            list => iv = iv.channels(crate::cache::parse_indices(list, "--channels")?),
        }
        iv.check(shape)?;
        out.push(iv);
    }
    Ok(out)
}

/// What `icl-lab intervene` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InterveneSummary {
    pub run: String,
    pub seed: u64,
    pub prompts: usize,
    pub prompt_seed: u64,
    pub interventions: Vec<String>,
    /// ½·MSE at the query, clean and intervened, and the change.
    pub loss_clean: f64,
    pub loss_intervened: f64,
    pub loss_change: f64,
    /// Mean |ŷ_intervened − ŷ_clean|.
    pub mean_abs_prediction_change: f64,
    pub file: std::path::PathBuf,
}

impl InterveneSummary {
    pub fn summary(&self) -> String {
        format!(
            "{} (seed {}), {} prompts: {}\n  loss ½·MSE  clean {:.6}  intervened {:.6}  change {:+.6}\n  mean |Δŷ| {:.6}",
            self.run,
            self.seed,
            self.prompts,
            self.interventions.join("; "),
            self.loss_clean,
            self.loss_intervened,
            self.loss_change,
            self.mean_abs_prediction_change
        )
    }
}

/// `icl-lab intervene`: the run in `run_dir` (checked before use) on `prompts` fresh prompts from
/// its task (`seed`), clean and with the interventions; writes every hook's intervened activation
/// (hook names as keys), the prompts, `prediction` and `clean.prediction` to `out` (None:
/// [`DEFAULT_FILE`] in the run directory, under its lock).
pub fn run_intervene(
    run_dir: &Path,
    args: &[InterventionArgs],
    prompts: usize,
    seed: u64,
    out: Option<&Path>,
) -> anyhow::Result<InterveneSummary> {
    anyhow::ensure!(!args.is_empty(), "give at least one --hook with its --op");
    anyhow::ensure!((1..=100_000).contains(&prompts), "--prompts: must be in 1..=100000 (got {prompts})");
    let run = crate::runs::open_run(run_dir)?;
    let config = &run.config;
    let n = config.dims().context_len;
    let mut budget = crate::budget::Budget::new();
    // Three batches' activations (base, resample source, mean reference) and the intervened
    // forward's, every hook kept.
    budget.add("--prompts (four batches' activation caches)", config.activation_memory(prompts, n, true) * 4);
    budget.check()?;
    let (vs, model) = crate::runs::load_model(run_dir, config, tch::Device::Cpu)?;
    let kind = vs.variables().values().next().map_or(Kind::Float, |v| v.kind());
    let task = config.task();
    let draw = |stream| task.sample(&mut icl_probes::curve::stream_rng(seed, stream), prompts);
    let (base, other, reference) = (draw(INTERVENE_STREAM), draw(RESAMPLE_STREAM), draw(MEAN_STREAM));
    let tok = |p| model.tokens(p, kind, tch::Device::Cpu);
    let tokens = tok(&base);
    let interventions = resolve(&model, &tokens, &tok(&reference), &tok(&other), args)?;
    let described: Vec<String> =
        args.iter().map(|a| format!("{} {} (tokens {}, channels {})", a.op, a.hook, a.tokens, a.channels)).collect();
    let clean = tch::no_grad(|| model.forward(&tokens, None));
    let mut cache = ActivationCache::all().with_interventions(interventions);
    let intervened = tch::no_grad(|| model.forward(&tokens, Some(&mut cache)));
    let targets = crate::layout::array2_to_tensor(&base.yq, kind, tch::Device::Cpu);
    let loss = |p: &Tensor| 0.5 * (p - &targets).square().mean(Kind::Double).double_value(&[]);
    let (loss_clean, loss_intervened) = (loss(&clean), loss(&intervened));
    let change = (&intervened - &clean).abs().mean(Kind::Double).double_value(&[]);
    anyhow::ensure!(
        loss_intervened.is_finite(),
        "the intervened forward's loss is not finite ({loss_intervened}): the intervention sends the model out of range"
    );
    let mut entries = crate::export::cache_and_prompts(&cache, &base, kind)?;
    entries.push(("prediction".into(), intervened.detach().contiguous()));
    entries.push(("clean.prediction".into(), clean.detach().contiguous()));
    let file = crate::export::write_entries(&run, &entries, out, DEFAULT_FILE)?;
    Ok(InterveneSummary {
        run: config.name.clone(),
        seed: config.seed,
        prompts,
        prompt_seed: seed,
        interventions: described,
        loss_clean,
        loss_intervened,
        loss_change: loss_intervened - loss_clean,
        mean_abs_prediction_change: change,
        file,
    })
}
