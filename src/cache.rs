//! The activation cache: how probes see inside a model and how interventions change it (after
//! TransformerLens's `run_with_cache` / `run_with_hooks`).
//!
//! `tch` has no forward hooks, so the model's forward pass takes an optional cache and passes
//! every named activation through it, e.g. `layers.0.attn.out` (B, T, D) or
//! `layers.0.resid_post` (B, T, D). Names mirror parameter paths. Recording is opt-in per name,
//! and recorded tensors keep their autograd graph, so a probe can differentiate an activation
//! with respect to the input tokens. Probes read activations only from here, never from model
//! fields.
//!
//! The cache is also the one place a forward can be *changed*: [`Intervention`]s (hook name,
//! token selection, channel selection, [`Op`]) given to [`ActivationCache::with_interventions`]
//! replace the activation at that hook before the model continues from it ([`ActivationCache::hook`]),
//! in the order given; what is recorded is the value the model continued from. With no
//! interventions a hook returns its input untouched, so such a forward is bit-identical to one
//! without a cache (tested).

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

/// (B, T, D): what layer l's MLP adds to the residual stream (models with an MLP).
pub fn mlp_out(l: usize) -> String {
    format!("layers.{l}.mlp.out")
}

/// Which token positions of an activation an intervention changes: the second-to-last axis
/// (T of (B, T, D); the query positions of a pattern (B, H, T, N)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSel {
    All,
    /// Every position but the last (the query is always the last token).
    Context,
    /// The last position.
    Query,
    Positions(Vec<usize>),
}

impl TokenSel {
    /// `all`, `context`, `query`, or positions `0,3,5` / `2..5` (0-based; ranges end-exclusive).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text.trim() {
            "all" => TokenSel::All,
            "context" => TokenSel::Context,
            "query" => TokenSel::Query,
            other => TokenSel::Positions(parse_indices(other, "--tokens")?),
        })
    }

    /// The selected positions of an axis of length `t`.
    pub fn positions(&self, t: usize) -> Vec<usize> {
        match self {
            TokenSel::All => (0..t).collect(),
            TokenSel::Context => (0..t.saturating_sub(1)).collect(),
            TokenSel::Query => t.checked_sub(1).into_iter().collect(),
            TokenSel::Positions(p) => p.clone(),
        }
    }
}

/// `0,3,5`, `2..5` or a mix (`0,4..6`), refusing anything else in one line.
pub fn parse_indices(text: &str, what: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let number = |s: &str| -> anyhow::Result<usize> {
            s.trim().parse::<usize>().map_err(|_| {
                anyhow::anyhow!("{what}: `{part}` is not a position, a range `a..b` or a name (in `{text}`)")
            })
        };
        match part.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                anyhow::ensure!(a < b, "{what}: the range `{part}` is empty");
                out.extend(a..b);
            }
            None => out.push(number(part)?),
        }
    }
    let mut sorted = out.clone();
    sorted.sort_unstable();
    sorted.dedup();
    anyhow::ensure!(sorted.len() == out.len(), "{what}: `{text}` names a position twice");
    Ok(out)
}

/// What an intervention does to the selected entries.
#[derive(Debug)]
pub enum Op {
    /// Set them to 0.
    Zero,
    /// Take them from this tensor, which has the hook's shape or broadcasts to it (a mean over a
    /// reference batch is (1, T, D); another batch's activation is the full shape).
    Replace(Tensor),
    /// Add this tensor (broadcast to the hook's shape).
    Add(Tensor),
    /// Project the channel vectors onto (`keep = true`) or out of the span of the columns of this
    /// basis (D, k), orthonormalised here.
    Project { basis: Tensor, keep: bool },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Zero => "zero",
            Op::Replace(_) => "replace",
            Op::Add(_) => "add",
            Op::Project { keep: true, .. } => "project-onto",
            Op::Project { keep: false, .. } => "project-out",
        }
    }
}

/// A change to one named activation: at `hook`, on the selected tokens and channels, apply `op`.
#[derive(Debug)]
pub struct Intervention {
    pub hook: String,
    pub tokens: TokenSel,
    /// The selected entries of the last axis; `None` = all of them.
    pub channels: Option<Vec<usize>>,
    pub op: Op,
}

impl Intervention {
    pub fn new(hook: impl Into<String>, op: Op) -> Self {
        Self { hook: hook.into(), tokens: TokenSel::All, channels: None, op }
    }

    pub fn tokens(mut self, tokens: TokenSel) -> Self {
        self.tokens = tokens;
        self
    }

    pub fn channels(mut self, channels: impl IntoIterator<Item = usize>) -> Self {
        self.channels = Some(channels.into_iter().collect());
        self
    }

    /// Refuses in one line what would not apply to an activation of `shape` at this hook: a
    /// position or channel out of range, a tensor that does not broadcast to it or is not finite,
    /// a basis of the wrong width, a projection restricted to some channels.
    pub fn check(&self, shape: &[i64]) -> anyhow::Result<()> {
        let hook = &self.hook;
        anyhow::ensure!(shape.len() >= 2, "{hook}: an activation of shape {shape:?} has no token axis");
        let (t, d) = (shape[shape.len() - 2] as usize, shape[shape.len() - 1] as usize);
        for &p in &self.tokens.positions(t) {
            anyhow::ensure!(p < t, "{hook}: token position {p} is out of range (the hook has {t} positions)");
        }
        anyhow::ensure!(!self.tokens.positions(t).is_empty(), "{hook}: the token selection is empty");
        if let Some(ch) = &self.channels {
            anyhow::ensure!(!ch.is_empty(), "{hook}: the channel selection is empty");
            for &c in ch {
                anyhow::ensure!(c < d, "{hook}: channel {c} is out of range (the hook has {d} channels)");
            }
        }
        let finite = |x: &Tensor, what: &str| -> anyhow::Result<()> {
            let bad = x.isfinite().logical_not().any().int64_value(&[]) != 0;
            anyhow::ensure!(!bad, "{hook}: the {what} tensor holds NaN or inf");
            Ok(())
        };
        match &self.op {
            Op::Zero => {}
            Op::Replace(x) | Op::Add(x) => {
                let what = self.op.name();
                let size = x.size();
                let fits = size.len() <= shape.len()
                    && size.iter().rev().zip(shape.iter().rev()).all(|(&a, &b)| a == b || a == 1);
                anyhow::ensure!(
                    fits,
                    "{hook}: the {what} tensor has shape {size:?}, which does not broadcast to the hook's {shape:?}"
                );
                finite(x, what)?;
            }
            Op::Project { basis, .. } => {
                let size = basis.size();
                anyhow::ensure!(
                    size.len() == 2 && size[0] == d as i64 && size[1] >= 1,
                    "{hook}: the projection basis has shape {size:?}, not ({d}, k)"
                );
                anyhow::ensure!(self.channels.is_none(), "{hook}: a projection acts on all channels (drop --channels)");
                finite(basis, "basis")?;
            }
        }
        Ok(())
    }

    /// `value` with this intervention applied. Entries it does not select are `value`'s own.
    pub fn apply(&self, value: &Tensor) -> Tensor {
        let size = value.size();
        let nd = size.len();
        let (t, d) = (size[nd - 2], size[nd - 1]);
        let opts = (tch::Kind::Bool, value.device());
        // mask (…, T, 1) & (…, 1, D), broadcast to the value's shape.
        let mut tshape = vec![1i64; nd];
        tshape[nd - 2] = t;
        let positions: Vec<i64> = self.tokens.positions(t as usize).iter().map(|&p| p as i64).collect();
        let tmask =
            Tensor::zeros([t], opts).index_fill(0, &Tensor::from_slice(&positions).to_device(value.device()), 1);
        let mut mask = tmask.view(tshape.as_slice());
        if let Some(ch) = &self.channels {
            let mut cshape = vec![1i64; nd];
            cshape[nd - 1] = d;
            let ch: Vec<i64> = ch.iter().map(|&c| c as i64).collect();
            let cmask = Tensor::zeros([d], opts).index_fill(0, &Tensor::from_slice(&ch).to_device(value.device()), 1);
            mask = mask.logical_and(&cmask.view(cshape.as_slice()));
        }
        let like = |x: &Tensor| x.to_kind(value.kind()).to_device(value.device());
        match &self.op {
            Op::Zero => value.zeros_like().where_self(&mask, value),
            Op::Replace(x) => like(x).expand(size.as_slice(), false).where_self(&mask, value),
            Op::Add(x) => value + like(x).expand(size.as_slice(), false).where_self(&mask, &value.zeros_like()),
            Op::Project { basis, keep } => {
                let (q, _) = Tensor::linalg_qr(&like(basis), "reduced"); // (D, k) orthonormal columns
                let onto = value.matmul(&q).matmul(&q.tr());
                let target = if *keep { onto } else { value - onto };
                target.where_self(&mask, value)
            }
        }
    }
}

pub struct ActivationCache {
    filter: Box<dyn Fn(&str) -> bool>,
    entries: BTreeMap<String, Tensor>,
    interventions: Vec<Intervention>,
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
        Self { filter: Box::new(filter), entries: BTreeMap::new(), interventions: Vec::new() }
    }

    /// Records nothing; only changes the forward by `interventions`.
    pub fn none() -> Self {
        Self::filtered(|_| false)
    }

    /// This cache, also applying `interventions` (in order) at their hooks.
    pub fn with_interventions(mut self, interventions: Vec<Intervention>) -> Self {
        self.interventions.extend(interventions);
        self
    }

    pub fn interventions(&self) -> &[Intervention] {
        &self.interventions
    }

    /// Whether the model should pass `name` through the cache: it is recorded or changed there
    /// (the model may skip work it otherwise would not do, e.g. the non-query rows of the last layer).
    pub fn wants(&self, name: &str) -> bool {
        (self.filter)(name) || self.writes(name)
    }

    /// Whether an intervention changes `name`.
    pub fn writes(&self, name: &str) -> bool {
        self.interventions.iter().any(|i| i.hook == name)
    }

    /// `value` with every intervention at `name` applied, in order (`value` itself if none).
    pub fn apply(&self, name: &str, value: Tensor) -> Tensor {
        self.interventions.iter().filter(|i| i.hook == name).fold(value, |v, i| i.apply(&v))
    }

    /// Called by models at every named activation: applies the interventions at `name`, records
    /// the result if wanted, and returns it for the model to continue from.
    pub fn hook(&mut self, name: impl Into<String>, value: Tensor) -> Tensor {
        let name = name.into();
        let value = self.apply(&name, value);
        self.record(name, &value);
        value
    }

    /// Stores `value` under `name` if wanted (for activations that the model does not continue
    /// from as they are, e.g. a pattern already applied; prefer [`ActivationCache::hook`]).
    pub fn record(&mut self, name: impl Into<String>, value: &Tensor) {
        let name = name.into();
        if (self.filter)(&name) {
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
