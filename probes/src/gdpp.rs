//! GD++ (von Oswald et al. 2023, A.10; official `create_weights(lin_diag=True)`): gradient descent
//! whose inputs are preconditioned on the way. Per layer, simultaneously for every token j
//! (context and query), with sums over the N context tokens:
//!
//! ```text
//! x_j ← x_j − γ Σ_i x_i x_iᵀ x_j          y_j ← y_j − (η/N) Σ_i y_i x_iᵀ x_j
//! ```
//!
//! and the prediction is −(query's y). With γ = 0 this is plain GD from W₀ = 0 (context y's become
//! residuals). Everything stays linear in x_q, so instead of the query token we carry its linear
//! map: the query's x is M x_q and its y is −W x_q; W after each layer is the learner's effective
//! weight matrix (prediction W x_q, sensitivity ∂ŷ/∂x_q = W).

use ndarray::{Array2, Array3, ArrayView2, Axis};
use rayon::prelude::*;

use icl_tasks::Prompts;

/// One prompt's state after a GD++ layer: what every token holds in the construction.
#[derive(Clone, Debug)]
pub struct TokenState {
    /// Context inputs after preconditioning, (N, d): xᵢ ← (I − γ Σ xⱼxⱼᵀ) xᵢ per layer.
    pub xs: Array2<f64>,
    /// Context label entries, (N, o): yᵢ − W xᵢ (residuals; the x's as transformed so far).
    pub ys: Array2<f64>,
    /// The query input's linear map so far, x_q ← M x_q, (d, d).
    pub m: Array2<f64>,
    /// The effective weights, ŷ = W x_q, (o, d); the query token's label entry is −W x_q.
    pub w: Array2<f64>,
}

/// The states of one prompt (context xs (N, d), ys (N, o)) after each layer; layer l uses
/// (etas[l], gammas[l]); γ = 0 throughout is plain GD from W = 0.
pub fn trajectory(xs: ArrayView2<f64>, ys: ArrayView2<f64>, etas: &[f64], gammas: &[f64]) -> Vec<TokenState> {
    assert_eq!(etas.len(), gammas.len(), "one (η, γ) per layer");
    let (n, d, o) = (xs.nrows(), xs.ncols(), ys.ncols());
    let mut x = xs.to_owned(); // (N, d) context inputs, transformed layer by layer
    let mut y = ys.to_owned(); // (N, o) context labels → residuals
    let mut m = Array2::<f64>::eye(d); // query x = M x_q, M: (d, d)
    let mut w = Array2::<f64>::zeros((o, d)); // prediction = W x_q
    let mut states = Vec::with_capacity(etas.len());
    for (&eta, &gamma) in etas.iter().zip(gammas) {
        let c = x.t().dot(&x); // (d, d) Σ x_i x_iᵀ
        let bm = y.t().dot(&x); // (o, d) Σ y_i x_iᵀ
                                // No context pairs: nothing to learn from (and η/n would be 0/0).
        let step = if n == 0 { 0.0 } else { eta / n as f64 };
        // y_j −= (η/N) B x_j for context rows, and for the query (whose y is −W x_q).
        let y_new = &y - &(x.dot(&bm.t()) * step);
        w = &w + &(bm.dot(&m) * step);
        // x_j −= γ C x_j (C symmetric).
        let x_new = &x - &(x.dot(&c) * gamma);
        m = &m - &(c.dot(&m) * gamma);
        x = x_new;
        y = y_new;
        states.push(TokenState { xs: x.clone(), ys: y.clone(), m: m.clone(), w: w.clone() });
    }
    states
}

/// Effective weights (B, o, d) after each layer; layer l uses (etas[l], gammas[l]).
pub fn gdpp_weights(p: &Prompts, etas: &[f64], gammas: &[f64]) -> Vec<Array3<f64>> {
    assert_eq!(etas.len(), gammas.len(), "one (η, γ) per layer");
    let (b, d, o) = (p.batch(), p.x_dim(), p.y_dim());
    let mut out: Vec<Array3<f64>> = (0..etas.len()).map(|_| Array3::zeros((b, o, d))).collect();
    // Prompts are independent: one task per prompt on the rayon pool.
    let per_prompt: Vec<Vec<Array2<f64>>> = (0..b)
        .into_par_iter()
        .map(|i| {
            let states = trajectory(p.xs.index_axis(Axis(0), i), p.ys.index_axis(Axis(0), i), etas, gammas);
            states.into_iter().map(|s| s.w).collect()
        })
        .collect();
    for (bi, ws) in per_prompt.into_iter().enumerate() {
        for (l, w) in ws.into_iter().enumerate() {
            out[l].index_axis_mut(Axis(0), bi).assign(&w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gd::{gd_weights, LeastSquaresStats};
    use icl_tasks::{build, TaskConfig, TaskRng};
    use rand::SeedableRng;

    #[test]
    fn gamma_zero_is_plain_gd() {
        let p = build(&TaskConfig::default()).unwrap().sample(&mut TaskRng::seed_from_u64(5), 50);
        let etas = [6.0, 4.0, 2.0];
        let pp = gdpp_weights(&p, &etas, &[0.0; 3]);
        let gd = gd_weights(&LeastSquaresStats::new(&p), &etas);
        for (a, b) in pp.iter().zip(&gd) {
            let err = (a - b).iter().fold(0.0f64, |m, e| m.max(e.abs()));
            assert!(err < 1e-12, "{err}");
        }
    }

    #[test]
    fn the_query_map_matches_explicit_token_dynamics() {
        // Run the token update literally on (x_q, y_q) and compare with the carried linear map.
        let p = build(&TaskConfig::default()).unwrap().sample(&mut TaskRng::seed_from_u64(6), 20);
        let (etas, gammas) = ([13.0, 13.0], [0.17, 0.17]);
        let w = gdpp_weights(&p, &etas, &gammas).pop().unwrap();
        for bi in 0..p.batch() {
            let mut x = p.xs.index_axis(Axis(0), bi).to_owned();
            let mut y = p.ys.index_axis(Axis(0), bi).to_owned();
            let mut xq = p.xq.row(bi).to_owned();
            let mut yq = ndarray::Array1::<f64>::zeros(1);
            for (&eta, &gamma) in etas.iter().zip(&gammas) {
                let c = x.t().dot(&x);
                let bm = y.t().dot(&x);
                let s = eta / 10.0;
                let yq_new = &yq - &(bm.dot(&xq) * s);
                let xq_new = &xq - &(c.dot(&xq) * gamma);
                let y_new = &y - &(x.dot(&bm.t()) * s);
                x = &x - &(x.dot(&c) * gamma);
                y = y_new;
                xq = xq_new;
                yq = yq_new;
            }
            let pred = w.index_axis(Axis(0), bi).dot(&p.xq.row(bi));
            assert!((pred[0] + yq[0]).abs() < 1e-12, "prompt {bi}: {} vs {}", pred[0], -yq[0]);
        }
    }

    #[test]
    fn recurrent_two_step_gdpp_beats_two_step_gd() {
        // spec §6 row 5: 2-step GD++ at η = 13, γ = 0.17 scores about 0.114; 2-step GD about 0.158.
        let p = build(&TaskConfig::default()).unwrap().sample(&mut TaskRng::seed_from_u64(7), 10_000);
        let w = gdpp_weights(&p, &[13.0, 13.0], &[0.17, 0.17]).pop().unwrap();
        let loss = p.half_mse(&crate::gd::predict(&w, &p.xq));
        assert!((loss - 0.114).abs() < 0.006, "{loss}");
    }
}
