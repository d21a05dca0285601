//! A hand-written training step (forward, backward, global-norm clipping, Adam) for the linear
//! self-attention family of von Oswald et al. 2023 (the model of [`crate::models::transformer`]
//! without softmax, LayerNorm, MLP or positional encodings): the `fused` training engine.
//!
//! libtorch spends a step of these tiny models (tokens 11 × 11) on thousands of 11 × 11 matrix
//! products, one per prompt, each too small for a BLAS kernel. Here the batch is the innermost,
//! vectorised axis instead ("batch-last"): prompts go in blocks of [`LANES`], every quantity of a
//! block is an array of `[f32; LANES]`, and every product over the tiny dimensions is a loop of
//! SIMD multiply-adds across the block's prompts. A block (all layers, forward and backward) stays
//! in the L1/L2 cache; nothing is allocated per step.
//!
//! ## The algebra (row-vector style, as the model: `x @ W`)
//!
//! Tokens E (T × D per prompt, T = N + 1, the query last). Keys and values come from the N
//! context rows, so for linear attention with heads h and per-layer parameters q, k, v (D × H·K)
//! and o (H·K × D), writing A_h = Q_h K_hᵀ and B_h = V_h O_h (D × D, shared by the batch) and
//! C = Σ_{i<N} e_iᵀ e_i (D × D, one per prompt):
//!
//! ```text
//! attn(E) = E · M,   M = Σ_h A_h C B_h,   E' = clip(E + E M)
//! ```
//!
//! (Σᵢ eᵢᵀeᵢ first, then two D × D products: cheaper than the T × N attention pattern.) The
//! prediction is ŷ = −E_L[query, y-entries], so the last layer needs only M's y-columns:
//! M[:, y] = Σ_h A_h (C B_h[:, y]). Backward, with G = ∂L/∂E' (masked where the clip is active):
//!
//! ```text
//! ∂L/∂E  = G (I + M)ᵀ  +  [i < N] · e_i (S + Sᵀ),      S = ∂L/∂C = Σ_h A_hᵀ (EᵀG) B_hᵀ
//! ∂L/∂A_h = Σ_b (EᵀG) B_hᵀ C,    ∂L/∂B_h = Σ_b (A_h C)ᵀ (EᵀG)
//! ∂L/∂Q_h = ∂A_h K_h,  ∂L/∂K_h = ∂A_hᵀ Q_h,  ∂L/∂V_h = ∂B_h O_hᵀ,  ∂L/∂O_h = V_hᵀ ∂B_h
//! ```
//!
//! The last layer's terms are rank one (only the query row of G is non-zero) and are computed
//! as such. The step is checked against libtorch's autograd on random inputs (forward, every
//! gradient, the Adam update) in the tests below and in `tests/lab.rs`.
//!
//! Determinism: prompts are split into a fixed number of segments, each with its own gradient
//! accumulators, summed in segment order, so the result does not depend on the thread count.

use anyhow::{bail, Context};

use crate::config::RunConfig;

/// Prompts per SIMD block: one AVX2 register of f32.
pub const LANES: usize = 8;
/// Gradient segments (fixed, so that results do not depend on the number of threads).
const SEGMENTS: usize = 16;

/// One value per prompt of a block.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(32))]
struct V([f32; LANES]);

impl V {
    const ZERO: V = V([0.0; LANES]);

    #[inline(always)]
    fn splat(x: f32) -> V {
        V([x; LANES])
    }

    #[inline(always)]
    fn add(self, o: V) -> V {
        let mut r = self;
        for i in 0..LANES {
            r.0[i] += o.0[i];
        }
        r
    }

    #[inline(always)]
    fn mul(self, o: V) -> V {
        let mut r = self;
        for i in 0..LANES {
            r.0[i] *= o.0[i];
        }
        r
    }

    /// self + a·b, fused where the CPU has FMA (`F`).
    #[inline(always)]
    fn fma<const F: bool>(self, a: V, b: V) -> V {
        let mut r = self;
        for i in 0..LANES {
            r.0[i] = if F { a.0[i].mul_add(b.0[i], r.0[i]) } else { a.0[i] * b.0[i] + r.0[i] };
        }
        r
    }

    #[inline(always)]
    fn sum(self) -> f64 {
        self.0.iter().map(|&x| x as f64).sum()
    }
}

/// A matrix operand: per-prompt lanes or one matrix shared by the batch, with strides, so that
/// a transpose is a view.
trait Operand {
    fn at(&self, r: usize, c: usize) -> V;
}

/// Per-prompt values; element (r, c) at `data[r·rs + c·cs]`.
struct Lanes<'a> {
    data: &'a [V],
    rs: usize,
    cs: usize,
}

/// A matrix shared by the batch; element (r, c) at `data[r·rs + c·cs]`.
struct Shared<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl Operand for Lanes<'_> {
    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> V {
        let i = r * self.rs + c * self.cs;
        debug_assert!(i < self.data.len());
        // SAFETY: every caller indexes within the (rows × cols) view it built over `data`
        // (`matmul` checks the view's extent once, before its loops).
        unsafe { *self.data.get_unchecked(i) }
    }
}

impl Operand for Shared<'_> {
    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> V {
        let i = r * self.rs + c * self.cs;
        debug_assert!(i < self.data.len());
        // SAFETY: as for `Lanes`.
        V::splat(unsafe { *self.data.get_unchecked(i) })
    }
}

/// The largest index an operand view touches for (rows × cols), so `matmul` can check it once.
trait Extent {
    fn fits(&self, rows: usize, cols: usize) -> bool;
}
impl Extent for Lanes<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}
impl Extent for Shared<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Row-major (rows × cols) lanes, and its transpose.
fn lanes(data: &[V], cols: usize) -> Lanes<'_> {
    Lanes { data, rs: cols, cs: 1 }
}
fn lanes_t(data: &[V], cols: usize) -> Lanes<'_> {
    Lanes { data, rs: 1, cs: cols }
}
fn shared(data: &[f32], cols: usize) -> Shared<'_> {
    Shared { data, rs: cols, cs: 1 }
}
fn shared_t(data: &[f32], cols: usize) -> Shared<'_> {
    Shared { data, rs: 1, cs: cols }
}

/// out[i, j0..j0+CH] = (or +=) Σ_p a(i, p) b(p, j), the CH accumulators held in registers.
#[inline(always)]
fn matmul_cols<const F: bool, const CH: usize>(
    out: &mut [V],
    n: usize,
    (i, j0): (usize, usize),
    k: usize,
    a: &impl Operand,
    b: &impl Operand,
    accumulate: bool,
) {
    let dst = &mut out[i * n + j0..i * n + j0 + CH];
    let mut acc = [V::ZERO; CH];
    if accumulate {
        acc.copy_from_slice(dst);
    }
    for p in 0..k {
        let x = a.at(i, p);
        for (c, slot) in acc.iter_mut().enumerate() {
            *slot = slot.fma::<F>(x, b.at(p, j0 + c));
        }
    }
    dst.copy_from_slice(&acc);
}

/// Output columns [j, j + w) of row i, with w ≤ 12 known at compile time.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn matmul_tail<const F: bool>(
    out: &mut [V],
    n: usize,
    at: (usize, usize),
    k: usize,
    a: &impl Operand,
    b: &impl Operand,
    accumulate: bool,
    w: usize,
) {
    macro_rules! cols {
        ($($w:literal)*) => {
            match w {
                $($w => matmul_cols::<F, $w>(out, n, at, k, a, b, accumulate),)*
                _ => unreachable!("tails are at most 12 wide"),
            }
        };
    }
    cols!(0 1 2 3 4 5 6 7 8 9 10 11 12)
}

/// out (m × n, row-major) = (or +=) a (m × k) · b (k × n). Rows of up to 12 outputs are
/// computed whole (12 vector accumulators: enough independent FMAs to hide their latency);
/// wider rows 8 at a time.
#[inline(always)]
fn matmul<const F: bool, A: Operand + Extent, B: Operand + Extent>(
    out: &mut [V],
    (m, k, n): (usize, usize, usize),
    a: &A,
    b: &B,
    accumulate: bool,
) {
    assert!(out.len() >= m * n && a.fits(m, k) && b.fits(k, n), "operands smaller than (m, k, n)");
    for i in 0..m {
        let mut j = 0;
        while n - j > 12 {
            matmul_cols::<F, 8>(out, n, (i, j), k, a, b, accumulate);
            j += 8;
        }
        matmul_tail::<F>(out, n, (i, j), k, a, b, accumulate, n - j);
    }
}

/// The residual clip: x clamped to [−c, c] (no clip: x).
#[inline(always)]
fn clipped(x: f32, clip: Option<f32>) -> f32 {
    clip.map_or(x, |c| x.clamp(-c, c))
}

/// Whether the gradient passes the clip at pre-clip value x (libtorch's clamp backward: inside
/// [−c, c], ends included).
#[inline(always)]
fn passes(x: f32, clip: Option<f32>) -> bool {
    clip.is_none_or(|c| (-c..=c).contains(&x))
}

/// C = Σ_{i<N} e_iᵀ e_i for tokens E (T × D).
#[inline(always)]
fn gram<const F: bool>(c: &mut [V], e: &[V], n_ctx: usize, d: usize) {
    matmul::<F, _, _>(c, (d, n_ctx, d), &lanes_t(e, d), &lanes(e, d), false);
}

/// Sizes of a model the fused engine trains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LsaShape {
    /// Token width D = d + o.
    pub width: usize,
    /// Tokens per prompt T = N + 1 (the query last).
    pub tokens: usize,
    /// The last `y_dim` entries of the query are the prediction (negated).
    pub y_dim: usize,
    pub heads: usize,
    pub key_size: usize,
    /// Applied layers.
    pub layers: usize,
    pub recurrent: bool,
    /// Residual stream clipped to [−c, c] after every layer.
    pub token_clip: Option<f32>,
}

impl LsaShape {
    /// The shape of `config`'s model, or why the fused engine cannot train it.
    pub fn of(config: &RunConfig) -> anyhow::Result<Self> {
        let m = &config.model;
        if let Some(what) = config.fused_unsupported() {
            bail!("the fused engine trains linear self-attention only (this model has {what})");
        }
        let dims = config.dims();
        let (tokens, width) = m.tokens.shape(dims);
        Ok(Self {
            width,
            tokens,
            y_dim: dims.y_dim,
            heads: m.heads,
            key_size: m.key_size.context("resolved config")?,
            layers: m.layers,
            recurrent: m.recurrent,
            token_clip: m.token_clip.map(|c| c as f32),
        })
    }

    fn param_layers(&self) -> usize {
        if self.recurrent {
            1
        } else {
            self.layers
        }
    }

    fn inner(&self) -> usize {
        self.heads * self.key_size
    }

    /// Multiply-adds per prompt of one training step (forward and backward), counted from the
    /// shapes as [`fused`](self) computes them: see `flops_per_step`.
    fn macs_per_prompt(&self) -> f64 {
        let (d, t, n, h, o) =
            (self.width as f64, self.tokens as f64, (self.tokens - 1) as f64, self.heads as f64, self.y_dim as f64);
        let gram = n * d * (d + 1.0) / 2.0;
        // Full layer: forward C, A_h C, (A_h C) B_h, E M; backward EᵀG, G Mᵀ, and per head
        // B_hᵀ C, ∂M (B_hᵀ C), (A_h C)ᵀ ∂M, A_hᵀ ∂M, (A_hᵀ ∂M) B_hᵀ; then E_ctx (S + Sᵀ).
        let full_fwd = gram + 2.0 * h * d * d * d + t * d * d;
        let full_bwd = 2.0 * t * d * d + 5.0 * h * d * d * d + n * d * d;
        // Last layer: C, and per head and y-column C B_h[:,y], A_h (…), the rank-one ∂A_h,
        // A_hᵀ e_q, C (A_hᵀ e_q), and ∂C's two rank-one terms on the context rows.
        let last = gram + o * h * (5.0 * d * d + 4.0 * n * d);
        let full = (self.layers - 1) as f64;
        // The first layer's input is data: its ∂E is not computed.
        let first_saved = if self.layers > 1 { t * d * d + n * d * d } else { 0.0 };
        full * (full_fwd + full_bwd) + last - first_saved
    }

    /// FLOPs of one training step of `batch` prompts (2 per multiply-add), parameter updates
    /// and data generation not included.
    pub fn flops_per_step(&self, batch: usize) -> f64 {
        2.0 * self.macs_per_prompt() * batch as f64
    }
}

/// Parameters of one parameter layer, row-major as the model stores them.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    /// (D, H·K)
    pub q: Vec<f32>,
    /// (D, H·K)
    pub k: Vec<f32>,
    /// (D, H·K)
    pub v: Vec<f32>,
    /// (H·K, D)
    pub o: Vec<f32>,
}

impl LayerParams {
    fn zeros(shape: &LsaShape) -> Self {
        let n = shape.width * shape.inner();
        Self { q: vec![0.0; n], k: vec![0.0; n], v: vec![0.0; n], o: vec![0.0; n] }
    }
    fn tensors(&self) -> [&Vec<f32>; 4] {
        [&self.q, &self.k, &self.v, &self.o]
    }
    fn tensors_mut(&mut self) -> [&mut Vec<f32>; 4] {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o]
    }
}

/// Per-block scratch: everything a block of [`LANES`] prompts needs for one step.
struct Workspace {
    /// Input of every applied layer (T × D each).
    e: Vec<Vec<V>>,
    /// Pre-clip output of every full layer (only with token clipping).
    u: Vec<Vec<V>>,
    /// C of every applied layer (D × D).
    c: Vec<Vec<V>>,
    /// A_h C of every full layer and head (D × D).
    ac: Vec<Vec<V>>,
    /// M of every full layer (D × D).
    m: Vec<Vec<V>>,
    /// Last layer: C B_h[:, y] per (head, y) (D).
    cb: Vec<V>,
    /// Last layer: M[:, y] per y (D).
    mcol: Vec<V>,
    /// Last layer: A_hᵀ e_q per head (D).
    r: Vec<V>,
    /// The query's y-entries before the clip, per y.
    pre: Vec<V>,
    /// ∂L/∂(those entries), per y.
    gq: Vec<V>,
    g: Vec<V>,
    de: Vec<V>,
    dm: Vec<V>,
    x: Vec<V>,
    t1: Vec<V>,
    dc: Vec<V>,
    tmp: Vec<V>,
}

impl Workspace {
    fn new(s: &LsaShape) -> Self {
        let (td, dd, full) = (s.tokens * s.width, s.width * s.width, s.layers - 1);
        let z = |n: usize| vec![V::ZERO; n];
        Self {
            e: (0..s.layers).map(|_| z(td)).collect(),
            u: (0..if s.token_clip.is_some() { full } else { 0 }).map(|_| z(td)).collect(),
            c: (0..s.layers).map(|_| z(dd)).collect(),
            ac: (0..full * s.heads).map(|_| z(dd)).collect(),
            m: (0..full).map(|_| z(dd)).collect(),
            cb: z(s.heads * s.y_dim * s.width),
            mcol: z(s.y_dim * s.width),
            r: z(s.heads * s.width),
            pre: z(s.y_dim),
            gq: z(s.y_dim),
            g: z(td),
            de: z(td),
            dm: z(dd),
            x: z(dd),
            t1: z(dd),
            dc: z(dd),
            tmp: z(s.width),
        }
    }
}

/// Per-lane gradient accumulators ∂A_h, ∂B_h of every parameter layer and head (D × D each).
#[derive(Clone)]
struct Accumulators {
    da: Vec<Vec<V>>,
    db: Vec<Vec<V>>,
    loss: V,
}

impl Accumulators {
    fn new(s: &LsaShape) -> Self {
        let n = s.param_layers() * s.heads;
        let dd = s.width * s.width;
        Self { da: vec![vec![V::ZERO; dd]; n], db: vec![vec![V::ZERO; dd]; n], loss: V::ZERO }
    }
    fn clear(&mut self) {
        self.da.iter_mut().chain(self.db.iter_mut()).for_each(|m| m.fill(V::ZERO));
        self.loss = V::ZERO;
    }
}

/// A_h = Q_h K_hᵀ and B_h = V_h O_h of every parameter layer and head, for one step.
struct Products {
    a: Vec<Vec<f32>>,
    b: Vec<Vec<f32>>,
}

impl Products {
    fn of(s: &LsaShape, params: &[LayerParams]) -> Self {
        let (d, kk, inner) = (s.width, s.key_size, s.inner());
        let mut a = Vec::new();
        let mut b = Vec::new();
        for p in params {
            for h in 0..s.heads {
                let mut ah = vec![0.0f32; d * d];
                let mut bh = vec![0.0f32; d * d];
                for i in 0..d {
                    for j in 0..d {
                        let (mut sa, mut sb) = (0.0f32, 0.0f32);
                        for k in h * kk..(h + 1) * kk {
                            sa += p.q[i * inner + k] * p.k[j * inner + k];
                            sb += p.v[i * inner + k] * p.o[k * d + j];
                        }
                        ah[i * d + j] = sa;
                        bh[i * d + j] = sb;
                    }
                }
                a.push(ah);
                b.push(bh);
            }
        }
        Self { a, b }
    }
}

/// Forward of one block of prompts (`lanes_here` real ones; the rest zero): every full layer's
/// input, C, A_h C, M (and pre-clip output), and the last layer's C B_h[:, y], M[:, y] and the
/// query's y-entries before the clip (`ws.pre`).
#[inline(always)]
fn forward_block<const F: bool>(s: &LsaShape, prod: &Products, ws: &mut Workspace, tokens: &[f32], lanes_here: usize) {
    let (d, t, n, o, hn) = (s.width, s.tokens, s.tokens - 1, s.y_dim, s.heads);
    let td = t * d;
    // Load tokens batch-last: e[0][t·D + j].lane = tokens[lane][t][j]; missing lanes are zero
    // prompts with zero targets, which contribute nothing.
    for (idx, slot) in ws.e[0].iter_mut().enumerate() {
        let mut v = V::ZERO;
        for lane in 0..lanes_here {
            v.0[lane] = tokens[lane * td + idx];
        }
        *slot = v;
    }
    let param = |l: usize| if s.recurrent { 0 } else { l };
    let clip = s.token_clip;

    // ---- forward: the full layers ----
    for l in 0..s.layers - 1 {
        let p = param(l);
        let (e_prev, e_rest) = ws.e.split_at_mut(l + 1);
        let e = &e_prev[l];
        gram::<F>(&mut ws.c[l], e, n, d);
        let m = &mut ws.m[l];
        for h in 0..hn {
            let ac = &mut ws.ac[l * hn + h];
            matmul::<F, _, _>(ac, (d, d, d), &shared(&prod.a[p * hn + h], d), &lanes(&ws.c[l], d), false);
            matmul::<F, _, _>(m, (d, d, d), &lanes(ac, d), &shared(&prod.b[p * hn + h], d), h > 0);
        }
        let out: &mut Vec<V> = match clip {
            Some(_) => &mut ws.u[l],
            None => &mut e_rest[0],
        };
        out.copy_from_slice(e);
        matmul::<F, _, _>(out, (t, d, d), &lanes(e, d), &lanes(m, d), true);
        if let Some(c) = clip {
            for (dst, src) in e_rest[0].iter_mut().zip(ws.u[l].iter()) {
                *dst = V(src.0.map(|x| clipped(x, Some(c))));
            }
        }
    }

    // ---- forward: the last layer, query row and y-columns only ----
    let last = s.layers - 1;
    let p_last = param(last);
    let e = &ws.e[last];
    gram::<F>(&mut ws.c[last], e, n, d);
    let eq = &e[n * d..(n + 1) * d];
    for y in 0..o {
        let col = d - o + y;
        let mcol = &mut ws.mcol[y * d..(y + 1) * d];
        for h in 0..hn {
            let cb = &mut ws.cb[(h * o + y) * d..(h * o + y + 1) * d];
            let bcol = Shared { data: &prod.b[p_last * hn + h][col..], rs: d, cs: 0 };
            matmul::<F, _, _>(cb, (d, d, 1), &lanes(&ws.c[last], d), &bcol, false);
            matmul::<F, _, _>(mcol, (d, d, 1), &shared(&prod.a[p_last * hn + h], d), &lanes(cb, 1), h > 0);
        }
        let mut pre = eq[col];
        for a in 0..d {
            pre = pre.fma::<F>(eq[a], mcol[a]);
        }
        ws.pre[y] = pre;
    }
}

/// Predictions and their sensitivity to the query input (∂ŷ_last/∂x_q) for one block. The
/// query token is never a key or value, so its gradient runs through its own row alone:
/// ∂ŷ/∂e_q = −[clip passes] (δ_y + M_{L−1}[:, y]) then ← (· ⊙ [clip passes]) (I + M_l)ᵀ down
/// the full layers.
#[inline(always)]
fn eval_block<const F: bool>(
    s: &LsaShape,
    prod: &Products,
    ws: &mut Workspace,
    tokens: &[f32],
    lanes_here: usize,
    preds: &mut [f32],
    sens: &mut [f32],
) {
    forward_block::<F>(s, prod, ws, tokens, lanes_here);
    let (d, n, o) = (s.width, s.tokens - 1, s.y_dim);
    let x_dim = d - o;
    let clip = s.token_clip;
    let pass = |x: f32| passes(x, clip);
    for y in 0..o {
        for lane in 0..lanes_here {
            let pre = ws.pre[y].0[lane];
            preds[lane * o + y] = -clipped(pre, clip);
        }
    }
    // r = ∂ŷ_last/∂e_q at the last layer's input, then down the full layers.
    let y = o - 1;
    let col = d - o + y;
    let mcol = &ws.mcol[y * d..(y + 1) * d];
    let mut r = vec![V::ZERO; d];
    let g = V(std::array::from_fn(|lane| if pass(ws.pre[y].0[lane]) { -1.0 } else { 0.0 }));
    for a in 0..d {
        r[a] = g.mul(mcol[a]);
    }
    r[col] = r[col].add(g);
    let mut next = vec![V::ZERO; d];
    for l in (0..s.layers - 1).rev() {
        if clip.is_some() {
            let u = &ws.u[l][n * d..(n + 1) * d];
            for a in 0..d {
                for lane in 0..LANES {
                    if !pass(u[a].0[lane]) {
                        r[a].0[lane] = 0.0;
                    }
                }
            }
        }
        // next = r (I + M)ᵀ: next[a] = r[a] + Σ_c M[a][c] r[c]
        matmul::<F, _, _>(&mut next, (d, d, 1), &lanes(&ws.m[l], d), &lanes(&r, 1), false);
        for a in 0..d {
            r[a] = r[a].add(next[a]);
        }
    }
    for lane in 0..lanes_here {
        for i in 0..x_dim {
            sens[lane * x_dim + i] = r[i].0[lane];
        }
    }
}

/// Forward and backward of one block of prompts; adds its gradients to `acc`.
/// `tokens`: (LANES, T, D) row-major; `targets`: (LANES, o); `inv_batch` = 1/B.
#[inline(always)]
fn block_step<const F: bool>(
    s: &LsaShape,
    prod: &Products,
    ws: &mut Workspace,
    acc: &mut Accumulators,
    tokens: &[f32],
    targets: &[f32],
    inv_batch: f32,
) {
    let (d, t, n, o, hn) = (s.width, s.tokens, s.tokens - 1, s.y_dim, s.heads);
    let lanes_here = targets.len() / o;
    forward_block::<F>(s, prod, ws, tokens, lanes_here);
    let param = |l: usize| if s.recurrent { 0 } else { l };
    let clip = s.token_clip;
    let last = s.layers - 1;
    let p_last = param(last);

    // ---- loss and ∂L/∂(query y-entries before the clip) ----
    let gq = &mut ws.gq;
    for y in 0..o {
        let mut g = V::ZERO;
        let mut sq = V::ZERO;
        for lane in 0..LANES {
            let pre = ws.pre[y].0[lane];
            let pred = -clipped(pre, clip);
            let target = if lane < lanes_here { targets[lane * o + y] } else { 0.0 };
            let err = pred - target;
            sq.0[lane] = err * err;
            let pass = passes(pre, clip);
            g.0[lane] = if pass { -err * inv_batch } else { 0.0 };
        }
        acc.loss = acc.loss.add(sq);
        gq[y] = g;
    }

    // ---- backward: the last layer (rank one) ----
    let g_buf = &mut ws.g;
    g_buf.fill(V::ZERO);
    let e = &ws.e[last];
    let eq = &e[n * d..(n + 1) * d];
    for (h, r) in ws.r.chunks_exact_mut(d).enumerate() {
        // r_h = A_hᵀ e_qᵀ
        matmul::<F, _, _>(r, (d, d, 1), &shared_t(&prod.a[p_last * hn + h], d), &lanes(eq, 1), false);
    }
    for (y, &g) in ws.gq.iter().enumerate() {
        let col = d - o + y;
        // ∂E_q = g (δ_col + M[:, y])
        if s.layers > 1 {
            let mcol = &ws.mcol[y * d..(y + 1) * d];
            let row = &mut g_buf[n * d..(n + 1) * d];
            for a in 0..d {
                row[a] = row[a].fma::<F>(g, mcol[a]);
            }
            row[col] = row[col].add(g);
        }
        for h in 0..hn {
            let i = p_last * hn + h;
            let cb = &ws.cb[(h * o + y) * d..(h * o + y + 1) * d];
            let r = &ws.r[h * d..(h + 1) * d];
            // ∂A_h += g e_qᵀ (C B_h[:, y])ᵀ
            let da = &mut acc.da[i];
            for a in 0..d {
                let ga = g.mul(eq[a]);
                for b in 0..d {
                    da[a * d + b] = da[a * d + b].fma::<F>(ga, cb[b]);
                }
            }
            // ∂B_h[:, y] += g C r_h
            let cr = &mut ws.tmp;
            matmul::<F, _, _>(cr, (d, d, 1), &lanes(&ws.c[last], d), &lanes(r, 1), false);
            let db = &mut acc.db[i];
            for a in 0..d {
                db[a * d + col] = db[a * d + col].fma::<F>(g, cr[a]);
            }
            // ∂C = g r_h B_h[:, y]ᵀ: ∂e_i += g [(e_i·r_h) B_h[:, y]ᵀ + (e_i·B_h[:, y]) r_hᵀ]
            if s.layers > 1 {
                let b = &prod.b[i];
                for ti in 0..n {
                    let ei = &e[ti * d..(ti + 1) * d];
                    let (mut er, mut eb) = (V::ZERO, V::ZERO);
                    for a in 0..d {
                        er = er.fma::<F>(ei[a], r[a]);
                        eb = eb.add(ei[a].mul(V::splat(b[a * d + col])));
                    }
                    let (ger, geb) = (g.mul(er), g.mul(eb));
                    let row = &mut g_buf[ti * d..(ti + 1) * d];
                    for a in 0..d {
                        row[a] = row[a].fma::<F>(ger, V::splat(b[a * d + col])).fma::<F>(geb, r[a]);
                    }
                }
            }
        }
    }

    // ---- backward: the full layers, last to first ----
    for l in (0..s.layers - 1).rev() {
        let p = param(l);
        // g_buf holds ∂L/∂E_{l+1}; mask it where the clip was active.
        if let Some(c) = clip {
            for (g, u) in ws.g.iter_mut().zip(ws.u[l].iter()) {
                for lane in 0..LANES {
                    if !passes(u.0[lane], Some(c)) {
                        g.0[lane] = 0.0;
                    }
                }
            }
        }
        let e = &ws.e[l];
        // ∂M = Eᵀ G
        matmul::<F, _, _>(&mut ws.dm, (d, t, d), &lanes_t(e, d), &lanes(&ws.g, d), false);
        if l > 0 {
            // ∂E = G + G Mᵀ
            ws.de.copy_from_slice(&ws.g);
            matmul::<F, _, _>(&mut ws.de, (t, d, d), &lanes(&ws.g, d), &lanes_t(&ws.m[l], d), true);
        }
        for h in 0..hn {
            let i = p * hn + h;
            // ∂A_h += ∂M (B_hᵀ C)
            matmul::<F, _, _>(&mut ws.x, (d, d, d), &shared_t(&prod.b[i], d), &lanes(&ws.c[l], d), false);
            matmul::<F, _, _>(&mut acc.da[i], (d, d, d), &lanes(&ws.dm, d), &lanes(&ws.x, d), true);
            // ∂B_h += (A_h C)ᵀ ∂M
            matmul::<F, _, _>(&mut acc.db[i], (d, d, d), &lanes_t(&ws.ac[l * hn + h], d), &lanes(&ws.dm, d), true);
            if l > 0 {
                // S += A_hᵀ ∂M B_hᵀ
                matmul::<F, _, _>(&mut ws.t1, (d, d, d), &shared_t(&prod.a[i], d), &lanes(&ws.dm, d), false);
                matmul::<F, _, _>(&mut ws.dc, (d, d, d), &lanes(&ws.t1, d), &shared_t(&prod.b[i], d), h > 0);
            }
        }
        if l > 0 {
            // ∂e_i += e_i (S + Sᵀ) for the context rows
            for a in 0..d {
                for b in a..d {
                    let sym = ws.dc[a * d + b].add(ws.dc[b * d + a]);
                    ws.dc[a * d + b] = sym;
                    ws.dc[b * d + a] = sym;
                }
            }
            matmul::<F, _, _>(&mut ws.de[..n * d], (n, d, d), &lanes(e, d), &lanes(&ws.dc, d), true);
            std::mem::swap(&mut ws.g, &mut ws.de);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_step_avx2(
    s: &LsaShape,
    prod: &Products,
    ws: &mut Workspace,
    acc: &mut Accumulators,
    tokens: &[f32],
    targets: &[f32],
    inv_batch: f32,
) {
    block_step::<true>(s, prod, ws, acc, tokens, targets, inv_batch)
}

/// Whether this CPU runs the AVX2 + FMA build of the kernels.
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[allow(unreachable_code)]
    false
}

fn run_block(
    s: &LsaShape,
    prod: &Products,
    ws: &mut Workspace,
    acc: &mut Accumulators,
    tokens: &[f32],
    targets: &[f32],
    inv_batch: f32,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for (checked just above).
        unsafe { block_step_avx2(s, prod, ws, acc, tokens, targets, inv_batch) };
        return;
    }
    block_step::<false>(s, prod, ws, acc, tokens, targets, inv_batch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn eval_block_avx2(
    s: &LsaShape,
    prod: &Products,
    ws: &mut Workspace,
    tokens: &[f32],
    lanes_here: usize,
    preds: &mut [f32],
    sens: &mut [f32],
) {
    eval_block::<true>(s, prod, ws, tokens, lanes_here, preds, sens)
}

/// Adam's state for one parameter tensor.
#[derive(Clone, Debug)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// A linear self-attention model with its Adam state, trained by the fused step.
pub struct FusedLsa {
    pub shape: LsaShape,
    pub params: Vec<LayerParams>,
    moments: Vec<[Moments; 4]>,
    adam_step: u64,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    grad_clip: f32,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    workspaces: Vec<Workspace>,
    segments: Vec<Accumulators>,
    /// The last step's parameter gradients (after clipping), for tests.
    pub last_grads: Vec<LayerParams>,
}

/// Gradients of the parameters from the per-lane accumulators.
fn parameter_grads(s: &LsaShape, params: &[LayerParams], da: &[Vec<f64>], db: &[Vec<f64>]) -> Vec<LayerParams> {
    let (d, kk, inner, hn) = (s.width, s.key_size, s.inner(), s.heads);
    params
        .iter()
        .enumerate()
        .map(|(p, w)| {
            let mut g = LayerParams::zeros(s);
            for h in 0..hn {
                let (a, b) = (&da[p * hn + h], &db[p * hn + h]);
                for k in h * kk..(h + 1) * kk {
                    for i in 0..d {
                        // ∂Q_h = ∂A K_h, ∂K_h = ∂Aᵀ Q_h, ∂V_h = ∂B O_hᵀ, ∂O_h = V_hᵀ ∂B
                        let (mut gq, mut gk, mut gv, mut go) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                        for j in 0..d {
                            gq += a[i * d + j] * w.k[j * inner + k] as f64;
                            gk += a[j * d + i] * w.q[j * inner + k] as f64;
                            gv += b[i * d + j] * w.o[k * d + j] as f64;
                            go += w.v[j * inner + k] as f64 * b[j * d + i];
                        }
                        g.q[i * inner + k] = gq as f32;
                        g.k[i * inner + k] = gk as f32;
                        g.v[i * inner + k] = gv as f32;
                        g.o[k * d + i] = go as f32;
                    }
                }
            }
            g
        })
        .collect()
}

impl FusedLsa {
    /// A model of `config`'s shape with all parameters zero (set them with [`FusedLsa::params`]).
    pub fn new(config: &RunConfig) -> anyhow::Result<Self> {
        let shape = LsaShape::of(config)?;
        let t = &config.train;
        let params: Vec<LayerParams> = (0..shape.param_layers()).map(|_| LayerParams::zeros(&shape)).collect();
        let n = shape.width * shape.inner();
        let zeros = || Moments { m: vec![0.0; n], v: vec![0.0; n] };
        let threads = t.threads.max(1);
        Ok(Self {
            moments: (0..params.len()).map(|_| [zeros(), zeros(), zeros(), zeros()]).collect(),
            last_grads: params.clone(),
            params,
            adam_step: 0,
            lr: t.lr,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            grad_clip: t.grad_clip.context("resolved config")? as f32,
            threads,
            pool: if threads > 1 { Some(rayon::ThreadPoolBuilder::new().num_threads(threads).build()?) } else { None },
            workspaces: (0..threads).map(|_| Workspace::new(&shape)).collect(),
            segments: (0..SEGMENTS).map(|_| Accumulators::new(&shape)).collect(),
            shape,
        })
    }

    /// Loss and parameter gradients (before clipping) of a batch: tokens (B, T, D) and
    /// targets (B, o), row-major.
    pub fn loss_and_grads(&mut self, tokens: &[f32], targets: &[f32]) -> (f64, Vec<LayerParams>) {
        let s = self.shape;
        let (td, o) = (s.tokens * s.width, s.y_dim);
        let batch = targets.len() / o;
        assert_eq!(tokens.len(), batch * td, "tokens (B, T, D) and targets (B, o) disagree");
        let prod = Products::of(&s, &self.params);
        let blocks = batch.div_ceil(LANES);
        let per_segment = blocks.div_ceil(SEGMENTS);
        let inv_batch = 1.0 / batch as f32;
        let run_segment = |seg: usize, ws: &mut Workspace, acc: &mut Accumulators| {
            acc.clear();
            for blk in seg * per_segment..((seg + 1) * per_segment).min(blocks) {
                let (lo, hi) = (blk * LANES, ((blk + 1) * LANES).min(batch));
                run_block(&s, &prod, ws, acc, &tokens[lo * td..hi * td], &targets[lo * o..hi * o], inv_batch);
            }
        };
        if self.threads == 1 {
            let ws = &mut self.workspaces[0];
            for (seg, acc) in self.segments.iter_mut().enumerate() {
                run_segment(seg, ws, acc);
            }
        } else {
            let per_thread = SEGMENTS.div_ceil(self.threads);
            let pool = self.pool.as_ref().expect("a pool when threads > 1");
            pool.scope(|scope| {
                for (chunk, (accs, ws)) in
                    self.segments.chunks_mut(per_thread).zip(self.workspaces.iter_mut()).enumerate()
                {
                    let run_segment = &run_segment;
                    scope.spawn(move |_| {
                        for (i, acc) in accs.iter_mut().enumerate() {
                            run_segment(chunk * per_thread + i, ws, acc);
                        }
                    });
                }
            });
        }
        // Sum lanes, then segments in order (f64), whatever the thread count.
        let count = s.param_layers() * s.heads;
        let dd = s.width * s.width;
        let mut da = vec![vec![0.0f64; dd]; count];
        let mut db = vec![vec![0.0f64; dd]; count];
        let mut loss = 0.0;
        for acc in &self.segments {
            for i in 0..count {
                for j in 0..dd {
                    da[i][j] += acc.da[i][j].sum();
                    db[i][j] += acc.db[i][j].sum();
                }
            }
            loss += acc.loss.sum();
        }
        let grads = parameter_grads(&s, &self.params, &da, &db);
        (0.5 * loss / batch as f64, grads)
    }

    /// Predictions (B, o) and their sensitivity ∂ŷ_last/∂x_q (B, d) for tokens (B, T, D),
    /// row-major: what evaluations compare with the reference learners, without libtorch.
    pub fn outputs(&mut self, tokens: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let s = self.shape;
        let (td, o, x_dim) = (s.tokens * s.width, s.y_dim, s.width - s.y_dim);
        let batch = tokens.len() / td;
        let prod = Products::of(&s, &self.params);
        let (mut preds, mut sens) = (vec![0.0f32; batch * o], vec![0.0f32; batch * x_dim]);
        let ws = &mut self.workspaces[0];
        let avx2 = avx2_fma();
        for blk in 0..batch.div_ceil(LANES) {
            let (lo, hi) = (blk * LANES, ((blk + 1) * LANES).min(batch));
            let (t, p, g) = (&tokens[lo * td..hi * td], &mut preds[lo * o..hi * o], &mut sens[lo * x_dim..hi * x_dim]);
            if avx2 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has the features the function is compiled for (checked above).
                unsafe {
                    eval_block_avx2(&s, &prod, ws, t, hi - lo, p, g)
                };
            } else {
                eval_block::<false>(&s, &prod, ws, t, hi - lo, p, g);
            }
        }
        (preds, sens)
    }

    /// One training step (gradient, global-norm clipping, Adam); returns the loss before the
    /// update.
    pub fn step(&mut self, tokens: &[f32], targets: &[f32]) -> f64 {
        let (loss, mut grads) = self.loss_and_grads(tokens, targets);
        // optax's clip_by_global_norm: g ← g·c/max(‖g‖, c)
        let norm = grads
            .iter()
            .flat_map(|g| g.tensors())
            .flat_map(|t| t.iter())
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt() as f32;
        // An infinite clip is no clipping (c/max(‖g‖, c) would be inf/inf).
        let scale = if self.grad_clip.is_infinite() { 1.0 } else { self.grad_clip / norm.max(self.grad_clip) };
        for g in grads.iter_mut() {
            for t in g.tensors_mut() {
                t.iter_mut().for_each(|x| *x *= scale);
            }
        }
        // Adam as libtorch's (torch::optim::Adam, no weight decay, no AMSGrad).
        self.adam_step += 1;
        // Scalars are computed in f64 and used in f32, as libtorch does.
        let bc1 = 1.0 - self.beta1.powi(self.adam_step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.adam_step as i32);
        let step_size = (self.lr / bc1) as f32;
        let sqrt_bc2 = bc2.sqrt() as f32;
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        let (c1, c2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32);
        for ((p, g), moments) in self.params.iter_mut().zip(&grads).zip(self.moments.iter_mut()) {
            for ((w, g), mo) in p.tensors_mut().into_iter().zip(g.tensors()).zip(moments.iter_mut()) {
                for i in 0..w.len() {
                    mo.m[i] = mo.m[i] * b1 + c1 * g[i];
                    mo.v[i] = mo.v[i] * b2 + c2 * g[i] * g[i];
                    let denom = mo.v[i].sqrt() / sqrt_bc2 + eps;
                    w[i] += -step_size * (mo.m[i] / denom);
                }
            }
        }
        self.last_grads = grads;
        loss
    }

    /// The parameters as the model names them (`layers.{l}.attn.{q,k,v,o}`), each with its shape.
    pub fn named(&self) -> Vec<(String, Vec<usize>, &Vec<f32>)> {
        let (d, inner) = (self.shape.width, self.shape.inner());
        let mut out = Vec::new();
        for (l, p) in self.params.iter().enumerate() {
            for (name, t) in ["q", "k", "v", "o"].iter().zip(p.tensors()) {
                let shape = if *name == "o" { vec![inner, d] } else { vec![d, inner] };
                out.push((format!("layers.{l}.attn.{name}"), shape, t));
            }
        }
        out
    }

    /// Copies the parameters from a model's variable store.
    pub fn load_from(&mut self, vs: &tch::nn::VarStore) -> anyhow::Result<()> {
        let vars = vs.variables();
        for (l, p) in self.params.iter_mut().enumerate() {
            for (name, t) in ["q", "k", "v", "o"].iter().zip(p.tensors_mut()) {
                let key = format!("layers.{l}.attn.{name}");
                let var = vars.get(&key).with_context(|| format!("the model has no `{key}`"))?;
                let flat = var.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu).flatten(0, -1);
                let values = Vec::<f32>::try_from(&flat)?;
                anyhow::ensure!(values.len() == t.len(), "`{key}` has {} values, expected {}", values.len(), t.len());
                *t = values;
            }
        }
        Ok(())
    }

    /// Copies the parameters into a model's variable store.
    pub fn store_into(&self, vs: &tch::nn::VarStore) -> anyhow::Result<()> {
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, shape, values) in self.named() {
                let var = vars.get(&name).with_context(|| format!("the model has no `{name}`"))?;
                let dims: Vec<i64> = shape.iter().map(|&x| x as i64).collect();
                let t =
                    tch::Tensor::from_slice(values).view(dims.as_slice()).to_kind(var.kind()).to_device(var.device());
                var.shallow_clone().copy_(&t);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::rng::seeded_rng;
    use crate::train::{batch_tensors, Trainer};
    use tch::{Device, Kind};

    fn config(layers: usize, recurrent: bool, edit: impl Fn(&mut RunConfig)) -> RunConfig {
        let mut c = RunConfig::preset("vo2023-fig2").unwrap();
        c.model.layers = layers;
        c.model.recurrent = recurrent;
        c.model.init_scale = Some(0.5); // large weights: every term of the gradient matters
        c.train.grad_clip = Some(1e9);
        c.train.batch = 37; // not a multiple of LANES
        edit(&mut c);
        c.resolve().unwrap()
    }

    /// Random tokens and targets of `config`'s task, and the tch trainer at its initialisation.
    fn setup(config: &RunConfig, scale: f32) -> (Vec<f32>, Vec<f32>, Trainer) {
        let dims = config.dims();
        let p = config.task().sample(&mut seeded_rng(3, 0), config.train.batch);
        let tokens: Vec<f32> = config.model.tokens.token_buffer(&p, |x| x as f32 * scale);
        let targets: Vec<f32> = p.yq.iter().map(|&y| y as f32 * scale).collect();
        let trainer = Trainer::new(config, dims, Device::Cpu).unwrap();
        (tokens, targets, trainer)
    }

    /// Host buffers → libtorch tensors (tokens (B, T, D), targets (B, o)) for the reference path.
    fn tensors(c: &RunConfig, tokens: &[f32], targets: &[f32]) -> (tch::Tensor, tch::Tensor) {
        let batch = crate::train::HostBatch { tokens: tokens.to_vec(), targets: targets.to_vec() };
        batch_tensors(&batch, c.model.tokens, c.dims(), Device::Cpu)
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f64 {
        let scale = b.iter().map(|x| x.abs() as f64).fold(0.0, f64::max).max(1e-30);
        a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max) / scale
    }

    /// Loss and every gradient of the fused step against libtorch's autograd.
    fn check(config: &RunConfig, scale: f32, threads: usize) {
        let mut config = config.clone();
        config.train.threads = threads;
        let (tokens, targets, trainer) = setup(&config, scale);
        let mut fused = FusedLsa::new(&config).unwrap();
        fused.load_from(&trainer.vs).unwrap();
        let (loss, grads) = fused.loss_and_grads(&tokens, &targets);

        let (t, y) = tensors(&config, &tokens, &targets);
        let preds = trainer.model.forward(&t, None);
        let ref_loss = (preds - &y).square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float) * 0.5;
        ref_loss.backward();
        let ref_loss = f64::try_from(&ref_loss).unwrap();
        assert!((loss - ref_loss).abs() <= 1e-5 * ref_loss.abs(), "loss {loss} vs libtorch {ref_loss}");
        let vars = trainer.vs.variables();
        let named: Vec<(String, Vec<f32>)> = {
            let mut f = FusedLsa::new(&config).unwrap();
            f.params = grads;
            f.named().into_iter().map(|(n, _, v)| (n, v.clone())).collect()
        };
        for (name, g) in named {
            let reference = Vec::<f32>::try_from(&vars[&name].grad().flatten(0, -1)).unwrap();
            let err = max_rel(&g, &reference);
            assert!(err < 1e-5, "{name}: max |fused − autograd| / max |autograd| = {err:e}");
        }
    }

    #[test]
    fn gradients_match_autograd() {
        check(&config(1, true, |_| {}), 1.0, 1);
        check(&config(2, true, |_| {}), 1.0, 1);
        check(&config(3, true, |_| {}), 1.0, 2);
        check(&config(4, false, |_| {}), 1.0, 1);
        // Two heads of size 4, two outputs.
        check(
            &config(3, false, |c| {
                c.model.heads = 2;
                c.model.key_size = Some(4);
                c.task.params.insert("y_dim".into(), serde_json::json!(2));
            }),
            1.0,
            1,
        );
    }

    #[test]
    fn gradients_match_autograd_with_token_clipping() {
        // A small clip, so that it is active: the predictions differ from the unclipped model's.
        for (c, threads) in [
            (config(4, false, |c| c.model.token_clip = Some(0.8)), 1),
            (config(3, true, |c| c.model.token_clip = Some(0.6)), 2),
        ] {
            let (tokens, targets, clipped) = setup(&c, 1.0);
            let mut unclipped_config = c.clone();
            unclipped_config.model.token_clip = None;
            let (_, _, unclipped) = setup(&unclipped_config, 1.0);
            let (t, _) = tensors(&c, &tokens, &targets);
            let gap = (clipped.model.forward(&t, None) - unclipped.model.forward(&t, None)).abs().max();
            assert!(f64::try_from(gap).unwrap() > 1e-3, "the clip is not active");
            check(&c, 1.0, threads);
        }
    }

    #[test]
    fn adam_steps_match_libtorch() {
        let mut c = config(2, true, |c| c.model.init_scale = Some(0.002 / 2.0));
        c.train.grad_clip = Some(1e-3); // the clip is active
        let (tokens, targets, mut trainer) = setup(&c, 1.0);
        let mut fused = FusedLsa::new(&c).unwrap();
        fused.load_from(&trainer.vs).unwrap();
        let (t, y) = tensors(&c, &tokens, &targets);
        for _ in 0..5 {
            let a = fused.step(&tokens, &targets);
            let b = f64::try_from(trainer.step(&t, &y)).unwrap();
            assert!((a - b).abs() <= 1e-5 * b.abs(), "loss {a} vs {b}");
        }
        let mut reference = FusedLsa::new(&c).unwrap();
        reference.load_from(&trainer.vs).unwrap();
        for (p, q) in fused.params.iter().zip(&reference.params) {
            for (x, y) in p.tensors().into_iter().zip(q.tensors()) {
                assert!(max_rel(x, y) < 1e-4, "parameters after 5 Adam steps differ: {:e}", max_rel(x, y));
            }
        }
    }

    #[test]
    fn predictions_and_sensitivities_match_autograd() {
        for c in [
            config(1, true, |_| {}),
            config(3, true, |_| {}),
            config(4, false, |c| c.model.token_clip = Some(0.8)),
            config(2, false, |c| {
                c.model.heads = 2;
                c.model.key_size = Some(4);
                c.task.params.insert("y_dim".into(), serde_json::json!(2));
            }),
        ] {
            let (tokens, targets, trainer) = setup(&c, 1.0);
            let mut fused = FusedLsa::new(&c).unwrap();
            fused.load_from(&trainer.vs).unwrap();
            let (preds, sens) = fused.outputs(&tokens);
            let (t, _) = tensors(&c, &tokens, &targets);
            let reference = crate::probe::outputs_with_sensitivity(&trainer.model, &t).unwrap();
            let as_f32 = |a: &ndarray::Array2<f64>| a.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            let (e1, e2) = (max_rel(&preds, &as_f32(&reference.preds)), max_rel(&sens, &as_f32(&reference.sens)));
            assert!(e1 < 1e-5 && e2 < 1e-5, "predictions {e1:e}, sensitivities {e2:e}");
        }
    }

    #[test]
    fn a_fused_run_is_intervened_on_through_the_libtorch_forward_which_matches_it() {
        // Interventions run the tch model the run's weights load into; with none, that forward
        // (through the cache) is bit-identical to the plain one and agrees with the fused engine.
        // (A cache that records the last layer computes all its rows, which rounds differently:
        // tests/interventions.rs checks that path to 1e-12 in f64.)
        for c in [config(1, true, |_| {}), config(3, false, |c| c.model.token_clip = Some(0.8))] {
            let (tokens, targets, trainer) = setup(&c, 1.0);
            let mut fused = FusedLsa::new(&c).unwrap();
            fused.load_from(&trainer.vs).unwrap();
            let (preds, _) = fused.outputs(&tokens);
            let (t, _) = tensors(&c, &tokens, &targets);
            let model = crate::models::Model::from(trainer.model);
            let plain = tch::no_grad(|| model.forward(&t, None));
            // The cache interventions run through, holding none: bit for bit the plain forward.
            let mut cache = crate::cache::ActivationCache::none();
            let through = tch::no_grad(|| model.forward(&t, Some(&mut cache)));
            assert!(plain.equal(&through), "a forward through the cache is not bit-identical");
            let via = crate::interventions::predict(&model, &t, Vec::new()).unwrap();
            let as_f32: Vec<f32> = via.iter().map(|&x| x as f32).collect();
            assert!(max_rel(&preds, &as_f32) < 1e-5, "fused vs libtorch: {:e}", max_rel(&preds, &as_f32));
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let c = config(3, false, |_| {});
        let (tokens, targets, trainer) = setup(&c, 1.0);
        let run = |threads: usize| {
            let mut c = c.clone();
            c.train.threads = threads;
            let mut f = FusedLsa::new(&c).unwrap();
            f.load_from(&trainer.vs).unwrap();
            f.loss_and_grads(&tokens, &targets)
        };
        let (l1, g1) = run(1);
        let (l3, g3) = run(3);
        assert_eq!(l1.to_bits(), l3.to_bits());
        assert_eq!(g1, g3);
    }
}
