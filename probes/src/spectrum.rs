//! The spectrum of a prompt's inputs, C = Σᵢ xᵢxᵢᵀ over its context, and its condition number
//! κ = λ_max / λ_min: what von Oswald et al. 2023 (Fig. 13, App. A.10) follow through GD++ and
//! through a trained model's layers. GD++ maps each eigenvalue on its own,
//! λ ← λ (1 − γλ)² (its preconditioner I − γC shares C's eigenvectors), so a step with
//! 0 < γ ≤ 1/(3λ_max) keeps their order and divides κ by ((1 − γλ_min)/(1 − γλ_max))² > 1;
//! plain GD (γ = 0) leaves the inputs, and κ, as they are.

use nalgebra::{DMatrix, SymmetricEigen};
use ndarray::ArrayView2;

/// Eigenvalues of xsᵀxs for context inputs `xs` (N, d), ascending.
pub fn input_eigenvalues(xs: ArrayView2<f64>) -> Vec<f64> {
    let c = xs.t().dot(&xs); // (d, d)
    let d = c.nrows();
    let eig = SymmetricEigen::new(DMatrix::from_fn(d, d, |r, k| c[[r, k]]));
    let mut values: Vec<f64> = eig.eigenvalues.iter().copied().collect();
    values.sort_by(f64::total_cmp);
    values
}

/// λ_max / λ_min of ascending eigenvalues; infinite when C is singular (λ_min ≤ 0 within
/// rounding, e.g. fewer context pairs than dimensions).
pub fn condition_number(ascending: &[f64]) -> f64 {
    let (lo, hi) = (ascending[0], ascending[ascending.len() - 1]);
    if lo <= hi.abs() * 1e-13 {
        f64::INFINITY
    } else {
        hi / lo
    }
}

/// The median of `values` (NaN for none).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// What a GD++ step with γ does to one eigenvalue of C.
pub fn gdpp_eigenvalue_map(lambda: f64, gamma: f64) -> f64 {
    lambda * (1.0 - gamma * lambda).powi(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdpp::trajectory;
    use icl_tasks::{build, TaskConfig, TaskRng};
    use ndarray::Axis;
    use rand::SeedableRng;

    #[test]
    fn gdpp_steps_map_each_eigenvalue() {
        let p = build(&TaskConfig::default()).unwrap().sample(&mut TaskRng::seed_from_u64(8), 20);
        let (etas, gammas) = ([6.0, 7.0, 8.0], [0.3, 0.5, 0.2]);
        for b in 0..p.batch() {
            let xs = p.xs.index_axis(Axis(0), b);
            let states = trajectory(xs, p.ys.index_axis(Axis(0), b), &etas, &gammas);
            let mut expected = input_eigenvalues(xs);
            for (state, &gamma) in states.iter().zip(&gammas) {
                expected = expected.iter().map(|&l| gdpp_eigenvalue_map(l, gamma)).collect();
                expected.sort_by(f64::total_cmp);
                let got = input_eigenvalues(state.xs.view());
                for (e, g) in expected.iter().zip(&got) {
                    assert!((e - g).abs() < 1e-12 * expected[expected.len() - 1], "{e} vs {g}");
                }
            }
        }
    }

    #[test]
    fn condition_numbers() {
        assert_eq!(condition_number(&[0.5, 1.0, 2.0]), 4.0);
        assert_eq!(condition_number(&[0.0, 1.0]), f64::INFINITY);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        // A step with γ < 1/λ_max brings the eigenvalues closer: κ falls.
        let eigs = [0.5, 1.0, 3.0];
        let after: Vec<f64> = eigs.iter().map(|&l| gdpp_eigenvalue_map(l, 0.2)).collect();
        assert!(condition_number(&after) < condition_number(&eigs));
    }
}
