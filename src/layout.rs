//! Prompts → tokens, in the two layouts of von Oswald et al. 2023 (spec §1.2):
//!
//! - `constructed` (`create_reg_data`): token i < N is e_i = (x_i, y_i) ∈ R^{d+o}; the query token
//!   (x_q, 0) comes last. Shape (B, N+1, d+o).
//! - `classic` (`create_reg_data_classic_token`): x_i and (0, y_i) are separate tokens of width d,
//!   followed by the query x_q. Shape (B, 2N+1, d).
//!
//! Either way the query token is last, its first d entries are x_q, and the model reads its
//! prediction from the last o entries of the query token.

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use icl_tasks::{Dims, Prompts};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenLayout {
    #[default]
    Constructed,
    Classic,
}

impl TokenLayout {
    /// (tokens per prompt T, token width) for prompts of these sizes.
    pub fn shape(self, dims: Dims) -> (usize, usize) {
        match self {
            TokenLayout::Constructed => (dims.context_len + 1, dims.x_dim + dims.y_dim),
            TokenLayout::Classic => (2 * dims.context_len + 1, dims.x_dim),
        }
    }

    /// The tokens of a batch of prompts as a flat row-major buffer of shape (B, T, width).
    pub fn token_buffer<T: Copy + Default>(self, p: &Prompts, cast: impl Fn(f64) -> T) -> Vec<T> {
        match self {
            TokenLayout::Constructed => token_buffer(p, cast),
            TokenLayout::Classic => classic_token_buffer(p, cast),
        }
    }
}

/// The classic layout: x_i, (0, y_i) for each context pair, then x_q; width d (needs o ≤ d).
fn classic_token_buffer<T: Copy + Default>(p: &Prompts, cast: impl Fn(f64) -> T) -> Vec<T> {
    let (b, n, d, o) = (p.batch(), p.context_len(), p.x_dim(), p.y_dim());
    assert!(o <= d, "the classic layout puts y in the last o of d entries");
    let (xs, ys, xq) = (standard(&p.xs), standard(&p.ys), p.xq.as_slice().expect("standard layout"));
    let mut buf = vec![T::default(); b * (2 * n + 1) * d];
    for (bi, prompt) in buf.chunks_exact_mut((2 * n + 1) * d).enumerate() {
        for (t, token) in prompt.chunks_exact_mut(d).enumerate() {
            let row = bi * n + t / 2;
            if t == 2 * n {
                token.iter_mut().zip(&xq[bi * d..(bi + 1) * d]).for_each(|(e, &v)| *e = cast(v));
            } else if t % 2 == 0 {
                token.iter_mut().zip(&xs[row * d..(row + 1) * d]).for_each(|(e, &v)| *e = cast(v));
            } else {
                token.iter_mut().for_each(|e| *e = cast(0.0));
                token[d - o..].iter_mut().zip(&ys[row * o..(row + 1) * o]).for_each(|(e, &v)| *e = cast(v));
            }
        }
    }
    buf
}

/// The tokens of a batch of prompts as a flat row-major buffer of shape (B, N+1, d+o).
pub fn token_buffer<T: Copy + Default>(p: &Prompts, cast: impl Fn(f64) -> T) -> Vec<T> {
    let (b, n, d, o) = (p.batch(), p.context_len(), p.x_dim(), p.y_dim());
    let width = d + o;
    let (xs, ys, xq) = (standard(&p.xs), standard(&p.ys), p.xq.as_slice().expect("standard layout"));
    let mut buf = vec![T::default(); b * (n + 1) * width];
    for (bi, prompt) in buf.chunks_exact_mut((n + 1) * width).enumerate() {
        for (i, token) in prompt.chunks_exact_mut(width).enumerate() {
            let (x, y) = token.split_at_mut(d);
            if i < n {
                let row = bi * n + i;
                x.iter_mut().zip(&xs[row * d..(row + 1) * d]).for_each(|(t, &v)| *t = cast(v));
                y.iter_mut().zip(&ys[row * o..(row + 1) * o]).for_each(|(t, &v)| *t = cast(v));
            } else {
                // The query token (x_q, 0).
                x.iter_mut().zip(&xq[bi * d..(bi + 1) * d]).for_each(|(t, &v)| *t = cast(v));
                y.iter_mut().for_each(|t| *t = cast(0.0));
            }
        }
    }
    buf
}

fn standard(a: &ndarray::Array3<f64>) -> &[f64] {
    a.as_slice().expect("prompts are in standard layout")
}

/// Tokens (B, T, width) in `layout` and targets (B, o), on `device` in `kind` (Float or Double).
pub fn tensors(layout: TokenLayout, p: &Prompts, kind: Kind, device: Device) -> (Tensor, Tensor) {
    let dims = Dims { x_dim: p.x_dim(), y_dim: p.y_dim(), context_len: p.context_len() };
    let (t, w) = layout.shape(dims);
    let tokens = match kind {
        Kind::Double => Tensor::from_slice(&layout.token_buffer(p, |x| x)),
        _ => Tensor::from_slice(&layout.token_buffer(p, |x| x as f32)),
    };
    let tokens = tokens.view([p.batch() as i64, t as i64, w as i64]).to_kind(kind).to_device(device);
    let targets = array2_to_tensor(&p.yq, kind, device);
    (tokens, targets)
}

pub fn array2_to_tensor(a: &Array2<f64>, kind: Kind, device: Device) -> Tensor {
    array_to_tensor(a, kind, device)
}

/// An f64 array of any shape (any memory layout) as a tensor of the same shape.
pub fn array_to_tensor<S, D>(a: &ndarray::ArrayBase<S, D>, kind: Kind, device: Device) -> Tensor
where
    S: ndarray::Data<Elem = f64>,
    D: ndarray::Dimension,
{
    let shape: Vec<i64> = a.shape().iter().map(|&n| n as i64).collect();
    let data: Vec<f64> = a.iter().copied().collect();
    Tensor::from_slice(&data).view(shape.as_slice()).to_kind(kind).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use icl_tasks::{build, TaskConfig, TaskRng};
    use rand::SeedableRng;

    #[test]
    fn classic_tokens_alternate_x_and_y() {
        let cfg = TaskConfig::default().with("x_dim", 3).with("context_len", 2);
        let p = build(&cfg).unwrap().sample(&mut TaskRng::seed_from_u64(0), 1);
        let buf = TokenLayout::Classic.token_buffer(&p, |x| x);
        assert_eq!(buf.len(), 5 * 3);
        assert_eq!(&buf[0..3], &[p.xs[[0, 0, 0]], p.xs[[0, 0, 1]], p.xs[[0, 0, 2]]]);
        assert_eq!(&buf[3..6], &[0.0, 0.0, p.ys[[0, 0, 0]]]);
        assert_eq!(&buf[9..12], &[0.0, 0.0, p.ys[[0, 1, 0]]]);
        assert_eq!(&buf[12..15], &[p.xq[[0, 0]], p.xq[[0, 1]], p.xq[[0, 2]]]);
    }

    #[test]
    fn query_token_is_last_with_zero_label() {
        let cfg = TaskConfig::default().with("x_dim", 3).with("context_len", 4);
        let p = build(&cfg).unwrap().sample(&mut TaskRng::seed_from_u64(0), 2);
        let buf = token_buffer(&p, |x| x);
        // prompt 1, context token 2: (x, y)
        let tok = &buf[(5 + 2) * 4..(5 + 3) * 4];
        assert_eq!(tok, &[p.xs[[1, 2, 0]], p.xs[[1, 2, 1]], p.xs[[1, 2, 2]], p.ys[[1, 2, 0]]]);
        let query = &buf[(5 + 4) * 4..];
        assert_eq!(query, &[p.xq[[1, 0]], p.xq[[1, 1]], p.xq[[1, 2]], 0.0]);
    }
}
