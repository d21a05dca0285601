//! The loss of L steps of GD or GD++ (von Oswald et al. 2023, A.10) and its exact gradient in the
//! step sizes (η_l, γ_l), computed in each prompt's eigenbasis: what the hyperparameter fit of
//! `references.rs` runs 30,000 Adam steps on (the official `pre_train_gd_hps` fits the same
//! dynamics with autograd).
//!
//! Why the eigenbasis. One GD++ layer maps, with C_l = Σᵢ xᵢxᵢᵀ of the current inputs,
//!
//! ```text
//! xᵢ ← (I − γ C_l) xᵢ,   x_q ← (I − γ C_l) x_q,   yᵢ ← yᵢ − (η/N) Σⱼ yⱼ xⱼᵀ xᵢ,   ŷ += (η/N) bᵀ x_q
//! ```
//!
//! with b_l = Σᵢ xᵢ yᵢᵀ (d × o). Then C_{l+1} = (I − γC_l) C_l (I − γC_l) and
//! b_{l+1} = (I − γC_l)(I − (η/N) C_l) b_l: every C_l is a polynomial in C₀, so all of them share
//! C₀'s eigenvectors U. In the coordinates λ = eig(C₀), a = Uᵀb₀ (d × o), q = Uᵀx_q each of the d
//! directions evolves on its own, three scalars per layer:
//!
//! ```text
//! u = 1 − γλ,  v = 1 − (η/N)λ:   ŷ += (η/N) a q,   a ← u v a,   q ← u q,   λ ← u² λ
//! ```
//!
//! One eigendecomposition per prompt (d × d) replaces L layers of N × d × d products forward and
//! backward; the backward pass below is written out from these three lines. γ ≡ 0 is plain GD
//! from W₀ = 0. Tests check the predictions against [`crate::gdpp::gdpp_weights`] (the literal
//! token dynamics) to 1e-12 and the gradient against finite differences; the model crate checks
//! it against libtorch autograd of the token dynamics.

use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

use icl_tasks::Prompts;

/// Prompts per parallel task when summing the loss and its gradient: fixed, so that the sums (and
/// so the fit) do not depend on the number of threads.
const CHUNK: usize = 64;

/// A batch of prompts in the eigenbasis of each prompt's C₀ = Σᵢ xᵢxᵢᵀ.
#[derive(Clone, Debug)]
pub struct SpectralPrompts {
    /// Input dimension d (directions per prompt).
    dims: usize,
    /// Output dimension o.
    outputs: usize,
    /// Context pairs N (the step is η/N).
    context: usize,
    /// Eigenvalues of C₀, (B, d) flattened.
    lambda: Vec<f64>,
    /// Uᵀ x_q, (B, d).
    query: Vec<f64>,
    /// Uᵀ Σᵢ xᵢ yᵢᵀ, (B, d, o).
    moment: Vec<f64>,
    /// Targets y_q, (B, o).
    target: Vec<f64>,
}

impl SpectralPrompts {
    pub fn new(p: &Prompts) -> Self {
        let (b, n, d, o) = (p.batch(), p.context_len(), p.x_dim(), p.y_dim());
        let per_prompt: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = (0..b)
            .into_par_iter()
            .map(|i| {
                let xs = p.xs.index_axis(ndarray::Axis(0), i); // (N, d)
                let ys = p.ys.index_axis(ndarray::Axis(0), i); // (N, o)
                let c = xs.t().dot(&xs); // (d, d)
                let eig = SymmetricEigen::new(DMatrix::from_fn(d, d, |r, k| c[[r, k]]));
                let u = &eig.eigenvectors; // columns are eigenvectors
                let xy = xs.t().dot(&ys); // (d, o)
                let mut query = vec![0.0; d];
                let mut moment = vec![0.0; d * o];
                for k in 0..d {
                    query[k] = (0..d).map(|r| u[(r, k)] * p.xq[[i, r]]).sum();
                    for out in 0..o {
                        moment[k * o + out] = (0..d).map(|r| u[(r, k)] * xy[[r, out]]).sum();
                    }
                }
                (eig.eigenvalues.iter().copied().collect(), query, moment)
            })
            .collect();
        let mut s = Self {
            dims: d,
            outputs: o,
            context: n,
            lambda: Vec::with_capacity(b * d),
            query: Vec::with_capacity(b * d),
            moment: Vec::with_capacity(b * d * o),
            target: p.yq.iter().copied().collect(),
        };
        for (l, q, m) in per_prompt {
            s.lambda.extend(l);
            s.query.extend(q);
            s.moment.extend(m);
        }
        s
    }

    pub fn batch(&self) -> usize {
        self.target.len() / self.outputs
    }

    /// The step size η/N of a layer (0 without context pairs: nothing to learn from).
    fn step(&self, eta: f64) -> f64 {
        if self.context == 0 {
            0.0
        } else {
            eta / self.context as f64
        }
    }

    /// Prediction of prompt `i` after the layers (η_l, γ_l), into `pred` (o).
    fn predict_into(&self, i: usize, etas: &[f64], gammas: &[f64], pred: &mut [f64]) {
        let (d, o) = (self.dims, self.outputs);
        pred.fill(0.0);
        let mut a = vec![0.0; o];
        for k in 0..d {
            let (mut lam, mut q) = (self.lambda[i * d + k], self.query[i * d + k]);
            a.copy_from_slice(&self.moment[(i * d + k) * o..(i * d + k + 1) * o]);
            for (&eta, &gamma) in etas.iter().zip(gammas) {
                let s = self.step(eta);
                let (u, v) = (1.0 - gamma * lam, 1.0 - s * lam);
                for (p, a) in pred.iter_mut().zip(a.iter_mut()) {
                    *p += s * *a * q;
                    *a *= u * v;
                }
                q *= u;
                lam *= u * u;
            }
        }
    }

    /// Predictions (B, o) after the layers (η_l, γ_l).
    pub fn predict(&self, etas: &[f64], gammas: &[f64]) -> Vec<f64> {
        assert_eq!(etas.len(), gammas.len(), "one (η, γ) per layer");
        let o = self.outputs;
        let mut out = vec![0.0; self.target.len()];
        for (i, pred) in out.chunks_mut(o).enumerate() {
            self.predict_into(i, etas, gammas, pred);
        }
        out
    }

    /// ½·MSE (summed over outputs, mean over prompts) after the layers (η_l, γ_l).
    pub fn loss(&self, etas: &[f64], gammas: &[f64]) -> f64 {
        self.loss_and_grad(etas, gammas, false).0
    }

    /// The loss and, if `with_grad`, its gradient in every η_l and γ_l.
    pub fn loss_and_grad(&self, etas: &[f64], gammas: &[f64], with_grad: bool) -> (f64, Vec<f64>, Vec<f64>) {
        assert_eq!(etas.len(), gammas.len(), "one (η, γ) per layer");
        let layers = etas.len();
        let batch = self.batch();
        let chunks: Vec<(f64, Vec<f64>, Vec<f64>)> = (0..batch.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut acc = (0.0, vec![0.0; layers], vec![0.0; layers]);
                let mut work = Work::new(layers, self.outputs);
                for i in c * CHUNK..((c + 1) * CHUNK).min(batch) {
                    self.prompt_loss_and_grad(i, etas, gammas, with_grad, &mut work, &mut acc);
                }
                acc
            })
            .collect();
        // Summed in chunk order: the same result on any number of threads.
        let mut total = (0.0, vec![0.0; layers], vec![0.0; layers]);
        for (loss, de, dg) in chunks {
            total.0 += loss;
            total.1.iter_mut().zip(de).for_each(|(t, v)| *t += v);
            total.2.iter_mut().zip(dg).for_each(|(t, v)| *t += v);
        }
        let scale = 1.0 / batch as f64;
        total.0 *= scale;
        total.1.iter_mut().chain(total.2.iter_mut()).for_each(|v| *v *= scale);
        total
    }

    /// Adds prompt `i`'s ½‖ŷ − y‖² and its gradient (unscaled by the batch) to `acc`.
    fn prompt_loss_and_grad(
        &self,
        i: usize,
        etas: &[f64],
        gammas: &[f64],
        with_grad: bool,
        w: &mut Work,
        acc: &mut (f64, Vec<f64>, Vec<f64>),
    ) {
        let (d, o, layers) = (self.dims, self.outputs, etas.len());
        self.predict_into(i, etas, gammas, &mut w.pred);
        let target = &self.target[i * o..(i + 1) * o];
        for (g, (p, t)) in w.residual.iter_mut().zip(w.pred.iter().zip(target)) {
            *g = p - t; // ∂(½‖ŷ − y‖²)/∂ŷ
        }
        acc.0 += 0.5 * w.residual.iter().map(|r| r * r).sum::<f64>();
        if !with_grad {
            return;
        }
        let steps: Vec<f64> = etas.iter().map(|&e| self.step(e)).collect();
        for k in 0..d {
            // Forward, keeping each layer's (λ, q, a) of this direction.
            w.lam[0] = self.lambda[i * d + k];
            w.q[0] = self.query[i * d + k];
            w.a[..o].copy_from_slice(&self.moment[(i * d + k) * o..(i * d + k + 1) * o]);
            for l in 0..layers {
                let (u, v) = (1.0 - gammas[l] * w.lam[l], 1.0 - steps[l] * w.lam[l]);
                w.lam[l + 1] = w.lam[l] * u * u;
                w.q[l + 1] = w.q[l] * u;
                for out in 0..o {
                    w.a[(l + 1) * o + out] = w.a[l * o + out] * u * v;
                }
            }
            // Backward: adjoints of the state after layer l+1, from the last layer down.
            let (mut lam_bar, mut q_bar) = (0.0, 0.0);
            w.a_bar.fill(0.0);
            for l in (0..layers).rev() {
                let (lam, q, s, gamma) = (w.lam[l], w.q[l], steps[l], gammas[l]);
                let a = &w.a[l * o..(l + 1) * o];
                let (u, v) = (1.0 - gamma * lam, 1.0 - s * lam);
                let ga: f64 = w.residual.iter().zip(a).map(|(g, a)| g * a).sum(); // Σ_o ∂ŷ_o · a_o
                let aa: f64 = w.a_bar.iter().zip(a).map(|(b, a)| b * a).sum(); // ā' · a
                let u_bar = aa * v + q_bar * q + lam_bar * lam * 2.0 * u;
                let v_bar = aa * u;
                let s_bar = ga * q + v_bar * -lam;
                acc.1[l] += if self.context == 0 { 0.0 } else { s_bar / self.context as f64 };
                acc.2[l] += u_bar * -lam;
                for (b, g) in w.a_bar.iter_mut().zip(&w.residual) {
                    *b = g * s * q + *b * u * v;
                }
                q_bar = s * ga + q_bar * u;
                lam_bar = lam_bar * u * u + u_bar * -gamma + v_bar * -s;
            }
        }
    }
}

/// Scratch space of one prompt's forward and backward pass.
struct Work {
    pred: Vec<f64>,
    residual: Vec<f64>,
    /// λ, q and a of one direction before each layer and after the last, (L+1), (L+1), (L+1, o).
    lam: Vec<f64>,
    q: Vec<f64>,
    a: Vec<f64>,
    a_bar: Vec<f64>,
}

impl Work {
    fn new(layers: usize, outputs: usize) -> Self {
        Self {
            pred: vec![0.0; outputs],
            residual: vec![0.0; outputs],
            lam: vec![0.0; layers + 1],
            q: vec![0.0; layers + 1],
            a: vec![0.0; (layers + 1) * outputs],
            a_bar: vec![0.0; outputs],
        }
    }
}

/// Adam as PyTorch's `torch.optim.Adam` (β = (0.9, 0.999), ε = 1e-8, no weight decay), in f64 for
/// the handful of step sizes the fit moves.
#[derive(Clone, Debug)]
pub struct Adam {
    lr: f64,
    t: i32,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Adam {
    pub fn new(params: usize, lr: f64) -> Self {
        Self { lr, t: 0, m: vec![0.0; params], v: vec![0.0; params] }
    }

    /// One step of `params` along `grad`.
    pub fn step(&mut self, params: &mut [f64], grad: &[f64]) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        for ((p, g), (m, v)) in params.iter_mut().zip(grad).zip(self.m.iter_mut().zip(self.v.iter_mut())) {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *p -= self.lr / c1 * *m / ((*v).sqrt() / c2.sqrt() + EPS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdpp::gdpp_weights;
    use icl_tasks::{build, TaskConfig, TaskRng};
    use rand::SeedableRng;

    fn prompts(seed: u64, b: usize, task: TaskConfig) -> Prompts {
        build(&task).unwrap().sample(&mut TaskRng::seed_from_u64(seed), b)
    }

    fn two_outputs() -> TaskConfig {
        TaskConfig::new("linear").with("x_dim", 4).with("y_dim", 2)
    }

    #[test]
    fn predictions_equal_the_token_dynamics() {
        for task in [TaskConfig::default(), two_outputs()] {
            let p = prompts(3, 40, task);
            let s = SpectralPrompts::new(&p);
            for (etas, gammas) in [(vec![6.0], vec![0.0]), (vec![5.0, 7.0, 9.0], vec![0.1, 0.05, 0.2])] {
                let w = gdpp_weights(&p, &etas, &gammas).pop().unwrap(); // (B, o, d)
                let spectral = s.predict(&etas, &gammas);
                let o = p.y_dim();
                for i in 0..p.batch() {
                    for out in 0..o {
                        let literal: f64 = (0..p.x_dim()).map(|r| w[[i, out, r]] * p.xq[[i, r]]).sum();
                        let err = (spectral[i * o + out] - literal).abs();
                        assert!(err < 1e-12, "prompt {i}: {} vs {literal}", spectral[i * o + out]);
                    }
                }
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for task in [TaskConfig::default(), two_outputs()] {
            let s = SpectralPrompts::new(&prompts(4, 150, task));
            let (etas, gammas) = (vec![5.0, 6.5, 8.0], vec![0.02, 0.07, 0.04]);
            let (_, de, dg) = s.loss_and_grad(&etas, &gammas, true);
            let h = 1e-6;
            for l in 0..3 {
                for (which, analytic) in [(0, de[l]), (1, dg[l])] {
                    let (mut up, mut down) = ((etas.clone(), gammas.clone()), (etas.clone(), gammas.clone()));
                    if which == 0 {
                        up.0[l] += h;
                        down.0[l] -= h;
                    } else {
                        up.1[l] += h;
                        down.1[l] -= h;
                    }
                    let numeric = (s.loss(&up.0, &up.1) - s.loss(&down.0, &down.1)) / (2.0 * h);
                    let err = (analytic - numeric).abs() / numeric.abs().max(1e-3);
                    assert!(err < 1e-6, "layer {l} {}: {analytic} vs {numeric}", ["η", "γ"][which]);
                }
            }
            // The last layer's γ transforms inputs that nothing reads afterwards.
            assert_eq!(dg[2], 0.0);
        }
    }

    #[test]
    fn sums_do_not_depend_on_the_thread_count() {
        let s = SpectralPrompts::new(&prompts(5, 300, TaskConfig::default()));
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| s.loss_and_grad(&[5.0, 6.0], &[0.1, 0.0], true))
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn adam_minimises_a_quadratic() {
        let mut adam = Adam::new(2, 0.05);
        let mut p = vec![3.0, -2.0];
        for _ in 0..2000 {
            let g = vec![2.0 * (p[0] - 1.0), 2.0 * (p[1] + 0.5)];
            adam.step(&mut p, &g);
        }
        assert!((p[0] - 1.0).abs() < 1e-3 && (p[1] + 0.5).abs() < 1e-3, "{p:?}");
    }
}
