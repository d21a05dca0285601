//! Sparse linear regression (Garg et al. 2022, `SparseLinearRegression`): x ~ N(0, I)·input_scale,
//! w ~ N(0, I)·w_scale with all but `sparsity` randomly chosen coordinates set to 0, y = wᵀx (+ noise
//! on the context labels). Lasso is the learner to beat.

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
    name: "sparse_linear",
    about: "linear regression with k of d teacher weights non-zero (Garg)",
    build: SparseLinear::build,
};

/// `[task] name = "sparse_linear"`: Garg et al.'s setting by default (d = 20, k = 3, 40 pairs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparseLinearParams {
    pub x_dim: usize,
    pub context_len: usize,
    /// Non-zero teacher coordinates k.
    pub sparsity: usize,
    pub input_scale: f64,
    pub w_scale: f64,
    /// Label noise σ on context labels.
    pub noise_std: f64,
}

impl Default for SparseLinearParams {
    fn default() -> Self {
        Self { x_dim: 20, context_len: 40, sparsity: 3, input_scale: 1.0, w_scale: 1.0, noise_std: 0.0 }
    }
}

#[derive(Clone, Debug)]
pub struct SparseLinear {
    pub params: SparseLinearParams,
}

impl SparseLinear {
    pub fn new(params: SparseLinearParams) -> Result<Self, TaskError> {
        check_count("x_dim", params.x_dim, 1..=4096)?;
        check_count("context_len", params.context_len, 1..=crate::MAX_CONTEXT)?;
        check_count("sparsity", params.sparsity, 1..=params.x_dim)?;
        check_real("input_scale", params.input_scale, 0.0, true)?;
        check_real("w_scale", params.w_scale, 0.0, false)?;
        check_real("noise_std", params.noise_std, 0.0, false)?;
        Ok(Self { params })
    }

    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self::new(parse(ENTRY.name, params)?)?))
    }
}

impl Task for SparseLinear {
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
        let p = &self.params;
        p.sparsity as f64 * p.w_scale.powi(2) * p.input_scale.powi(2)
    }

    fn learners(&self) -> Vec<LearnerSpec> {
        vec![
            LearnerSpec::new("zero"),
            LearnerSpec::new("least_squares"),
            LearnerSpec::new("lasso").with("alpha", 0.01),
            LearnerSpec::new("ridge"),
            LearnerSpec::new("averaging"),
            LearnerSpec::new("knn").with("k", 3),
            LearnerSpec::new("gd").with("steps", 1),
        ]
    }

    fn shifts(&self) -> Vec<ShiftSweep> {
        // Garg's sweeps, with the teacher scaled too (after the input scale, before the noise).
        let mut sweeps = crate::gaussian_input_shifts(self.params.noise_std);
        let teacher =
            ShiftSweep { kind: ShiftKind::TeacherScale, training_value: 1.0, values: crate::GARG_SCALES.to_vec() };
        sweeps.insert(1, teacher);
        sweeps
    }

    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        let mut p = self.params.clone();
        match shift.kind {
            ShiftKind::InputScale => p.input_scale *= shift.value,
            ShiftKind::TeacherScale => p.w_scale *= shift.value,
            ShiftKind::LabelNoise => p.noise_std = shift.value,
            kind => return Err(TaskError::unsupported_shift(self, kind)),
        }
        Ok(Box::new(Self::new(p)?))
    }

    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n: usize) -> Prompts {
        let SparseLinearParams { x_dim: d, sparsity: k, input_scale, w_scale, noise_std, .. } = self.params;
        let mut coords: Vec<usize> = (0..d).collect();
        let draw = |rng: &mut TaskRng| -> Vec<f64> {
            let mut w: Vec<f64> = (0..d).map(|_| w_scale * rng.sample::<f64, _>(StandardNormal)).collect();
            // Keep k coordinates chosen uniformly (a partial Fisher–Yates shuffle), zero the rest.
            for i in 0..k {
                let j = rng.random_range(i..d);
                coords.swap(i, j);
            }
            let mut keep = vec![false; d];
            coords[..k].iter().for_each(|&c| keep[c] = true);
            w.iter_mut().zip(&keep).filter(|(_, k)| !**k).for_each(|(v, _)| *v = 0.0);
            w
        };
        let weights = |w: &Vec<f64>| w.clone();
        sample_gaussian_inputs(rng, (batch, n, d), input_scale, noise_std, draw, |w, x| dot(w, x), Some(&weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, TaskConfig};
    use rand::SeedableRng;

    #[test]
    fn exactly_k_coordinates_are_non_zero_and_uniformly_placed() {
        let task = build(&TaskConfig::new("sparse_linear").with("x_dim", 6).with("sparsity", 2)).unwrap();
        let p = task.sample_n(&mut TaskRng::seed_from_u64(3), 6000, 4);
        let w = p.w.unwrap();
        let mut per_coord = [0usize; 6];
        for row in w.outer_iter() {
            let nz: Vec<usize> = (0..6).filter(|&j| row[[0, j]] != 0.0).collect();
            assert_eq!(nz.len(), 2);
            nz.iter().for_each(|&j| per_coord[j] += 1);
        }
        // each coordinate is kept with probability k/d = 1/3: 2000 of 6000
        assert!(per_coord.iter().all(|&c| (c as f64 - 2000.0).abs() < 150.0), "{per_coord:?}");
        assert_eq!(task.zero_error(), 2.0);
    }

    #[test]
    fn sparsity_must_fit_the_dimension() {
        let e = build(&TaskConfig::new("sparse_linear").with("x_dim", 4).with("sparsity", 5)).err().unwrap();
        assert!(e.to_string().starts_with("task.sparsity: must be an integer in 1..=4"), "{e}");
    }
}
