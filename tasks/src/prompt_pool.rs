//! A fixed training set: K prompts drawn once from a task, each sampled prompt one of them,
//! uniformly (von Oswald et al. 2023, Fig. 16: the official code's `cycle_data`, training on
//! B ∈ {128, …, 8192} fixed tasks). Unlike [`crate::Task::pooled`], which fixes only the hidden
//! functions and draws fresh inputs, here the inputs repeat too, so a model can fit its training
//! prompts themselves. Works for every task; shifted versions draw fresh prompts (shifts are for
//! evaluation).

use ndarray::Axis;
use rand::Rng;

use crate::{Dims, LearnerSpec, Params, Prompts, Shift, ShiftSweep, Task, TaskError, TaskRng};

pub struct PromptPool {
    inner: Box<dyn Task>,
    prompts: Prompts,
}

impl PromptPool {
    /// `size` prompts of `inner`'s own length drawn from `pool_rng`.
    pub fn new(inner: Box<dyn Task>, size: usize, pool_rng: &mut TaskRng) -> Self {
        assert!(size >= 1, "a prompt pool holds at least one prompt");
        let prompts = inner.sample(pool_rng, size);
        Self { inner, prompts }
    }
}

impl Task for PromptPool {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn params(&self) -> Params {
        self.inner.params()
    }
    fn dims(&self) -> Dims {
        self.inner.dims()
    }
    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n_context: usize) -> Prompts {
        let n = self.prompts.context_len();
        assert_eq!(n_context, n, "a prompt pool holds prompts of {n} pairs, not {n_context}");
        let picks: Vec<usize> = (0..batch).map(|_| rng.random_range(0..self.prompts.batch())).collect();
        let p = &self.prompts;
        Prompts {
            xs: p.xs.select(Axis(0), &picks),
            ys: p.ys.select(Axis(0), &picks),
            xq: p.xq.select(Axis(0), &picks),
            yq: p.yq.select(Axis(0), &picks),
            w: p.w.as_ref().map(|w| w.select(Axis(0), &picks)),
        }
    }
    fn zero_error(&self) -> f64 {
        self.inner.zero_error()
    }
    fn learners(&self) -> Vec<LearnerSpec> {
        self.inner.learners()
    }
    fn shifts(&self) -> Vec<ShiftSweep> {
        self.inner.shifts()
    }
    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        self.inner.shifted(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, TaskConfig};
    use rand::SeedableRng;

    #[test]
    fn every_sampled_prompt_is_one_of_the_pool() {
        for task in [TaskConfig::new("linear").with("x_dim", 3), TaskConfig::new("decision_tree")] {
            let pool = PromptPool::new(build(&task).unwrap(), 3, &mut TaskRng::seed_from_u64(4));
            let p = pool.sample(&mut TaskRng::seed_from_u64(5), 60);
            let mut seen = std::collections::BTreeSet::new();
            for b in 0..p.batch() {
                let k = (0..3)
                    .find(|&k| pool.prompts.xs.index_axis(Axis(0), k) == p.xs.index_axis(Axis(0), b))
                    .expect("a pool prompt");
                assert_eq!(pool.prompts.yq.row(k), p.yq.row(b));
                assert_eq!(pool.prompts.ys.index_axis(Axis(0), k), p.ys.index_axis(Axis(0), b));
                seen.insert(k);
            }
            assert_eq!(seen.len(), 3, "all three drawn in 60 prompts");
        }
    }
}
