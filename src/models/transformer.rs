//! The transformer of von Oswald et al. 2023, "Transformers learn in-context by gradient
//! descent" (arXiv 2212.07677), as in the official code (`src/transformer.py`, `src/attn.py`;
//! spec §1.3):
//!
//! - attention without biases, all projections stored row-vector style (`x @ W`):
//!   q, k, v: (D, H·K), o: (H·K, D); linear self-attention (logits q·k, no softmax, no scaling)
//!   by default, softmax with 1/√K on request;
//! - keys and values come from the N context tokens only; queries from every token;
//! - residual update h ← h + attn(h), optionally pre-LayerNorm and a GELU MLP;
//! - `recurrent`: one parameter layer applied `layers` times (the official `deq=True`);
//! - softmax in the first layer only (`first_layer_softmax`, Fig. 5), sinusoidal positional
//!   encodings concatenated to the tokens (`pos_enc`), token clipping (`token_clip`);
//! - prediction ŷ = −(last o entries of the last token): the query's y-entries in the constructed
//!   layout (the official `h[:, -1, -1]`);
//! - optionally a learned feature map before the first layer (Fig. 4, official `in_proj` and
//!   `input_mlp`): a bias-free linear embedding to `embed` dims, then h ← h + MLP(h) (GELU, width 4·E,
//!   with biases); and attention fixed to Proposition 1's GD layer (`fixed_attention`), so that
//!   only the feature map learns — the paper's "meta-learned MLP + one GD step" baseline.
//!
//! Parameters are named `embed.w`, `input_mlp.{w1,b1,w2,b2}`, `layers.{l}.attn.{q,k,v,o}`, `layers.{l}.ln_attn.{scale,offset}`,
//! `layers.{l}.ln_mlp.{scale,offset}`, `layers.{l}.mlp.{w1,w2}` (l = parameter layer).
//! Activations (see [`crate::cache`]) are named per applied layer l:
//! `layers.{l}.attn.pattern` (B, H, T, N), `layers.{l}.attn.out` (B, T, D),
//! `layers.{l}.resid_mid` (B, T, D; with MLP), `layers.{l}.mlp.out` (B, T, D; with MLP),
//! `layers.{l}.resid_post` (B, T, D), `tokens`, and
//! `features` (B, T, D: the residual stream entering the first layer, models with a feature map).
//!
//! Only the query token's output feeds the loss, so the last layer computes attention for the
//! query row alone unless the cache asks for one of that layer's activations; the prediction is
//! the same either way.

use anyhow::{bail, Context};
use rand::Rng;
use rand_distr::StandardNormal;
use tch::{nn, Tensor};

use icl_probes::NamedWeights;
use icl_tasks::{Dims, TaskRng};

use crate::cache::{tensor_to_array, ActivationCache};
use crate::config::ModelConfig;

/// Single- or multi-head attention over the context tokens.
#[derive(Debug)]
struct Attention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    heads: i64,
    key_size: i64,
    softmax: bool,
}

impl Attention {
    /// `trainable = false`: parameters the optimiser never sees (a fixed construction).
    fn new(p: nn::Path, width: i64, heads: i64, key_size: i64, softmax: bool, trainable: bool) -> Self {
        let inner = heads * key_size;
        let param =
            |name: &str, dims: &[i64]| if trainable { p.zeros(name, dims) } else { p.zeros_no_train(name, dims) };
        Self {
            q: param("q", &[width, inner]),
            k: param("k", &[width, inner]),
            v: param("v", &[width, inner]),
            o: param("o", &[inner, width]),
            heads,
            key_size,
            softmax,
        }
    }

    /// Attention for the query token alone: query (B, D), context (B, N, D) →
    /// (output (B, D), pattern (B, H, 1, N)).
    ///
    /// Same arithmetic as [`Attention::forward`] with Tq = 1, laid out batch-last so that every
    /// contraction over the tiny dimensions (K = 11, N = 10) is an elementwise product over
    /// contiguous rows of B prompts plus a reduction, instead of B tiny matrix products
    /// (libtorch's CPU `bmm` spends most of a training step on those).
    fn forward_query(&self, query: &Tensor, context: &Tensor, softmax: bool) -> (Tensor, Tensor) {
        let (b, n, width) = context.size3().expect("context is (B, N, D)");
        let (h, k) = (self.heads, self.key_size);
        let ctx = context.permute([2, 1, 0]).contiguous().view([width, n * b]); // (D, N·B)
        let q = self.q.tr().matmul(&query.tr()).view([h, k, 1, b]); // (H, K, 1, B)
        let keys = self.k.tr().matmul(&ctx).view([h, k, n, b]); // (H, K, N, B)
        let values = self.v.tr().matmul(&ctx).view([h, k, n, b]); // (H, K, N, B)
        let mut pattern = (keys * q).sum_dim_intlist(1, false, query.kind()); // (H, N, B)
        if softmax {
            pattern = (pattern / (k as f64).sqrt()).softmax(1, query.kind());
        }
        let mixed = (values * pattern.unsqueeze(1)).sum_dim_intlist(2, false, query.kind()); // (H, K, B)
        let out = self.o.tr().matmul(&mixed.view([h * k, b])).tr(); // (B, D)
        (out, pattern.permute([2, 0, 1]).unsqueeze(2)) // pattern (B, H, 1, N)
    }

    /// queries (B, Tq, D), context (B, N, D) → (output (B, Tq, D), pattern (B, H, Tq, N)).
    /// `edit` changes the pattern (B, H, Tq, N) before it mixes the values (an intervention at
    /// `layers.{l}.attn.pattern`).
    fn forward(
        &self,
        queries: &Tensor,
        context: &Tensor,
        softmax: bool,
        edit: Option<&dyn Fn(Tensor) -> Tensor>,
    ) -> (Tensor, Tensor) {
        let (b, tq, _) = queries.size3().expect("queries are (B, T, D)");
        let n = context.size()[1];
        let (h, k) = (self.heads, self.key_size);
        if h == 1 {
            // One head: stay in 3-D, which spares libtorch the copies of the 4-D head layout.
            let q = queries.matmul(&self.q); // (B, Tq, K)
            let keys = context.matmul(&self.k); // (B, N, K)
            let values = context.matmul(&self.v); // (B, N, K)
            let mut pattern = q.matmul(&keys.transpose(1, 2)); // (B, Tq, N)
            if softmax {
                pattern = (pattern / (k as f64).sqrt()).softmax(-1, q.kind());
            }
            if let Some(edit) = edit {
                pattern = edit(pattern.unsqueeze(1)).squeeze_dim(1); // via (B, 1, Tq, N)
            }
            let out = pattern.matmul(&values).matmul(&self.o); // (B, Tq, D)
            return (out, pattern.unsqueeze(1));
        }
        let q = queries.matmul(&self.q).view([b, tq, h, k]).transpose(1, 2); // (B, H, Tq, K)
        let keys = context.matmul(&self.k).view([b, n, h, k]).transpose(1, 2); // (B, H, N, K)
        let values = context.matmul(&self.v).view([b, n, h, k]).transpose(1, 2); // (B, H, N, K)
        let mut pattern = q.matmul(&keys.transpose(-2, -1)); // (B, H, Tq, N)
        if softmax {
            pattern = (pattern / (k as f64).sqrt()).softmax(-1, q.kind());
        }
        if let Some(edit) = edit {
            pattern = edit(pattern);
        }
        let mixed = pattern.matmul(&values).transpose(1, 2).reshape([b, tq, h * k]); // (B, Tq, H·K)
        (mixed.matmul(&self.o), pattern)
    }
}

#[derive(Debug)]
pub(crate) struct LayerNorm {
    scale: Tensor,
    offset: Tensor,
}

impl LayerNorm {
    pub(crate) fn new(p: nn::Path, width: i64) -> Self {
        Self { scale: p.ones("scale", &[width]), offset: p.zeros("offset", &[width]) }
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let width = self.scale.size()[0];
        // Haiku's LayerNorm default epsilon.
        x.layer_norm([width], Some(&self.scale), Some(&self.offset), 1e-5, false)
    }
}

#[derive(Debug)]
struct Mlp {
    w1: Tensor,
    w2: Tensor,
}

impl Mlp {
    fn new(p: nn::Path, width: i64, hidden: i64) -> Self {
        // No biases: the official runs set `use_bias_p = False` everywhere.
        Self { w1: p.zeros("w1", &[width, hidden]), w2: p.zeros("w2", &[hidden, width]) }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        // jax.nn.gelu defaults to the tanh approximation.
        x.matmul(&self.w1).gelu("tanh").matmul(&self.w2) // (B, T, 4D) → (B, T, D)
    }
}

/// The learned feature map before the first layer (von Oswald et al. Fig. 4; official `in_proj`
/// and `input_mlp`): tokens (B, T, W) → `embed` (B, T, E) → h + MLP(h).
#[derive(Debug, Default)]
struct FeatureMap {
    /// (W, E), no bias (the official `use_bias_p = False`).
    embed: Option<Tensor>,
    /// w1 (E, 4E), b1 (4E), w2 (4E, E), b2 (E): the official input MLP has biases.
    mlp: Option<[Tensor; 4]>,
}

impl FeatureMap {
    fn new(p: nn::Path, config: &ModelConfig, token_width: i64) -> Self {
        let embed = config.embed.map(|e| (&p / "embed").zeros("w", &[token_width, e as i64]));
        let width = config.embed.map_or(token_width, |e| e as i64);
        let mlp = config.input_mlp.then(|| {
            let m = &p / "input_mlp";
            [
                m.zeros("w1", &[width, 4 * width]),
                m.zeros("b1", &[4 * width]),
                m.zeros("w2", &[4 * width, width]),
                m.zeros("b2", &[width]),
            ]
        });
        Self { embed, mlp }
    }

    fn forward(&self, tokens: &Tensor) -> Tensor {
        let h = match &self.embed {
            Some(w) => tokens.matmul(w), // (B, T, W) → (B, T, E)
            None => tokens.shallow_clone(),
        };
        match &self.mlp {
            // jax.nn.gelu defaults to the tanh approximation.
            Some([w1, b1, w2, b2]) => &h + (h.matmul(w1) + b1).gelu("tanh").matmul(w2) + b2, // (B, T, E)
            None => h,
        }
    }
}

/// One parameter layer.
#[derive(Debug)]
struct Block {
    attn: Attention,
    ln_attn: Option<LayerNorm>,
    mlp: Option<(Option<LayerNorm>, Mlp)>,
}

/// The transformer; see the module docs.
#[derive(Debug)]
pub struct Transformer {
    config: ModelConfig,
    dims: Dims,
    features: FeatureMap,
    blocks: Vec<Block>,
}

/// How to apply the trained layers; the default is how the model was trained.
#[derive(Clone, Copy, Debug)]
pub struct ForwardOptions {
    /// Apply this many layers instead of `config.layers` (recurrent models only): the roll-out.
    pub repeats: Option<usize>,
    /// h ← h + λ·attn(h) (von Oswald et al.'s `dampening`, 1 in training).
    pub dampening: f64,
    /// Update only the y-entries of every token (the official `y_update`, used for roll-outs).
    pub y_update: bool,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self { repeats: None, dampening: 1.0, y_update: false }
    }
}

impl Transformer {
    /// Creates the parameters under `root` (all zero; see [`Transformer::init`]).
    /// `config` must be resolved ([`crate::config::RunConfig::resolve`]).
    pub fn new(root: &nn::Path, config: &ModelConfig, dims: Dims) -> Self {
        let width = config.width(dims) as i64;
        let key_size = config.key_size.expect("resolved config") as i64;
        let features = FeatureMap::new(root.clone(), config, config.tokens.shape(dims).1 as i64);
        let blocks = (0..config.param_layers())
            .map(|l| {
                let p = root / "layers" / l;
                // Pre-LN everywhere except the first of separate layers (spec A.9).
                let ln_attn =
                    (config.layer_norm && (config.recurrent || l > 0)).then(|| LayerNorm::new(&p / "ln_attn", width));
                let mlp = config.mlp.then(|| {
                    let ln = config.layer_norm.then(|| LayerNorm::new(&p / "ln_mlp", width));
                    (ln, Mlp::new(&p / "mlp", width, 4 * width))
                });
                Block {
                    attn: Attention::new(
                        &p / "attn",
                        width,
                        config.heads as i64,
                        key_size,
                        config.softmax || (config.first_layer_softmax && l == 0),
                        config.fixed_attention.is_none(),
                    ),
                    ln_attn,
                    mlp,
                }
            })
            .collect();
        Self { config: config.clone(), dims, features, blocks }
    }

    /// Sets the attention of a model with `fixed_attention` to its construction (a no-op for
    /// other models); call after [`Transformer::init`].
    pub fn load_fixed_attention(&self, vs: &nn::VarStore) -> anyhow::Result<()> {
        let Some(fixed) = &self.config.fixed_attention else { return Ok(()) };
        anyhow::ensure!(fixed.learner == "gd", "fixed_attention: unknown learner `{}`", fixed.learner);
        let width = self.config.width(self.dims);
        let o = self.dims.y_dim;
        let etas = vec![fixed.eta; self.config.param_layers()];
        load_weights(vs, &icl_probes::construct::gd_construction(width - o, o, self.dims.context_len, &etas))
    }

    /// A model with its own parameter store of `kind` (Float or Double) on `device`; all
    /// parameters zero until initialised or loaded.
    pub fn new_in_store(
        config: &ModelConfig,
        dims: Dims,
        kind: tch::Kind,
        device: tch::Device,
    ) -> (nn::VarStore, Transformer) {
        let mut vs = nn::VarStore::new(device);
        let model = Transformer::new(&vs.root(), config, dims);
        vs.set_kind(kind);
        (vs, model)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// Initialises every weight matrix like Haiku's `VarianceScaling(init_scale)` (fan-in,
    /// truncated normal at ±2σ, σ corrected for the truncation), biases and offsets 0, LayerNorm
    /// scales 1. Drawn in Rust from `rng` in parameter-name order, so the initial weights are the
    /// same on every device and thread count.
    pub fn init(vs: &nn::VarStore, init_scale: f64, rng: &mut TaskRng) {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (name, mut var) in vars {
                let size = var.size();
                let values: Vec<f64> = if size.len() == 2 {
                    let fan_in = size[0].max(1) as f64;
                    // Constant from scipy.stats.truncnorm.std(a=-2, b=2), as in Haiku.
                    let sigma = (init_scale / fan_in).sqrt() / 0.879_625_661_034_239_8;
                    (0..size[0] * size[1]).map(|_| sigma * truncated_normal(rng)).collect()
                } else if name.ends_with(".scale") {
                    vec![1.0; size[0] as usize]
                } else {
                    vec![0.0; size[0] as usize]
                };
                let t = Tensor::from_slice(&values).view(size.as_slice()).to_kind(var.kind()).to_device(var.device());
                var.copy_(&t);
            }
        });
    }

    /// Predictions (B, o) for tokens (B, T, D), recording activations the cache asks for.
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut ActivationCache>) -> Tensor {
        self.forward_with(tokens, cache, ForwardOptions::default())
    }

    pub fn forward_with(
        &self,
        tokens: &Tensor,
        mut cache: Option<&mut ActivationCache>,
        opts: ForwardOptions,
    ) -> Tensor {
        let (_, t, _) = tokens.size3().expect("tokens are (B, T, D)");
        let n_ctx = t - 1;
        let layers = opts.repeats.unwrap_or(self.config.layers);
        assert!(
            self.config.recurrent || layers <= self.blocks.len(),
            "a model with separate layers cannot be applied {layers} times"
        );
        // Every named activation passes through the cache, which may change it (interventions).
        let tokens = match cache.as_deref_mut() {
            Some(c) => c.hook(crate::cache::TOKENS, tokens.shallow_clone()),
            None => tokens.shallow_clone(),
        };
        let mut h = self.with_positions(&self.features.forward(&tokens));
        if let Some(c) = cache.as_deref_mut() {
            if self.config.has_feature_map() {
                h = c.hook(crate::cache::FEATURES, h);
            }
        }
        for l in 0..layers {
            let block = &self.blocks[if self.config.recurrent { 0 } else { l }];
            // Activation names are only built when there is a cache to record into (not in training).
            let names = cache.is_some().then(|| {
                use crate::cache::{attn_out, attn_pattern, mlp_out, resid_mid, resid_post};
                [attn_pattern(l), attn_out(l), resid_mid(l), mlp_out(l), resid_post(l)]
            });
            let wanted = match (cache.as_deref(), &names) {
                (Some(c), Some(names)) => names.iter().any(|n| c.wants(n)),
                _ => false,
            };
            let all_rows = l + 1 < layers || wanted;
            let x = match &block.ln_attn {
                Some(ln) => ln.forward(&h),
                None => h.shallow_clone(),
            };
            let context = x.narrow(1, 0, n_ctx); // (B, N, D)
            let (attn_out, pattern, resid) = if all_rows {
                // An intervention on the pattern changes it before it mixes the values.
                let edit = match (cache.as_deref(), &names) {
                    (Some(c), Some(names)) if c.writes(&names[0]) => {
                        let name = names[0].clone();
                        Some(move |p: Tensor| c.apply(&name, p))
                    }
                    _ => None,
                };
                let edit = edit.as_ref().map(|f| f as &dyn Fn(Tensor) -> Tensor);
                let (out, pattern) = block.attn.forward(&x, &context, block.attn.softmax, edit);
                (out, pattern, h)
            } else {
                let (out, pattern) = block.attn.forward_query(&x.select(1, t - 1), &context, block.attn.softmax);
                (out.unsqueeze(1), pattern, h.narrow(1, t - 1, 1)) // (B, 1, D)
            };
            let mut attn_out = if opts.y_update { self.y_entries_only(&attn_out) } else { attn_out };
            if let (Some(c), Some(names)) = (cache.as_deref_mut(), &names) {
                c.record(names[0].clone(), &pattern);
                attn_out = c.hook(names[1].clone(), attn_out);
            }
            h = self.residual(resid, &attn_out, opts.dampening);
            if let Some((ln, mlp)) = &block.mlp {
                if let (Some(c), Some(names)) = (cache.as_deref_mut(), &names) {
                    h = c.hook(names[2].clone(), h);
                }
                let x = match ln {
                    Some(ln) => ln.forward(&h),
                    None => h.shallow_clone(),
                };
                let mut mlp_out = mlp.forward(&x);
                if let (Some(c), Some(names)) = (cache.as_deref_mut(), &names) {
                    mlp_out = c.hook(names[3].clone(), mlp_out);
                }
                h = self.residual(h, &mlp_out, opts.dampening);
            }
            if let (Some(c), Some(names)) = (cache.as_deref_mut(), &names) {
                h = c.hook(names[4].clone(), h);
            }
        }
        self.readout(&h)
    }

    /// h + λ·update, then the optional token clipping (as the official `trans_block`, after
    /// attention and again after the MLP).
    fn residual(&self, h: Tensor, update: &Tensor, dampening: f64) -> Tensor {
        let h = if dampening == 1.0 { h + update } else { h + update * dampening };
        match self.config.token_clip {
            Some(c) => h.clamp(-c, c),
            None => h,
        }
    }

    /// Zeroes all but the last o entries (the y-entries) of an update (B, T, D).
    fn y_entries_only(&self, update: &Tensor) -> Tensor {
        let (w, o) = (update.size()[2], self.dims.y_dim as i64);
        let x_part = update.narrow(2, 0, w - o).zeros_like();
        Tensor::cat(&[x_part, update.narrow(2, w - o, o)], 2)
    }

    /// Concatenates the sinusoidal positional encodings (official `create_pos_encoding`,
    /// `concat_pe=True`) to tokens (B, T, W) → (B, T, W + pos_enc); no-op without them.
    fn with_positions(&self, tokens: &Tensor) -> Tensor {
        let size = self.config.pos_enc;
        if size == 0 {
            return tokens.shallow_clone();
        }
        let (b, t, _) = tokens.size3().expect("tokens are (B, T, W)");
        let mut pe = vec![0.0f64; t as usize * size];
        for pos in 0..t as usize {
            for (j, i) in (0..size).step_by(2).enumerate() {
                let angle = pos as f64 * (-(10000f64.ln()) * (2 * j) as f64 / size as f64).exp();
                pe[pos * size + i] = angle.sin();
                if i + 1 < size {
                    pe[pos * size + i + 1] = angle.cos();
                }
            }
        }
        let pe = Tensor::from_slice(&pe).view([1, t, size as i64]).to_kind(tokens.kind()).to_device(tokens.device());
        Tensor::cat(&[tokens.shallow_clone(), pe.expand([b, t, size as i64], false)], 2)
        // (B, T, W + P)
    }

    /// ŷ = −(last o entries of the last token): (B, T, D) → (B, o). In the constructed layout
    /// those are the query's y-entries (the official `h[:, -1, -1]` for o = 1).
    pub fn readout(&self, h: &Tensor) -> Tensor {
        let (w, o) = (h.size()[2], self.dims.y_dim as i64);
        -h.select(1, -1).narrow(1, w - o, o)
    }
}

pub(crate) fn truncated_normal(rng: &mut TaskRng) -> f64 {
    loop {
        let z: f64 = rng.sample(StandardNormal);
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

/// Every parameter of a store, copied out by name (1-D parameters as one-row matrices).
pub fn named_weights(vs: &nn::VarStore) -> anyhow::Result<NamedWeights> {
    let mut out = NamedWeights::new();
    for (name, var) in vs.variables() {
        let a = tensor_to_array(&var)?;
        let a = match a.ndim() {
            1 => a.into_shape_with_order((1, var.size()[0] as usize))?,
            _ => a.into_dimensionality()?,
        };
        out.insert(name, a);
    }
    Ok(out)
}

/// Sets parameters by name (e.g. a construction from `icl-probes`). Names the store lacks and
/// shape mismatches are errors; parameters not named keep their values.
pub fn load_weights(vs: &nn::VarStore, weights: &NamedWeights) -> anyhow::Result<()> {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, a) in weights {
            let var = vars.get(name).with_context(|| {
                let mut have: Vec<_> = vars.keys().cloned().collect();
                have.sort();
                format!("the model has no parameter `{name}` (has: {})", have.join(", "))
            })?;
            let want: Vec<usize> = var.size().iter().map(|&s| s as usize).collect();
            let given = if want.len() == 1 { vec![a.len()] } else { a.shape().to_vec() };
            if want != given {
                bail!("parameter `{name}`: shape {want:?}, given {:?}", a.shape());
            }
            let data: Vec<f64> = a.iter().copied().collect();
            let t = Tensor::from_slice(&data).view(var.size().as_slice()).to_kind(var.kind()).to_device(var.device());
            var.shallow_clone().copy_(&t);
        }
        Ok(())
    })
}
