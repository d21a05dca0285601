//! Random two-layer ReLU networks (Garg et al. 2022, `Relu2nnRegression`):
//! y = √(2/r) Σ_j a_j relu(w_jᵀ x) with W (r × d), a ~ N(0, 1) and r = 100 hidden units (Garg's pool
//! sampler defaults to 4: not copied); x ~ N(0, I)·input_scale; noise on the context labels.

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::params::{parse, to_params};
use crate::registry::TaskEntry;
use crate::{
    check_count, check_real, dot, sample_gaussian_inputs, Dims, LearnerSpec, Params, Prompts, Shift, ShiftKind,
    ShiftSweep, Task, TaskError, TaskRng,
};

pub const ENTRY: TaskEntry = TaskEntry {
    name: "relu_net",
    about: "random 2-layer ReLU networks with 100 hidden units (Garg)",
    build: ReluNet::build,
};

/// `[task] name = "relu_net"`: Garg et al.'s setting by default (d = 20, r = 100, 100 pairs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReluNetParams {
    pub x_dim: usize,
    pub context_len: usize,
    /// Hidden units r.
    pub hidden: usize,
    pub input_scale: f64,
    pub noise_std: f64,
}

impl Default for ReluNetParams {
    fn default() -> Self {
        Self { x_dim: 20, context_len: 100, hidden: 100, input_scale: 1.0, noise_std: 0.0 }
    }
}

#[derive(Clone, Debug)]
pub struct ReluNet {
    pub params: ReluNetParams,
}

impl ReluNet {
    pub fn new(params: ReluNetParams) -> Result<Self, TaskError> {
        check_count("x_dim", params.x_dim, 1..=4096)?;
        check_count("context_len", params.context_len, 1..=crate::MAX_CONTEXT)?;
        check_count("hidden", params.hidden, 1..=100_000)?;
        check_real("input_scale", params.input_scale, 0.0, true)?;
        check_real("noise_std", params.noise_std, 0.0, false)?;
        Ok(Self { params })
    }

    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self::new(parse(ENTRY.name, params)?)?))
    }
}

impl Task for ReluNet {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn params(&self) -> Params {
        to_params(&self.params)
    }

    fn dims(&self) -> Dims {
        Dims { x_dim: self.params.x_dim, y_dim: 1, context_len: self.params.context_len }
    }

    fn zero_error(&self) -> f64 {
        // E[y²] = (2/r)·r·E[relu(wᵀx)²] = 2·E‖x‖²/2 = d·input_scale² (Garg et al. divide by d).
        self.params.x_dim as f64 * self.params.input_scale.powi(2)
    }

    fn learners(&self) -> Vec<LearnerSpec> {
        vec![
            LearnerSpec::new("zero"),
            LearnerSpec::new("least_squares"),
            LearnerSpec::new("knn").with("k", 3),
            LearnerSpec::new("averaging"),
            LearnerSpec::new("nn").with("hidden", 100).with("steps", 100).with("lr", 5e-3),
        ]
    }

    fn shifts(&self) -> Vec<ShiftSweep> {
        crate::gaussian_input_shifts(self.params.noise_std)
    }

    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        let mut p = self.params.clone();
        match shift.kind {
            ShiftKind::InputScale => p.input_scale *= shift.value,
            ShiftKind::LabelNoise => p.noise_std = shift.value,
            kind => return Err(TaskError::unsupported_shift(self, kind)),
        }
        Ok(Box::new(Self::new(p)?))
    }

    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n: usize) -> Prompts {
        let ReluNetParams { x_dim: d, hidden: r, input_scale, noise_std, .. } = self.params;
        let scale = (2.0 / r as f64).sqrt();
        // Per prompt: W (r, d), then a (r).
        let draw = |rng: &mut TaskRng| -> (Vec<f64>, Vec<f64>) {
            let w1: Vec<f64> = (0..r * d).map(|_| rng.sample(StandardNormal)).collect();
            let a: Vec<f64> = (0..r).map(|_| rng.sample(StandardNormal)).collect();
            (w1, a)
        };
        let net = |(w1, a): &(Vec<f64>, Vec<f64>), x: &[f64]| -> f64 {
            scale * w1.chunks_exact(d).zip(a).map(|(w, a)| a * dot(w, x).max(0.0)).sum::<f64>()
        };
        sample_gaussian_inputs(rng, (batch, n, d), input_scale, noise_std, draw, net, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, TaskConfig};
    use rand::SeedableRng;

    #[test]
    fn label_scale_is_the_zero_error() {
        let task = build(&TaskConfig::new("relu_net").with("x_dim", 8)).unwrap();
        let p = task.sample_n(&mut TaskRng::seed_from_u64(0), 4000, 2);
        let ms = p.yq.iter().map(|y| y * y).sum::<f64>() / 4000.0;
        assert!((ms / task.zero_error() - 1.0).abs() < 0.1, "E[y²] {ms} vs {}", task.zero_error());
    }

    #[test]
    fn networks_are_positively_homogeneous() {
        // relu nets satisfy f(2x) = 2 f(x): doubling the input scale doubles every label.
        let base = TaskConfig::new("relu_net").with("x_dim", 3).with("hidden", 7);
        let p1 = build(&base).unwrap().sample_n(&mut TaskRng::seed_from_u64(1), 10, 4);
        let p2 = build(&base.with("input_scale", 2.0)).unwrap().sample_n(&mut TaskRng::seed_from_u64(1), 10, 4);
        assert!((&p2.ys - &(&p1.ys * 2.0)).iter().all(|e| e.abs() < 1e-12));
    }
}
