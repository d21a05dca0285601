//! The GPT-style in-context learner of Garg et al. 2022 ("What can transformers learn in-context?
//! A case study of simple function classes", arXiv 2208.01066; their `src/models.py`
//! `TransformerModel`), also the model family of Akyürek et al. 2023 (spec §2–3):
//!
//! - prompts as interleaved tokens x₁, (y₁, 0…), x₂, (y₂, 0…), …, x_q of width d (the `classic`
//!   layout of [`crate::layout`]; Garg puts y in the first entry, we in the last o: the read-in is
//!   linear, so the two are the same model);
//! - read-in Linear(d → width) with bias, learned positional embeddings (GPT-2's `wpe`);
//! - `layers` pre-LayerNorm GPT-2 blocks: causal softmax attention with `heads` heads of size
//!   width/heads (scaled by 1/√size, biases on q, k, v, o), then a GELU (tanh) MLP of 4·width;
//!   no dropout (Garg sets every dropout to 0);
//! - a final LayerNorm and read-out Linear(width → o) at every x position: the prediction at
//!   position 2i is ŷᵢ from the pairs before it, so one forward pass gives the whole
//!   error-vs-examples curve; the model's prediction for a prompt is the read-out at x_q (last).
//!
//! Parameters are named `read_in.{w,b}`, `pos_embed`, `layers.{l}.ln_attn.{scale,offset}`,
//! `layers.{l}.attn.{q,k,v,o,bq,bk,bv,bo}`, `layers.{l}.ln_mlp.{scale,offset}`,
//! `layers.{l}.mlp.{w1,b1,w2,b2}`, `ln_final.{scale,offset}`, `read_out.{w,b}`. Activations carry
//! the same hook names as the von Oswald family ([`crate::cache`]): `tokens`,
//! `layers.{l}.attn.pattern` (B, H, T, T), `layers.{l}.attn.out`, `layers.{l}.resid_mid`, `layers.{l}.mlp.out`,
//! `layers.{l}.resid_post` (B, T, width).
//!
//! Initialisation as Hugging Face's GPT-2 (`initializer_range` 0.02: weights and embeddings
//! N(0, 0.02²), the two output projections of each block N(0, (0.02/√(2·layers))²), biases 0,
//! LayerNorm scale 1) and PyTorch's default Linear for read-in and read-out (U(±1/√fan_in) for
//! weight and bias), drawn in Rust from the run's init stream in parameter-name order, so the
//! initial weights are the same on every device.

use rand::Rng;
use rand_distr::StandardNormal;
use tch::{nn, Kind, Tensor};

use icl_tasks::{Dims, TaskRng};

use crate::cache::ActivationCache;
use crate::models::transformer::LayerNorm;

/// The model's size lives with the run config ([`crate::config::GptConfig`]); re-exported here.
pub use crate::config::GptConfig;

#[derive(Debug)]
struct Attention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    bq: Tensor,
    bk: Tensor,
    bv: Tensor,
    bo: Tensor,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, width: i64, heads: i64) -> Self {
        Self {
            q: p.zeros("q", &[width, width]),
            k: p.zeros("k", &[width, width]),
            v: p.zeros("v", &[width, width]),
            o: p.zeros("o", &[width, width]),
            bq: p.zeros("bq", &[width]),
            bk: p.zeros("bk", &[width]),
            bv: p.zeros("bv", &[width]),
            bo: p.zeros("bo", &[width]),
            heads,
        }
    }

    /// x (B, T, W) → (output (B, T, W), pattern (B, H, T, T)); position t attends to positions ≤ t.
    /// `edit` changes the pattern (B, H, T, T) before it mixes the values (an intervention at
    /// `layers.{l}.attn.pattern`).
    fn forward(&self, x: &Tensor, causal_mask: &Tensor, edit: Option<&dyn Fn(Tensor) -> Tensor>) -> (Tensor, Tensor) {
        let (b, t, w) = x.size3().expect("x is (B, T, W)");
        let (h, size) = (self.heads, w / self.heads);
        let split = |m: &Tensor, bias: &Tensor| x.matmul(m).g_add(bias).view([b, t, h, size]).transpose(1, 2); // (B, H, T, size)
        let (q, k, v) = (split(&self.q, &self.bq), split(&self.k, &self.bk), split(&self.v, &self.bv));
        let logits = q.matmul(&k.transpose(-2, -1)) / (size as f64).sqrt(); // (B, H, T, T)
        let mut pattern = logits.masked_fill(causal_mask, f64::NEG_INFINITY).softmax(-1, x.kind());
        if let Some(edit) = edit {
            pattern = edit(pattern);
        }
        let mixed = pattern.matmul(&v).transpose(1, 2).reshape([b, t, w]); // (B, T, H·size)
        (mixed.matmul(&self.o) + &self.bo, pattern)
    }
}

#[derive(Debug)]
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Mlp {
    fn new(p: nn::Path, width: i64) -> Self {
        Self {
            w1: p.zeros("w1", &[width, 4 * width]),
            b1: p.zeros("b1", &[4 * width]),
            w2: p.zeros("w2", &[4 * width, width]),
            b2: p.zeros("b2", &[width]),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        // GPT-2's `gelu_new` is the tanh approximation.
        (x.matmul(&self.w1) + &self.b1).gelu("tanh").matmul(&self.w2) + &self.b2
        // (B, T, 4W) → (B, T, W)
    }
}

#[derive(Debug)]
struct Block {
    ln_attn: LayerNorm,
    attn: Attention,
    ln_mlp: LayerNorm,
    mlp: Mlp,
}

/// The GPT-style model; see the module docs.
#[derive(Debug)]
pub struct Gpt {
    config: GptConfig,
    dims: Dims,
    read_in_w: Tensor,
    read_in_b: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    ln_final: LayerNorm,
    read_out_w: Tensor,
    read_out_b: Tensor,
}

impl Gpt {
    /// Creates the parameters under `root` (zero until [`Gpt::init`] or a load). Positions are
    /// learned for prompts of up to `dims.context_len` pairs plus the query (2N + 1 tokens).
    pub fn new(root: &nn::Path, config: &GptConfig, dims: Dims) -> Self {
        let (d, o, w) = (dims.x_dim as i64, dims.y_dim as i64, config.width as i64);
        let positions = 2 * dims.context_len as i64 + 1;
        let blocks = (0..config.layers)
            .map(|l| {
                let p = root / "layers" / l;
                Block {
                    ln_attn: LayerNorm::new(&p / "ln_attn", w),
                    attn: Attention::new(&p / "attn", w, config.heads as i64),
                    ln_mlp: LayerNorm::new(&p / "ln_mlp", w),
                    mlp: Mlp::new(&p / "mlp", w),
                }
            })
            .collect();
        Self {
            config: config.clone(),
            dims,
            read_in_w: (root / "read_in").zeros("w", &[d, w]),
            read_in_b: (root / "read_in").zeros("b", &[w]),
            pos_embed: root.zeros("pos_embed", &[positions, w]),
            blocks,
            ln_final: LayerNorm::new(root / "ln_final", w),
            read_out_w: (root / "read_out").zeros("w", &[w, o]),
            read_out_b: (root / "read_out").zeros("b", &[o]),
        }
    }

    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// The most tokens a prompt may have (learned positions).
    pub fn max_tokens(&self) -> i64 {
        self.pos_embed.size()[0]
    }

    /// Draws the initial weights (see the module docs) from `rng` in parameter-name order.
    pub fn init(vs: &nn::VarStore, layers: usize, rng: &mut TaskRng) {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let residual_sigma = 0.02 / (2.0 * layers as f64).sqrt();
        tch::no_grad(|| {
            for (name, mut var) in vars {
                let size = var.size();
                let count = size.iter().product::<i64>() as usize;
                let normal = |rng: &mut TaskRng, sigma: f64| -> Vec<f64> {
                    (0..count).map(|_| sigma * rng.sample::<f64, _>(StandardNormal)).collect()
                };
                let values: Vec<f64> = if name.starts_with("read_in.") || name.starts_with("read_out.") {
                    // PyTorch's nn.Linear default: U(−1/√fan_in, 1/√fan_in) for weight and bias.
                    let fan_in = if name.starts_with("read_in.") {
                        size_of(vs, "read_in.w", 0)
                    } else {
                        size_of(vs, "read_out.w", 0)
                    };
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    (0..count).map(|_| rng.random_range(-bound..bound)).collect()
                } else if name.ends_with(".scale") {
                    vec![1.0; count]
                } else if name.ends_with(".offset") || name.rsplit('.').next().is_some_and(|n| n.starts_with('b')) {
                    vec![0.0; count]
                } else if name.ends_with("attn.o") || name.ends_with("mlp.w2") {
                    normal(rng, residual_sigma)
                } else {
                    normal(rng, 0.02)
                };
                let t = Tensor::from_slice(&values).view(size.as_slice()).to_kind(var.kind()).to_device(var.device());
                var.copy_(&t);
            }
        });
    }

    /// The residual stream after every block, read out at every position: tokens (B, T, d) →
    /// predictions (B, T, o) (meaningful at the x positions 0, 2, 4, …), recording activations the
    /// cache asks for.
    pub fn forward_all(&self, tokens: &Tensor, mut cache: Option<&mut ActivationCache>) -> Tensor {
        let (_, t, _) = tokens.size3().expect("tokens are (B, T, d)");
        assert!(t <= self.max_tokens(), "{t} tokens, but the model has positions for {}", self.max_tokens());
        // Every named activation passes through the cache, which may change it (interventions).
        let tokens = match cache.as_deref_mut() {
            Some(c) => c.hook(crate::cache::TOKENS, tokens.shallow_clone()),
            None => tokens.shallow_clone(),
        };
        // Position i may attend to j ≤ i: mask the strict upper triangle.
        let causal_mask = Tensor::ones([t, t], (Kind::Bool, tokens.device())).triu(1); // (T, T)
        let mut h = tokens.matmul(&self.read_in_w) + &self.read_in_b + self.pos_embed.narrow(0, 0, t); // (B, T, W)
        for (l, block) in self.blocks.iter().enumerate() {
            use crate::cache::{attn_out, attn_pattern, mlp_out, resid_mid, resid_post};
            let (mut out, pattern) = {
                let pattern_name = attn_pattern(l);
                let edit = match cache.as_deref() {
                    Some(c) if c.writes(&pattern_name) => Some(|p: Tensor| c.apply(&pattern_name, p)),
                    _ => None,
                };
                let edit = edit.as_ref().map(|f| f as &dyn Fn(Tensor) -> Tensor);
                block.attn.forward(&block.ln_attn.forward(&h), &causal_mask, edit)
            };
            if let Some(c) = cache.as_deref_mut() {
                c.record(attn_pattern(l), &pattern);
                out = c.hook(attn_out(l), out);
            }
            h = &h + &out; // not `+=`: tch's AddAssign is in place, which autograd cannot differentiate
            if let Some(c) = cache.as_deref_mut() {
                h = c.hook(resid_mid(l), h);
            }
            let mut out = block.mlp.forward(&block.ln_mlp.forward(&h));
            if let Some(c) = cache.as_deref_mut() {
                out = c.hook(mlp_out(l), out);
            }
            h = &h + &out;
            if let Some(c) = cache.as_deref_mut() {
                h = c.hook(resid_post(l), h);
            }
        }
        self.read_out_all(&h)
    }

    /// The prediction at the query (the last token): (B, T, d) → (B, o).
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut ActivationCache>) -> Tensor {
        self.forward_all(tokens, cache).select(1, -1)
    }

    /// Final LayerNorm and read-out at every position: (B, T, W) → (B, T, o).
    fn read_out_all(&self, h: &Tensor) -> Tensor {
        self.ln_final.forward(h).matmul(&self.read_out_w) + &self.read_out_b
    }

    /// The one readout, at the query (the last token): residual stream (B, T, W) → (B, o). Applied
    /// to `layers.{l}.resid_post` it reads the model out after layer l + 1.
    pub fn readout(&self, h: &Tensor) -> Tensor {
        self.read_out_all(&h.narrow(1, h.size()[1] - 1, 1)).select(1, 0)
    }
}

fn size_of(vs: &nn::VarStore, name: &str, dim: usize) -> i64 {
    vs.variables().get(name).map_or(1, |v| v.size()[dim])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(dims: Dims) -> (nn::VarStore, Gpt) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let config = GptConfig { layers: 2, heads: 2, width: 8 };
        let model = Gpt::new(&vs.root(), &config, dims);
        Gpt::init(&vs, config.layers, &mut crate::rng::seeded_rng(0, 1));
        (vs, model)
    }

    #[test]
    fn predictions_are_causal() {
        let dims = Dims { x_dim: 3, y_dim: 1, context_len: 4 };
        let (_vs, model) = tiny(dims);
        let tokens = Tensor::randn([2, 9, 3], (Kind::Float, tch::Device::Cpu));
        let before = model.forward_all(&tokens, None);
        let changed = tokens.copy();
        let _ = changed.narrow(1, 5, 4).fill_(7.0); // change tokens 5..9
        let after = model.forward_all(&changed, None);
        let same = (before.narrow(1, 0, 5) - after.narrow(1, 0, 5)).abs().max().double_value(&[]);
        let moved = (before.narrow(1, 5, 4) - after.narrow(1, 5, 4)).abs().max().double_value(&[]);
        assert!(same < 1e-6, "a later token changed an earlier prediction by {same}");
        assert!(moved > 1e-4, "later predictions did not see the change ({moved})");
    }

    #[test]
    fn readout_of_the_last_layer_is_the_prediction() {
        let dims = Dims { x_dim: 3, y_dim: 1, context_len: 4 };
        let (_vs, model) = tiny(dims);
        let tokens = Tensor::randn([2, 9, 3], (Kind::Float, tch::Device::Cpu));
        let name = crate::cache::resid_post(1);
        let mut cache = ActivationCache::names(&[name.as_str()]);
        let preds = model.forward(&tokens, Some(&mut cache));
        let read = model.readout(cache.tensor(&name).unwrap());
        assert_eq!(preds.size(), vec![2, 1]);
        assert!((preds - read).abs().max().double_value(&[]) < 1e-7);
    }

    #[test]
    fn initial_weights_follow_gpt2() {
        let dims = Dims { x_dim: 3, y_dim: 1, context_len: 40 };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let config = GptConfig { layers: 2, heads: 2, width: 64 };
        let _model = Gpt::new(&vs.root(), &config, dims);
        Gpt::init(&vs, config.layers, &mut crate::rng::seeded_rng(0, 1));
        let v = vs.variables();
        let std = |n: &str| f64::try_from(v[n].std(true)).unwrap();
        assert!((std("layers.0.attn.q") - 0.02).abs() < 0.002);
        assert!((std("layers.0.attn.o") - 0.01).abs() < 0.001, "0.02/√(2·2)");
        assert_eq!(f64::try_from(v["layers.1.ln_mlp.scale"].mean(Kind::Float)).unwrap(), 1.0);
        assert_eq!(f64::try_from(v["layers.1.mlp.b1"].abs().max()).unwrap(), 0.0);
        let bound = 1.0 / 3f64.sqrt();
        let max_in = f64::try_from(v["read_in.w"].abs().max()).unwrap();
        assert!(max_in <= bound && max_in > 0.5 * bound);
    }
}
