//! Derivative-free tuning of scalar hyperparameters on tuning prompts: a log-spaced grid around a
//! scale the data suggests, refined by golden-section search between the best grid point's
//! neighbours. The scale comes from the prompts (1/λ̄ for a step size, the mean eigenvalue for a
//! ridge λ), so the search adapts to the task's input and teacher scales instead of assuming the
//! official grid's range.

/// The argmin of `loss` over x = center·10^t, t ∈ [−decades, decades]. Non-finite losses (a
/// diverging step size) count as +∞. Returns (x, loss(x)).
pub fn minimize_log(loss: impl Fn(f64) -> f64, center: f64, decades: f64) -> (f64, f64) {
    assert!(center > 0.0 && center.is_finite(), "search centre must be a positive number, got {center}");
    let f = |t: f64| {
        let v = loss(center * 10f64.powf(t));
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let points = 41;
    let ts: Vec<f64> = (0..points).map(|i| -decades + 2.0 * decades * i as f64 / (points - 1) as f64).collect();
    let values: Vec<f64> = ts.iter().map(|&t| f(t)).collect();
    let best = (0..points).min_by(|&a, &b| values[a].total_cmp(&values[b])).expect("grid is not empty");
    let lo = ts[best.saturating_sub(1)];
    let hi = ts[(best + 1).min(points - 1)];
    let (t, v) = golden(&f, lo, hi, 40);
    let (t, v) = if v <= values[best] { (t, v) } else { (ts[best], values[best]) };
    (center * 10f64.powf(t), v)
}

/// The argmin of `f` on [lo, hi] by golden-section search (unimodal `f`). Returns (x, f(x)).
pub fn golden(f: &impl Fn(f64) -> f64, mut lo: f64, mut hi: f64, iterations: usize) -> (f64, f64) {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - ratio * (hi - lo);
    let mut b = lo + ratio * (hi - lo);
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..iterations {
        if fa <= fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - ratio * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + ratio * (hi - lo);
            fb = f(b);
        }
    }
    if fa <= fb {
        (a, fa)
    } else {
        (b, fb)
    }
}

/// The argmin of `f` over R² by Nelder–Mead (argmin), from `start` with initial steps `steps`.
/// Non-finite values count as +∞. Returns (x, f(x)).
pub fn nelder_mead(
    f: impl Fn([f64; 2]) -> f64,
    start: [f64; 2],
    steps: [f64; 2],
) -> Result<([f64; 2], f64), crate::ProbeError> {
    use argmin::core::{CostFunction, Error, Executor, State};
    use argmin::solver::neldermead::NelderMead;

    struct Cost<F>(F);
    impl<F: Fn([f64; 2]) -> f64> CostFunction for Cost<F> {
        type Param = Vec<f64>;
        type Output = f64;
        fn cost(&self, p: &Vec<f64>) -> Result<f64, Error> {
            let v = (self.0)([p[0], p[1]]);
            Ok(if v.is_finite() { v } else { f64::INFINITY })
        }
    }
    let simplex = vec![start.to_vec(), vec![start[0] + steps[0], start[1]], vec![start[0], start[1] + steps[1]]];
    let failed = |e: Error| crate::ProbeError::Unsupported(format!("Nelder–Mead: {e}"));
    let solver = NelderMead::new(simplex).with_sd_tolerance(1e-10).map_err(failed)?;
    let result = Executor::new(Cost(f), solver).configure(|s| s.max_iters(300)).run().map_err(failed)?;
    let state = result.state();
    let best = state.get_best_param().cloned().unwrap_or_else(|| start.to_vec());
    Ok(([best[0], best[1]], state.get_best_cost()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_minimum_far_from_the_centre() {
        let (x, v) = minimize_log(|x| (x.ln() - 3.7f64.ln()).powi(2) + 1.0, 0.05, 3.0);
        assert!((x - 3.7).abs() < 1e-6, "{x}");
        assert!((v - 1.0).abs() < 1e-12);
    }

    #[test]
    fn nelder_mead_follows_a_diagonal_valley() {
        // Rosenbrock-like valley along x₁ = x₀: minimum at (1, 1).
        let f = |v: [f64; 2]| (v[0] - 1.0).powi(2) + 50.0 * (v[1] - v[0]).powi(2);
        let (x, _) = nelder_mead(f, [-1.0, 2.0], [0.5, 0.5]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-4, "{x:?}");
    }

    #[test]
    fn divergence_counts_as_infinitely_bad() {
        // a loss that blows up (NaN) beyond x = 2 and is smallest just below it
        let (x, _) = minimize_log(|x| if x > 2.0 { f64::NAN } else { (x - 1.9).powi(2) }, 1.0, 2.0);
        assert!((x - 1.9).abs() < 1e-6, "{x}");
    }
}
