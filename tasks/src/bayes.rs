//! The Bayes predictors a linear task with Gaussian label noise lists among its learners
//! (interventions-and-bayes.md §4): with W ~ N(0, τ²I) and noise σ drawn from levels S with prior
//! π, the posterior mean `bayes_ridge` (one level: ridge with λ = σ²/τ²); with W drawn from a
//! finite pool, the posterior mean over the pool, `dmmse` (Raventós et al. 2023). The learners
//! themselves live in the probes crate; a task only names them with the settings that make them
//! its Bayes predictors (and, where the noise varies, `ada_ridge`, which estimates σ² per prompt).

use crate::pool::Pool;
use crate::LearnerSpec;

/// The Bayes learners of a linear-Gaussian task: `w_scale` τ, noise `levels` σ with prior
/// `weights` (uniform when `None`), hidden functions from `pool` when it has one.
pub fn learners(pool: Option<&Pool>, w_scale: f64, levels: &[f64], weights: Option<&[f64]>) -> Vec<LearnerSpec> {
    let mut out = Vec::new();
    if w_scale <= 0.0 || levels.is_empty() {
        return out;
    }
    if let (Some(pool), [sigma]) = (pool, levels) {
        out.push(
            LearnerSpec::new("dmmse")
                .with("pool_size", pool.size)
                .with("pool_seed", pool.seed)
                .with("noise_std", *sigma)
                .with("w_scale", w_scale),
        );
    }
    // The Gaussian-prior posterior needs σ > 0 (at σ = 0 it is least squares, listed anyway).
    if levels.iter().all(|&s| s > 0.0) {
        let mut spec = LearnerSpec::new("bayes_ridge").with("w_scale", w_scale);
        spec = match levels {
            [sigma] => spec.with("noise_std", *sigma),
            _ => {
                let spec = spec.with("noise_std", levels.to_vec());
                match weights {
                    Some(w) => spec.with("noise_weights", w.to_vec()),
                    None => spec,
                }
            }
        };
        out.push(spec);
        // Noise that varies: the rival that estimates σ² per prompt instead of knowing the levels.
        if levels.len() > 1 {
            out.push(LearnerSpec::new("ada_ridge").with("w_scale", w_scale));
        }
    }
    out
}
