//! A task defined in one file, as the README's "Adding a task" walk-through does it: Garg et al.'s
//! quadratic regression, y = (x ⊙ x)·w / √3 with x, w ~ N(0, I). The test registers it at run
//! time (`icl_tasks::register`), the equivalent of its one line in `tasks/src/registry.rs`, and
//! then trains, probes and draws its curve with no other edit.

use icl_tasks::params::{parse, to_params};
use icl_tasks::{
    Dims, LearnerSpec, Params, Prompts, Shift, ShiftKind, ShiftSweep, Task, TaskEntry, TaskError, TaskRng,
};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

pub const ENTRY: TaskEntry =
    TaskEntry { name: "quadratic", about: "y = (x ⊙ x)·w/√3 (Garg et al.)", build: Quadratic::build };

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuadraticParams {
    pub x_dim: usize,
    pub context_len: usize,
    pub input_scale: f64,
}

impl Default for QuadraticParams {
    fn default() -> Self {
        Self { x_dim: 4, context_len: 8, input_scale: 1.0 }
    }
}

#[derive(Clone, Debug)]
pub struct Quadratic {
    params: QuadraticParams,
}

impl Quadratic {
    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        let params: QuadraticParams = parse(ENTRY.name, params)?;
        if params.x_dim == 0 || params.context_len == 0 {
            return Err(TaskError::invalid("x_dim", "and context_len must be at least 1", params.x_dim));
        }
        Ok(Box::new(Self { params }))
    }
}

impl Task for Quadratic {
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
        // E[((x⊙x)·w)²]/3 = (Σ E[x⁴] + Σ_{i≠j} E[x²]E[x²]·E[w_i w_j])/3 = 3d·s⁴/3
        self.params.x_dim as f64 * self.params.input_scale.powi(4)
    }
    fn learners(&self) -> Vec<LearnerSpec> {
        vec![LearnerSpec::new("zero"), LearnerSpec::new("least_squares"), LearnerSpec::new("knn").with("k", 3)]
    }
    fn shifts(&self) -> Vec<ShiftSweep> {
        vec![ShiftSweep { kind: ShiftKind::InputScale, training_value: 1.0, values: vec![0.5, 1.0, 2.0] }]
    }
    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        match shift.kind {
            ShiftKind::InputScale => {
                let mut p = self.params.clone();
                p.input_scale *= shift.value;
                Ok(Box::new(Self { params: p }))
            }
            kind => Err(TaskError::unsupported_shift(self, kind)),
        }
    }
    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n: usize) -> Prompts {
        let d = self.params.x_dim;
        let s = self.params.input_scale;
        let mut xs = ndarray::Array3::<f64>::zeros((batch, n, d));
        let mut ys = ndarray::Array3::<f64>::zeros((batch, n, 1));
        let mut xq = ndarray::Array2::<f64>::zeros((batch, d));
        let mut yq = ndarray::Array2::<f64>::zeros((batch, 1));
        for b in 0..batch {
            let w: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
            let f = |x: &[f64]| x.iter().zip(&w).map(|(x, w)| x * x * w).sum::<f64>() / 3f64.sqrt();
            for i in 0..=n {
                let x: Vec<f64> = (0..d).map(|_| s * rng.sample::<f64, _>(StandardNormal)).collect();
                if i < n {
                    xs.slice_mut(ndarray::s![b, i, ..]).assign(&ndarray::ArrayView1::from(&x));
                    ys[[b, i, 0]] = f(&x);
                } else {
                    xq.row_mut(b).assign(&ndarray::ArrayView1::from(&x));
                    yq[[b, 0]] = f(&x);
                }
            }
        }
        Prompts { xs, ys, xq, yq, w: None }
    }
}
