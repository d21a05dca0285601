//! Random decision trees (Garg et al. 2022, `DecisionTree`): a complete binary tree of depth D whose
//! internal nodes each test x_j > 0 on a uniformly chosen coordinate j, with N(0, 1) leaf values;
//! x ~ N(0, I)·input_scale; y = the leaf x falls into (+ noise on the context labels).

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::params::{parse, to_params};
use crate::registry::TaskEntry;
use crate::{
    check_count, check_real, sample_gaussian_inputs, Dims, LearnerSpec, Params, Prompts, Shift, ShiftKind, ShiftSweep,
    Task, TaskError, TaskRng,
};

pub const ENTRY: TaskEntry = TaskEntry {
    name: "decision_tree",
    about: "random depth-4 decision trees on N(0, I) inputs (Garg)",
    build: DecisionTreeTask::build,
};

/// `[task] name = "decision_tree"`: Garg et al.'s setting by default (d = 20, depth 4, 100 pairs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionTreeParams {
    pub x_dim: usize,
    pub context_len: usize,
    pub depth: usize,
    pub input_scale: f64,
    pub noise_std: f64,
}

impl Default for DecisionTreeParams {
    fn default() -> Self {
        Self { x_dim: 20, context_len: 100, depth: 4, input_scale: 1.0, noise_std: 0.0 }
    }
}

#[derive(Clone, Debug)]
pub struct DecisionTreeTask {
    pub params: DecisionTreeParams,
}

impl DecisionTreeTask {
    pub fn new(params: DecisionTreeParams) -> Result<Self, TaskError> {
        check_count("x_dim", params.x_dim, 1..=4096)?;
        check_count("context_len", params.context_len, 1..=crate::MAX_CONTEXT)?;
        check_count("depth", params.depth, 1..=16)?;
        check_real("input_scale", params.input_scale, 0.0, true)?;
        check_real("noise_std", params.noise_std, 0.0, false)?;
        Ok(Self { params })
    }

    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self::new(parse(ENTRY.name, params)?)?))
    }
}

/// The leaf of a complete tree (nodes numbered breadth-first from 0) that `x` reaches.
fn leaf_of(split_coords: &[usize], depth: usize, x: &[f64]) -> usize {
    let mut node = 0;
    for _ in 0..depth {
        node = 2 * node + 1 + usize::from(x[split_coords[node]] > 0.0);
    }
    node - split_coords.len() // leaves follow the 2^D − 1 internal nodes
}

impl Task for DecisionTreeTask {
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
        1.0 // leaf values ~ N(0, 1); the query is noise-free
    }

    fn learners(&self) -> Vec<LearnerSpec> {
        vec![
            LearnerSpec::new("zero"),
            LearnerSpec::new("least_squares"),
            LearnerSpec::new("knn").with("k", 3),
            LearnerSpec::new("averaging"),
            LearnerSpec::new("tree").with("max_depth", 4),
            LearnerSpec::new("tree").with("max_depth", serde_json::Value::Null),
            LearnerSpec::new("boosting"),
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
        let DecisionTreeParams { x_dim: d, depth, input_scale, noise_std, .. } = self.params;
        let internal = (1usize << depth) - 1;
        // Per prompt: a split coordinate for each internal node, then the leaf values.
        let draw = |rng: &mut TaskRng| -> (Vec<usize>, Vec<f64>) {
            let coords: Vec<usize> = (0..internal).map(|_| rng.random_range(0..d)).collect();
            let leaves: Vec<f64> = (0..=internal).map(|_| rng.sample(StandardNormal)).collect();
            (coords, leaves)
        };
        let label = |(coords, leaves): &(Vec<usize>, Vec<f64>), x: &[f64]| leaves[leaf_of(coords, depth, x)];
        sample_gaussian_inputs(rng, (batch, n, d), input_scale, noise_std, draw, label, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, TaskConfig};
    use rand::SeedableRng;

    #[test]
    fn a_hand_built_tree_routes_inputs() {
        // depth 2: root tests x0, its children test x1 (left) and x2 (right)
        let coords = [0, 1, 2];
        assert_eq!(leaf_of(&coords, 2, &[-1.0, -1.0, 5.0]), 0);
        assert_eq!(leaf_of(&coords, 2, &[-1.0, 1.0, -5.0]), 1);
        assert_eq!(leaf_of(&coords, 2, &[1.0, 9.0, -1.0]), 2);
        assert_eq!(leaf_of(&coords, 2, &[1.0, -9.0, 1.0]), 3);
    }

    #[test]
    fn labels_are_leaf_values() {
        let task = build(&TaskConfig::new("decision_tree").with("x_dim", 5).with("depth", 3)).unwrap();
        let p = task.sample_n(&mut TaskRng::seed_from_u64(0), 2000, 20);
        assert!(p.w.is_none());
        // At most 8 distinct labels per prompt, and E[y²] ≈ 1.
        for b in 0..20 {
            let mut values: Vec<f64> = p.ys.slice(ndarray::s![b, .., 0]).to_vec();
            values.sort_by(f64::total_cmp);
            values.dedup();
            assert!(values.len() <= 8);
        }
        let ms = p.yq.iter().map(|y| y * y).sum::<f64>() / 2000.0;
        assert!((ms - 1.0).abs() < 0.1, "{ms}");
    }
}
