//! A hand-written forward and backward pass for the GPT-style model of Garg et al. 2022
//! ([`crate::models::gpt`]: read-in, learned positions, pre-LayerNorm blocks of causal softmax
//! attention and a GELU (tanh) MLP, final LayerNorm, read-out, the loss at every x position): the
//! `fused` engine of GPT-style runs (`train.engine = "fused"`, CPU, opt-in; `auto` keeps libtorch,
//! so runs and reports made with libtorch keep their numbers).
//!
//! At Garg's small widths (the quick model: width 32, 21 tokens, batch 64) libtorch spends a step on
//! ~250 kernel launches with their allocations, of which the matrix products are a minority. Here
//! the token-wise products are BLAS calls (the linked OpenBLAS's `cblas_sgemm`, transposes as
//! strides, not copies); the per-prompt, per-head attention products (21 × 16 at the quick size,
//! too small for a GEMM call) are loops of contiguous axpys over rows padded to whole 8-lane
//! vectors; LayerNorm, softmax and GELU are one pass each over preallocated buffers (nothing is
//! allocated per step once the longest prompt has been seen); the whole pass is compiled twice,
//! portable and for AVX2, chosen at run time. It computes the loss and the gradient of every
//! parameter into one flat buffer in the layout of the GPT trainer's Adam ([`crate::train_gpt`]:
//! parameters in name order), so Adam, checkpoints, resumption and evaluation are the libtorch
//! trainer's own. Measured by `icl-lab bench` (the `gpt … fused` lines).
//!
//! Notation (row vectors, as the model: `x @ W`): N = B·T token rows, W the width, H heads of
//! size s = W/H. Per block, with h the residual stream (N × W):
//!
//! ```text
//! a = LN₁(h);  q, k, v = a W_{q,k,v} + b;  P_bh = softmax(mask(Q_bh K_bhᵀ / √s));  C_bh = P_bh V_bh
//! h₁ = h + C W_o + b_o;  u = LN₂(h₁) W₁ + b₁;  h₂ = h₁ + gelu(u) W₂ + b₂
//! ```
//!
//! Backward, for each product Y = X M: ∂M = Xᵀ ∂Y, ∂X = ∂Y Mᵀ; softmax rows: ∂S = P ∘ (∂P −
//! rowsum(∂P ∘ P)); LayerNorm rows (x̂ = (x − μ)·r): ∂x = r·(∂x̂ − mean(∂x̂) − x̂·mean(∂x̂ ∘ x̂)).
//!
//! Numerics: f32 throughout; `exp` and `tanh` are polynomial (about 2e-7 relative and 1e-7 absolute
//! error), so the step agrees with libtorch's to float rounding, not bit for bit (the tests below
//! check loss and every gradient against libtorch autograd). One thread.

use anyhow::Context;

use icl_tasks::Dims;

use crate::config::GptConfig;

/// Where each parameter lives in the flat buffer (offsets in f32 elements).
#[derive(Clone, Debug)]
struct LayerIndex {
    ln1_scale: usize,
    ln1_offset: usize,
    q: usize,
    k: usize,
    v: usize,
    o: usize,
    bq: usize,
    bk: usize,
    bv: usize,
    bo: usize,
    ln2_scale: usize,
    ln2_offset: usize,
    w1: usize,
    b1: usize,
    w2: usize,
    b2: usize,
}

#[derive(Clone, Debug)]
struct ParamIndex {
    read_in_w: usize,
    read_in_b: usize,
    pos_embed: usize,
    layers: Vec<LayerIndex>,
    lnf_scale: usize,
    lnf_offset: usize,
    read_out_w: usize,
    read_out_b: usize,
    total: usize,
}

/// One block's saved activations (row-major).
#[derive(Default)]
struct LayerActs {
    /// LN₁: normalised input x̂ (N × W) and 1/σ per row (N).
    xh1: Vec<f32>,
    r1: Vec<f32>,
    /// LN₁'s output (N × W).
    a1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention patterns (B × H × T × T), zero above the diagonal.
    p: Vec<f32>,
    /// The heads' mixed values (N × W).
    ctx: Vec<f32>,
    xh2: Vec<f32>,
    r2: Vec<f32>,
    a2: Vec<f32>,
    /// MLP pre-activation u and tanh of GELU's argument (N × 4W).
    u: Vec<f32>,
    th: Vec<f32>,
    /// gelu(u) (N × 4W).
    g: Vec<f32>,
}

/// The fused GPT-style step; see the module docs.
pub struct FusedGpt {
    d: usize,
    o: usize,
    w: usize,
    heads: usize,
    positions: usize,
    idx: ParamIndex,
    layers: Vec<LayerActs>,
    /// Final LayerNorm: x̂, 1/σ, output (N × W); predictions (N × o).
    xhf: Vec<f32>,
    rf: Vec<f32>,
    af: Vec<f32>,
    pred: Vec<f32>,
    /// Scratch: the residual stream, its gradient, and per-stage gradients.
    h: Vec<f32>,
    dh: Vec<f32>,
    dx: Vec<f32>,
    dbig: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dp: Vec<f32>,
}

impl FusedGpt {
    /// The step for the GPT-style model `gpt` on prompts of `dims`, with parameters laid out as
    /// `names` (name order) of `lengths` elements each, one after another.
    pub fn new(names: &[String], lengths: &[usize], gpt: &GptConfig, dims: Dims) -> anyhow::Result<Self> {
        let mut offsets = std::collections::HashMap::new();
        let mut at = 0;
        for (name, &n) in names.iter().zip(lengths) {
            offsets.insert(name.as_str(), (at, n));
            at += n;
        }
        let (d, o, w) = (dims.x_dim, dims.y_dim, gpt.width);
        let positions = 2 * dims.context_len + 1;
        let get = |name: &str, len: usize| -> anyhow::Result<usize> {
            let &(off, n) =
                offsets.get(name).with_context(|| format!("the fused GPT step needs parameter `{name}`"))?;
            anyhow::ensure!(n == len, "parameter `{name}` has {n} entries, the fused GPT step expects {len}");
            Ok(off)
        };
        let layers = (0..gpt.layers)
            .map(|l| -> anyhow::Result<LayerIndex> {
                let p = |s: &str| format!("layers.{l}.{s}");
                Ok(LayerIndex {
                    ln1_scale: get(&p("ln_attn.scale"), w)?,
                    ln1_offset: get(&p("ln_attn.offset"), w)?,
                    q: get(&p("attn.q"), w * w)?,
                    k: get(&p("attn.k"), w * w)?,
                    v: get(&p("attn.v"), w * w)?,
                    o: get(&p("attn.o"), w * w)?,
                    bq: get(&p("attn.bq"), w)?,
                    bk: get(&p("attn.bk"), w)?,
                    bv: get(&p("attn.bv"), w)?,
                    bo: get(&p("attn.bo"), w)?,
                    ln2_scale: get(&p("ln_mlp.scale"), w)?,
                    ln2_offset: get(&p("ln_mlp.offset"), w)?,
                    w1: get(&p("mlp.w1"), w * 4 * w)?,
                    b1: get(&p("mlp.b1"), 4 * w)?,
                    w2: get(&p("mlp.w2"), 4 * w * w)?,
                    b2: get(&p("mlp.b2"), w)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let idx = ParamIndex {
            read_in_w: get("read_in.w", d * w)?,
            read_in_b: get("read_in.b", w)?,
            pos_embed: get("pos_embed", positions * w)?,
            layers,
            lnf_scale: get("ln_final.scale", w)?,
            lnf_offset: get("ln_final.offset", w)?,
            read_out_w: get("read_out.w", w * o)?,
            read_out_b: get("read_out.b", o)?,
            total: at,
        };
        anyhow::ensure!(offsets.len() == names.len(), "duplicate parameter names");
        Ok(Self {
            d,
            o,
            w,
            heads: gpt.heads,
            positions,
            idx,
            layers: (0..gpt.layers).map(|_| LayerActs::default()).collect(),
            xhf: Vec::new(),
            rf: Vec::new(),
            af: Vec::new(),
            pred: Vec::new(),
            h: Vec::new(),
            dh: Vec::new(),
            dx: Vec::new(),
            dbig: Vec::new(),
            dq: Vec::new(),
            dk: Vec::new(),
            dv: Vec::new(),
            dp: Vec::new(),
        })
    }

    /// The number of parameters (the flat buffer's length).
    pub fn parameters(&self) -> usize {
        self.idx.total
    }

    /// Loss (mean squared error over every x position and output, as the libtorch trainer) of a
    /// batch, and its gradient with respect to every parameter written into `grad` (same layout
    /// as `params`). `tokens` is (B, T, d) in the classic layout (T = 2P − 1), `targets` (B, P, o).
    pub fn loss_and_grad(
        &mut self,
        params: &[f32],
        tokens: &[f32],
        targets: &[f32],
        batch: usize,
        grad: &mut [f32],
    ) -> anyhow::Result<f32> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just now).
            return unsafe { self.loss_and_grad_avx2(params, tokens, targets, batch, grad) };
        }
        self.loss_and_grad_any(params, tokens, targets, batch, grad)
    }

    /// The same code compiled for AVX2 (8 lanes instead of SSE2's 4; no FMA contraction, so
    /// the results are those of the portable build).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn loss_and_grad_avx2(
        &mut self,
        params: &[f32],
        tokens: &[f32],
        targets: &[f32],
        batch: usize,
        grad: &mut [f32],
    ) -> anyhow::Result<f32> {
        self.loss_and_grad_any(params, tokens, targets, batch, grad)
    }

    #[inline(always)]
    fn loss_and_grad_any(
        &mut self,
        params: &[f32],
        tokens: &[f32],
        targets: &[f32],
        batch: usize,
        grad: &mut [f32],
    ) -> anyhow::Result<f32> {
        let (d, o, w) = (self.d, self.o, self.w);
        anyhow::ensure!(params.len() == self.idx.total && grad.len() == self.idx.total, "parameter buffer size");
        anyhow::ensure!(batch > 0 && tokens.len().is_multiple_of(batch * d), "tokens are not (B, T, d)");
        let t = tokens.len() / (batch * d);
        anyhow::ensure!(
            t % 2 == 1 && t <= self.positions,
            "{t} tokens: the model takes an odd count up to {}",
            self.positions
        );
        let points = t.div_ceil(2);
        anyhow::ensure!(targets.len() == batch * points * o, "targets are not (B, P, o)");
        let n = batch * t;
        let tp = t.div_ceil(8) * 8; // attention rows padded to whole 8-lane vectors
        let (heads, s) = (self.heads, w / self.heads);
        let scale = 1.0 / (s as f32).sqrt();
        let ix = self.idx.clone();
        let p = |off: usize, len: usize| &params[off..off + len];

        // ---- forward ----
        resize(&mut self.h, n * w);
        // h₀ = tokens W_in + b_in + pos[t]
        gemm(n, d, w, (tokens, d, 1), (p(ix.read_in_w, d * w), w, 1), &mut self.h, (w, 1), 0.0);
        for (row, hr) in self.h.chunks_exact_mut(w).enumerate() {
            let pos = p(ix.pos_embed + (row % t) * w, w);
            let b = p(ix.read_in_b, w);
            for c in 0..w {
                hr[c] += b[c] + pos[c];
            }
        }
        for (li, l) in ix.layers.iter().enumerate() {
            let acts = &mut self.layers[li];
            for buf in [&mut acts.xh1, &mut acts.a1, &mut acts.q, &mut acts.k, &mut acts.v, &mut acts.ctx] {
                resize(buf, n * w);
            }
            for buf in [&mut acts.xh2, &mut acts.a2] {
                resize(buf, n * w);
            }
            for buf in [&mut acts.r1, &mut acts.r2] {
                resize(buf, n);
            }
            for buf in [&mut acts.u, &mut acts.th, &mut acts.g] {
                resize(buf, n * 4 * w);
            }
            resize(&mut acts.p, batch * heads * t * tp);
            layer_norm(&self.h, w, p(l.ln1_scale, w), p(l.ln1_offset, w), &mut acts.xh1, &mut acts.r1, &mut acts.a1);
            for (m, bias, out) in [(l.q, l.bq, &mut acts.q), (l.k, l.bk, &mut acts.k), (l.v, l.bv, &mut acts.v)] {
                gemm(n, w, w, (&acts.a1, w, 1), (p(m, w * w), w, 1), out, (w, 1), 0.0);
                add_bias(out, p(bias, w));
            }
            resize(&mut self.dp, s * tp);
            for b in 0..batch {
                for hd in 0..heads {
                    let base = b * t * w + hd * s; // row 0 of this prompt, this head's columns
                    let pat = &mut acts.p[(b * heads + hd) * t * tp..][..t * tp];
                    // Kᵀ (s × Tp, zero-padded), so that each row of S = Q Kᵀ is s full-length
                    // axpys (the per-head products are too small for a GEMM call).
                    let kt = &mut self.dp[..s * tp];
                    transpose_head(&acts.k[base..], w, t, s, tp, kt);
                    for (i, row) in pat.chunks_exact_mut(tp).enumerate() {
                        row.fill(0.0);
                        let qi = &acts.q[base + i * w..][..s];
                        for (c, ktc) in kt.chunks_exact(tp).enumerate() {
                            axpy(qi[c], ktc, row);
                        }
                        softmax_causal_row(row, i, scale);
                    }
                    // C = P V (T × s), into the head's columns of ctx: C_i = Σ_{j ≤ i} P_ij V_j
                    mix(s, pat, tp, false, &acts.v, base, w, t, &mut acts.ctx);
                }
            }
            // h₁ = h + C W_o + b_o (accumulated into h)
            gemm(n, w, w, (&acts.ctx, w, 1), (p(l.o, w * w), w, 1), &mut self.h, (w, 1), 1.0);
            add_bias(&mut self.h, p(l.bo, w));
            layer_norm(&self.h, w, p(l.ln2_scale, w), p(l.ln2_offset, w), &mut acts.xh2, &mut acts.r2, &mut acts.a2);
            gemm(n, w, 4 * w, (&acts.a2, w, 1), (p(l.w1, w * 4 * w), 4 * w, 1), &mut acts.u, (4 * w, 1), 0.0);
            add_bias(&mut acts.u, p(l.b1, 4 * w));
            gelu(&acts.u, &mut acts.th, &mut acts.g);
            gemm(n, 4 * w, w, (&acts.g, 4 * w, 1), (p(l.w2, 4 * w * w), w, 1), &mut self.h, (w, 1), 1.0);
            add_bias(&mut self.h, p(l.b2, w));
        }
        for buf in [&mut self.xhf, &mut self.af] {
            resize(buf, n * w);
        }
        resize(&mut self.rf, n);
        resize(&mut self.pred, n * o);
        layer_norm(&self.h, w, p(ix.lnf_scale, w), p(ix.lnf_offset, w), &mut self.xhf, &mut self.rf, &mut self.af);
        gemm(n, w, o, (&self.af, w, 1), (p(ix.read_out_w, w * o), o, 1), &mut self.pred, (o, 1), 0.0);
        add_bias(&mut self.pred, p(ix.read_out_b, o));

        // ---- loss and ∂pred (zero at the y positions) ----
        let count = (batch * points * o) as f32;
        let mut loss = 0.0f64;
        let mut dpred = std::mem::take(&mut self.dx);
        resize(&mut dpred, n * o);
        dpred.fill(0.0);
        for b in 0..batch {
            for pt in 0..points {
                let row = b * t + 2 * pt;
                for c in 0..o {
                    let e = self.pred[row * o + c] - targets[(b * points + pt) * o + c];
                    loss += (e as f64) * (e as f64);
                    dpred[row * o + c] = 2.0 * e / count;
                }
            }
        }

        // ---- backward ----
        grad.fill(0.0);
        let g = |off: usize, len: usize, grad: &mut [f32]| -> *mut f32 { grad[off..off + len].as_mut_ptr() };
        // read-out
        gemm_raw(
            w,
            n,
            o,
            (&self.af, 1, w as isize),
            (&dpred, o as isize, 1),
            g(ix.read_out_w, w * o, grad),
            (o, 1),
            0.0,
        );
        col_sums(&dpred, o, &mut grad[ix.read_out_b..ix.read_out_b + o]);
        let mut daf = std::mem::take(&mut self.dbig);
        resize(&mut daf, n * w);
        gemm(n, o, w, (&dpred, o, 1), (p(ix.read_out_w, w * o), 1, o as isize), &mut daf, (w, 1), 0.0);
        self.dx = dpred;
        resize(&mut self.dh, n * w);
        {
            let (gs, gb) = two_segments(grad, ix.lnf_scale, ix.lnf_offset, w);
            layer_norm_backward(&daf, &self.xhf, &self.rf, w, p(ix.lnf_scale, w), gs, gb, &mut self.dh, false);
        }
        self.dbig = daf;
        for (li, l) in ix.layers.iter().enumerate().rev() {
            let acts = &self.layers[li];
            // MLP: ∂W₂ = gᵀ ∂h, ∂b₂ = Σ ∂h, ∂g = ∂h W₂ᵀ, ∂u = ∂g ∘ gelu'(u)
            gemm_raw(
                4 * w,
                n,
                w,
                (&acts.g, 1, 4 * w as isize),
                (&self.dh, w as isize, 1),
                g(l.w2, 4 * w * w, grad),
                (w, 1),
                0.0,
            );
            col_sums(&self.dh, w, &mut grad[l.b2..l.b2 + w]);
            resize(&mut self.dbig, n * 4 * w);
            gemm(n, w, 4 * w, (&self.dh, w, 1), (p(l.w2, 4 * w * w), 1, w as isize), &mut self.dbig, (4 * w, 1), 0.0);
            gelu_backward(&acts.u, &acts.th, &mut self.dbig);
            gemm_raw(
                w,
                n,
                4 * w,
                (&acts.a2, 1, w as isize),
                (&self.dbig, 4 * w as isize, 1),
                g(l.w1, w * 4 * w, grad),
                (4 * w, 1),
                0.0,
            );
            col_sums(&self.dbig, 4 * w, &mut grad[l.b1..l.b1 + 4 * w]);
            resize(&mut self.dx, n * w);
            gemm(
                n,
                4 * w,
                w,
                (&self.dbig, 4 * w, 1),
                (p(l.w1, w * 4 * w), 1, 4 * w as isize),
                &mut self.dx,
                (w, 1),
                0.0,
            );
            {
                let (gs, gb) = two_segments(grad, l.ln2_scale, l.ln2_offset, w);
                layer_norm_backward(&self.dx, &acts.xh2, &acts.r2, w, p(l.ln2_scale, w), gs, gb, &mut self.dh, true);
            }
            // Attention output: ∂W_o = Cᵀ ∂h₁, ∂b_o = Σ ∂h₁, ∂C = ∂h₁ W_oᵀ
            gemm_raw(w, n, w, (&acts.ctx, 1, w as isize), (&self.dh, w as isize, 1), g(l.o, w * w, grad), (w, 1), 0.0);
            col_sums(&self.dh, w, &mut grad[l.bo..l.bo + w]);
            let mut dctx = std::mem::take(&mut self.dx);
            gemm(n, w, w, (&self.dh, w, 1), (p(l.o, w * w), 1, w as isize), &mut dctx, (w, 1), 0.0);
            for buf in [&mut self.dq, &mut self.dk, &mut self.dv] {
                resize(buf, n * w);
            }
            resize(&mut self.dp, t * tp + s * tp);
            for b in 0..batch {
                for hd in 0..heads {
                    let base = b * t * w + hd * s;
                    let pat = &acts.p[(b * heads + hd) * t * tp..][..t * tp];
                    let (ds, vt) = self.dp.split_at_mut(t * tp);
                    // Vᵀ (s × Tp, zero-padded), so that ∂P's rows are full-length axpys.
                    transpose_head(&acts.v[base..], w, t, s, tp, vt);
                    // ∂P_i = ∂C_i Vᵀ, then ∂S_i = P_i ∘ (∂P_i − ∂P_i·P_i) / √s (P_i is 0 past i)
                    for (i, (pr, row)) in pat.chunks_exact(tp).zip(ds.chunks_exact_mut(tp)).enumerate() {
                        let dci = &dctx[base + i * w..][..s];
                        row.fill(0.0);
                        for (c, vtc) in vt.chunks_exact(tp).enumerate() {
                            axpy(dci[c], vtc, row);
                        }
                        let dot = dot(pr, row);
                        for (r, &p) in row.iter_mut().zip(pr) {
                            *r = p * (*r - dot) * scale;
                        }
                    }
                    // ∂Q_i = Σ_{j ≤ i} ∂S_ij K_j; ∂V_j = Σ_{i ≥ j} P_ij ∂C_i; ∂K_j = Σ_{i ≥ j} ∂S_ij Q_i
                    // (each sum into one row, so the accumulator stays in registers)
                    mix(s, ds, tp, false, &acts.k, base, w, t, &mut self.dq);
                    mix(s, pat, tp, true, &dctx, base, w, t, &mut self.dv);
                    mix(s, ds, tp, true, &acts.q, base, w, t, &mut self.dk);
                }
            }
            self.dx = dctx;
            // q, k, v: ∂W = aᵀ ∂Y, ∂b = Σ ∂Y, ∂a = Σ ∂Y Wᵀ
            for (m, bias, dy) in [(l.q, l.bq, &self.dq), (l.k, l.bk, &self.dk), (l.v, l.bv, &self.dv)] {
                gemm_raw(w, n, w, (&acts.a1, 1, w as isize), (dy, w as isize, 1), g(m, w * w, grad), (w, 1), 0.0);
                col_sums(dy, w, &mut grad[bias..bias + w]);
            }
            gemm(n, w, w, (&self.dq, w, 1), (p(l.q, w * w), 1, w as isize), &mut self.dx, (w, 1), 0.0);
            gemm(n, w, w, (&self.dk, w, 1), (p(l.k, w * w), 1, w as isize), &mut self.dx, (w, 1), 1.0);
            gemm(n, w, w, (&self.dv, w, 1), (p(l.v, w * w), 1, w as isize), &mut self.dx, (w, 1), 1.0);
            let (gs, gb) = two_segments(grad, l.ln1_scale, l.ln1_offset, w);
            layer_norm_backward(&self.dx, &acts.xh1, &acts.r1, w, p(l.ln1_scale, w), gs, gb, &mut self.dh, true);
        }
        // Embedding: ∂W_in = tokensᵀ ∂h₀, ∂b_in = Σ ∂h₀, ∂pos[t] = Σ_b ∂h₀[b, t]
        gemm_raw(
            d,
            n,
            w,
            (tokens, 1, d as isize),
            (&self.dh, w as isize, 1),
            g(ix.read_in_w, d * w, grad),
            (w, 1),
            0.0,
        );
        col_sums(&self.dh, w, &mut grad[ix.read_in_b..ix.read_in_b + w]);
        let dpos = &mut grad[ix.pos_embed..ix.pos_embed + self.positions * w];
        for (row, dr) in self.dh.chunks_exact(w).enumerate() {
            let at = (row % t) * w;
            for c in 0..w {
                dpos[at + c] += dr[c];
            }
        }
        Ok((loss / count as f64) as f32)
    }
}

/// Sets `v`'s length to `n` (keeping its allocation once it was that large).
fn resize(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// The gradients of a LayerNorm's scale and offset (two separate segments of `grad`).
fn two_segments(grad: &mut [f32], scale: usize, offset: usize, w: usize) -> (&mut [f32], &mut [f32]) {
    assert!(scale.abs_diff(offset) >= w, "LayerNorm segments overlap");
    if scale < offset {
        let (a, b) = grad.split_at_mut(offset);
        (&mut a[scale..scale + w], &mut b[..w])
    } else {
        let (a, b) = grad.split_at_mut(scale);
        (&mut b[..w], &mut a[offset..offset + w])
    }
}

/// C (m × n, strides `c`) = A (m × k) B (k × n) + beta · C, A and B given as (slice, row stride,
/// column stride): a transposed operand is the same slice with its strides swapped.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: (&[f32], usize, isize),
    b: (&[f32], usize, isize),
    c: &mut [f32],
    cs: (usize, isize),
    beta: f32,
) {
    let extent = |rows: usize, cols: usize, rs: usize, cs: isize| (rows - 1) * rs + (cols - 1) * cs as usize + 1;
    assert!(a.0.len() >= extent(m, k, a.1, a.2) && b.0.len() >= extent(k, n, b.1, b.2));
    assert!(c.len() >= extent(m, n, cs.0, cs.1));
    gemm_raw(m, k, n, (a.0, a.1 as isize, a.2), (b.0, b.1 as isize, b.2), c.as_mut_ptr(), cs, beta);
}

/// [`gemm`] writing through a raw pointer (a parameter's segment of the gradient buffer), by
/// the BLAS the binary links (OpenBLAS, for ndarray-linalg; `cblas_sgemm`). Each operand is
/// row-major (strides (ld, 1)) or a transposed row-major matrix (strides (1, ld)); C row-major.
#[allow(clippy::too_many_arguments)]
fn gemm_raw(
    m: usize,
    k: usize,
    n: usize,
    a: (&[f32], isize, isize),
    b: (&[f32], isize, isize),
    c: *mut f32,
    cs: (usize, isize),
    beta: f32,
) {
    const ROW_MAJOR: i32 = 101;
    const NO_TRANS: i32 = 111;
    const TRANS: i32 = 112;
    let extent =
        |rows: usize, cols: usize, rs: isize, cs: isize| (rows as isize - 1) * rs + (cols as isize - 1) * cs + 1;
    assert!(a.0.len() as isize >= extent(m, k, a.1, a.2) && b.0.len() as isize >= extent(k, n, b.1, b.2));
    assert!(cs.1 == 1, "C is row-major");
    // (trans, ld) of a rows × cols operand from its strides (a single row or column has any
    // stride along its length).
    let form = |rs: isize, cs: isize, rows: usize, cols: usize| -> (i32, i32) {
        if cs == 1 && (rs >= cols as isize || rows == 1) {
            (NO_TRANS, rs.max(cols as isize) as i32)
        } else {
            assert!(
                rs == 1 && (cs >= rows as isize || cols == 1),
                "an operand is row-major or transposed row-major (strides {rs}, {cs})"
            );
            (TRANS, cs.max(rows as isize) as i32)
        }
    };
    let (ta, lda) = form(a.1, a.2, m, k);
    let (tb, ldb) = form(b.1, b.2, k, n);
    // SAFETY: the operands' extents were checked against their slices; `c` points at an m × n
    // row-major block with row stride cs.0 inside a live buffer (checked by `gemm`, or a
    // parameter segment of exactly m·n elements).
    unsafe {
        cblas_sgemm(
            ROW_MAJOR,
            ta,
            tb,
            m as i32,
            n as i32,
            k as i32,
            1.0,
            a.0.as_ptr(),
            lda,
            b.0.as_ptr(),
            ldb,
            beta,
            c,
            cs.0 as i32,
        );
    }
}

extern "C" {
    fn cblas_sgemm(
        layout: i32,
        transa: i32,
        transb: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
}

/// y += a·x.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// x·y, summed in 8 interleaved partial sums (so that the loop vectorises).
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in xc.zip(yc) {
        for k in 0..8 {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// out[c] = Σ_rows x[row, c].
#[inline(always)]
fn col_sums(x: &[f32], width: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(width) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Row-wise LayerNorm (ε = 1e-5, biased variance, as libtorch's `layer_norm`): x̂, 1/σ and
/// x̂ ∘ scale + offset.
#[inline(always)]
fn layer_norm(x: &[f32], w: usize, scale: &[f32], offset: &[f32], xh: &mut [f32], r: &mut [f32], out: &mut [f32]) {
    for (row, ((xr, hr), or)) in x.chunks_exact(w).zip(xh.chunks_exact_mut(w)).zip(out.chunks_exact_mut(w)).enumerate()
    {
        let mean = xr.iter().sum::<f32>() / w as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / w as f32;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        r[row] = rstd;
        for c in 0..w {
            hr[c] = (xr[c] - mean) * rstd;
            or[c] = hr[c] * scale[c] + offset[c];
        }
    }
}

/// LayerNorm backward: accumulates ∂scale, ∂offset and writes (or, with `accumulate`, adds) ∂x.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn layer_norm_backward(
    dy: &[f32],
    xh: &[f32],
    r: &[f32],
    w: usize,
    scale: &[f32],
    dscale: &mut [f32],
    doffset: &mut [f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    let mut dxh = vec![0.0f32; w];
    for (row, ((dyr, hr), dxr)) in dy.chunks_exact(w).zip(xh.chunks_exact(w)).zip(dx.chunks_exact_mut(w)).enumerate() {
        let (mut mean_d, mut mean_dh) = (0.0f32, 0.0f32);
        for c in 0..w {
            dscale[c] += dyr[c] * hr[c];
            doffset[c] += dyr[c];
            dxh[c] = dyr[c] * scale[c];
            mean_d += dxh[c];
            mean_dh += dxh[c] * hr[c];
        }
        mean_d /= w as f32;
        mean_dh /= w as f32;
        let rstd = r[row];
        for c in 0..w {
            let g = rstd * (dxh[c] - mean_d - hr[c] * mean_dh);
            if accumulate {
                dxr[c] += g;
            } else {
                dxr[c] = g;
            }
        }
    }
}

/// Scales row `i` of S (padded to a multiple of 8) by `scale`, masks j > i and applies softmax
/// in place (zeros past the diagonal), over whole vectors.
#[inline(always)]
fn softmax_causal_row(row: &mut [f32], i: usize, scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for v in &row[..=i] {
        max = max.max(*v * scale);
    }
    let mut sums = [0.0f32; 8];
    for (c, chunk) in row.chunks_exact_mut(8).enumerate() {
        for (k, v) in chunk.iter_mut().enumerate() {
            let e = exp(*v * scale - max);
            *v = if c * 8 + k <= i { e } else { 0.0 };
            sums[k] += *v;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// One head's pair sums: out_r = Σ_m c_rm x_m over its T rows (row r at `base + r·w`, s
/// columns), with c_rm = coef[r·tp + m] for m ≤ r, or, `transposed`, coef[m·tp + r] for m ≥ r
/// (Pᵀ-style products). The head size is a compile-time constant for the common sizes, so each
/// row's accumulator lives in registers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn mix(
    s: usize,
    coef: &[f32],
    tp: usize,
    transposed: bool,
    x: &[f32],
    base: usize,
    w: usize,
    t: usize,
    out: &mut [f32],
) {
    match s {
        8 => mix_n::<8>(coef, tp, transposed, x, base, w, t, out),
        16 => mix_n::<16>(coef, tp, transposed, x, base, w, t, out),
        32 => mix_n::<32>(coef, tp, transposed, x, base, w, t, out),
        64 => mix_n::<64>(coef, tp, transposed, x, base, w, t, out),
        _ => {
            for r in 0..t {
                let or = &mut out[base + r * w..][..s];
                or.fill(0.0);
                let range = if transposed { r..t } else { 0..r + 1 };
                for m in range {
                    let c = if transposed { coef[m * tp + r] } else { coef[r * tp + m] };
                    axpy(c, &x[base + m * w..][..s], or);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn mix_n<const S: usize>(
    coef: &[f32],
    tp: usize,
    transposed: bool,
    x: &[f32],
    base: usize,
    w: usize,
    t: usize,
    out: &mut [f32],
) {
    for r in 0..t {
        let mut acc = [0.0f32; S];
        let range = if transposed { r..t } else { 0..r + 1 };
        for m in range {
            let c = if transposed { coef[m * tp + r] } else { coef[r * tp + m] };
            let xm: &[f32; S] = x[base + m * w..][..S].try_into().expect("S columns");
            for k in 0..S {
                acc[k] += c * xm[k];
            }
        }
        out[base + r * w..][..S].copy_from_slice(&acc);
    }
}

/// One head's T × s block of a (·, W) activation, transposed into s × Tp (zero-padded).
#[inline(always)]
fn transpose_head(x: &[f32], w: usize, t: usize, s: usize, tp: usize, out: &mut [f32]) {
    out.fill(0.0);
    for j in 0..t {
        let xr = &x[j * w..j * w + s];
        for (c, &v) in xr.iter().enumerate() {
            out[c * tp + j] = v;
        }
    }
}

const GELU_C: f32 = 0.797_884_6; // √(2/π)
const GELU_A: f32 = 0.044_715;

/// GPT-2's `gelu_new`: g = ½u(1 + tanh(c(u + a u³))), keeping the tanh for the backward pass.
#[inline(always)]
fn gelu(u: &[f32], th: &mut [f32], g: &mut [f32]) {
    for ((&x, t), y) in u.iter().zip(th.iter_mut()).zip(g.iter_mut()) {
        let z = GELU_C * (x + GELU_A * x * x * x);
        *t = tanh(z);
        *y = 0.5 * x * (1.0 + *t);
    }
}

/// ∂u = ∂g ∘ gelu'(u), in place in `dg`.
#[inline(always)]
fn gelu_backward(u: &[f32], th: &[f32], dg: &mut [f32]) {
    for ((&x, &t), d) in u.iter().zip(th).zip(dg.iter_mut()) {
        let dz = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
        *d *= 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dz;
    }
}

/// eˣ (about 2e-7 relative error for |x| ≤ 87): x = n·ln 2 + r with |r| ≤ ½ ln 2 (Cody–Waite:
/// ln 2 in two parts, so r is exact to f32), eʳ by its degree-6 Taylor polynomial, 2ⁿ from the
/// exponent bits. Branch-free and without float-to-int conversions, so loops over it vectorise.
#[inline(always)]
#[allow(clippy::manual_clamp)] // max/min: no NaN or bounds checks in the vectorised loop
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer, held in the low bits
    let x = x.max(-87.0).min(87.0);
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // shifted's bits are 0x4B40_0000 + n: 2ⁿ has exponent bits n + 127.
    let two_n = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    p * two_n
}

/// tanh(z) = (e²ᶻ − 1)/(e²ᶻ + 1), z clamped to ±9 (where tanh is 1 to f32 precision); about 1e-7
/// absolute error.
#[inline(always)]
#[allow(clippy::manual_clamp)] // as in `exp`
fn tanh(z: f32) -> f32 {
    let e = exp(2.0 * z.max(-9.0).min(9.0));
    (e - 1.0) / (e + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Kind, Tensor};

    /// Loss and every parameter's gradient, fused and by libtorch autograd, on one batch of
    /// `context_len` pairs (fewer than the model's positions allow when `short`).
    fn compare(gpt: GptConfig, dims: Dims, prompts_len: usize, batch: usize) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let model = crate::models::Gpt::new(&vs.root(), &gpt, dims);
        crate::models::Gpt::init(&vs, gpt.layers, &mut crate::rng::seeded_rng(3, 1));
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        // Perturb the LayerNorms and biases away from 1 and 0, so that their gradients matter.
        tch::manual_seed(0);
        tch::no_grad(|| {
            for (_, v) in &vars {
                let noise = Tensor::randn(v.size(), (Kind::Float, tch::Device::Cpu)) * 0.1;
                let _ = v.shallow_clone().g_add_(&noise);
            }
        });
        let task = icl_tasks::build(
            &icl_tasks::TaskConfig::new("gaussian_linear").with("x_dim", dims.x_dim).with("context_len", prompts_len),
        )
        .unwrap();
        let prompts = task.sample(&mut crate::rng::seeded_rng(5, 7), batch);
        let tokens_t =
            crate::layout::tensors(crate::layout::TokenLayout::Classic, &prompts, Kind::Float, tch::Device::Cpu).0;
        let all = model.forward_all(&tokens_t, None);
        let t = all.size()[1];
        let ys = Tensor::from_slice(&prompts.ys.iter().map(|&y| y as f32).collect::<Vec<_>>()).view([
            batch as i64,
            prompts_len as i64,
            1,
        ]);
        let yq =
            Tensor::from_slice(&prompts.yq.iter().map(|&y| y as f32).collect::<Vec<_>>()).view([batch as i64, 1, 1]);
        let targets_t = Tensor::cat(&[ys, yq], 1);
        let loss_t = (all.slice(1, 0, t, 2) - &targets_t).square().mean(Kind::Float);
        let params: Vec<Tensor> = vars.iter().map(|(_, v)| v.shallow_clone()).collect();
        let grads_t = Tensor::run_backward(&[&loss_t], &params, false, false);

        let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
        let lengths: Vec<usize> = vars.iter().map(|(_, v)| v.numel()).collect();
        let flat: Vec<f32> =
            vars.iter().flat_map(|(_, v)| Vec::<f32>::try_from(v.detach().reshape([-1])).unwrap()).collect();
        let tokens = crate::layout::TokenLayout::Classic.token_buffer(&prompts, |x| x as f32);
        let targets = Vec::<f32>::try_from(targets_t.reshape([-1])).unwrap();
        let mut fused = FusedGpt::new(&names, &lengths, &gpt, dims).unwrap();
        let mut grad = vec![f32::NAN; fused.parameters()];
        let loss = fused.loss_and_grad(&flat, &tokens, &targets, batch, &mut grad).unwrap();
        let want = f64::try_from(&loss_t).unwrap();
        assert!((loss as f64 - want).abs() <= 1e-5 * want, "loss {loss} vs libtorch {want}");
        let largest = grads_t.iter().map(|g| f64::try_from(g.abs().max()).unwrap() as f32).fold(0f32, f32::max);
        let mut at = 0;
        for ((name, n), g) in names.iter().zip(&lengths).zip(&grads_t) {
            let want = Vec::<f32>::try_from(g.reshape([-1])).unwrap();
            let got = &grad[at..at + n];
            at += n;
            // (A floor: some gradients are zero in exact arithmetic, e.g. the key biases', since softmax
            // ignores a constant added to a row; both sides then hold rounding noise.)
            let size = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3 * largest);
            let diff = want.iter().zip(got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 2e-4 * size, "{name}: gradient off by {diff:e} (largest entry {size:e})");
        }
    }

    #[test]
    fn the_fused_gradient_is_libtorchs() {
        let dims = Dims { x_dim: 3, y_dim: 1, context_len: 5 };
        compare(GptConfig { layers: 2, heads: 2, width: 16 }, dims, 5, 7);
        // A curriculum stage: prompts shorter than the positions the model has.
        compare(GptConfig { layers: 1, heads: 4, width: 16 }, dims, 2, 3);
    }

    #[test]
    fn exp_and_tanh_are_accurate() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.004; // −80 … 80
            let e = exp(x) as f64;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max(((e - want) / want).abs());
            let x = i as f32 * 0.0005; // −10 … 10
            worst_tanh = worst_tanh.max((tanh(x) as f64 - (x as f64).tanh()).abs());
        }
        assert!(worst_exp < 5e-7, "exp: relative error {worst_exp:e}");
        assert!(worst_tanh < 5e-7, "tanh: absolute error {worst_tanh:e}");
    }
}
