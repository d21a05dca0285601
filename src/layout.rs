//! Prompts → tokens, the layout of von Oswald et al. 2023 (`create_reg_data`, spec §1.2):
//! token i < N is e_i = (x_i, y_i) ∈ R^{d+o}; the query token e_N = (x_q, 0) comes last.
//! Shape (B, N+1, d+o). The model's prediction is read from the query token's y-entries.

use ndarray::Array2;
use tch::{Device, Kind, Tensor};

use icl_tasks::Prompts;

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

/// Tokens (B, N+1, d+o) and targets (B, o) on `device` in `kind` (Float or Double).
pub fn tensors(p: &Prompts, kind: Kind, device: Device) -> (Tensor, Tensor) {
    let (b, n, d, o) = (p.batch() as i64, p.context_len() as i64, p.x_dim() as i64, p.y_dim() as i64);
    let tokens = match kind {
        Kind::Double => Tensor::from_slice(&token_buffer(p, |x| x)),
        _ => Tensor::from_slice(&token_buffer(p, |x| x as f32)),
    };
    let tokens = tokens.view([b, n + 1, d + o]).to_kind(kind).to_device(device);
    let targets = array2_to_tensor(&p.yq, kind, device);
    (tokens, targets)
}

pub fn array2_to_tensor(a: &Array2<f64>, kind: Kind, device: Device) -> Tensor {
    let (r, c) = a.dim();
    let data: Vec<f64> = a.iter().copied().collect();
    Tensor::from_slice(&data).view([r as i64, c as i64]).to_kind(kind).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use icl_tasks::{build, TaskConfig, TaskRng};
    use rand::SeedableRng;

    #[test]
    fn query_token_is_last_with_zero_label() {
        let cfg = TaskConfig { x_dim: 3, context_len: 4, ..TaskConfig::default() };
        let p = build(&cfg).unwrap().sample(&mut TaskRng::seed_from_u64(0), 2);
        let buf = token_buffer(&p, |x| x);
        // prompt 1, context token 2: (x, y)
        let tok = &buf[(5 + 2) * 4..(5 + 3) * 4];
        assert_eq!(tok, &[p.xs[[1, 2, 0]], p.xs[[1, 2, 1]], p.xs[[1, 2, 2]], p.ys[[1, 2, 0]]]);
        let query = &buf[(5 + 4) * 4..];
        assert_eq!(query, &[p.xq[[1, 0]], p.xq[[1, 1]], p.xq[[1, 2]], 0.0]);
    }
}
