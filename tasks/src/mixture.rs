//! A mixture of registered tasks (Bai et al. 2023's in-context algorithm selection: e.g. dense
//! linear and sparse linear regression in one training distribution). Each prompt comes from one
//! component, drawn with the given weights; [`TaskMixture::sample_with_components`] says which.
//! The components must agree on (x_dim, y_dim, context_len). The learners are every component's
//! (each once), so a comparison can ask which component's learner a model runs per prompt.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::params::{parse, to_params};
use crate::registry::{TaskConfig, TaskEntry};
use crate::{Dims, LearnerSpec, Params, Prompts, Shift, ShiftSweep, Task, TaskError, TaskRng};

pub const ENTRY: TaskEntry = TaskEntry {
    name: "mixture",
    about: "a mixture of registered tasks, one component per prompt with given weights (Bai et al. 2023)",
    build: TaskMixture::build,
};

/// `[task] name = "mixture"`, `components = [{ name = "gaussian_linear", … }, …]`, `weights`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixtureParams {
    /// The component tasks, each a full `[task]` table.
    pub components: Vec<TaskConfig>,
    /// Their prior weights (positive; normalised here; uniform when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
}

impl Default for MixtureParams {
    /// Bai et al.'s pair at Garg's size: dense and 3-sparse linear regression, d = 20, N = 40.
    fn default() -> Self {
        Self { components: vec![TaskConfig::new("gaussian_linear"), TaskConfig::new("sparse_linear")], weights: None }
    }
}

pub struct TaskMixture {
    params: MixtureParams,
    components: Vec<Box<dyn Task>>,
    /// Cumulative probabilities of the components.
    cumulative: Vec<f64>,
}

impl TaskMixture {
    pub fn new(params: MixtureParams) -> Result<Self, TaskError> {
        let k = params.components.len();
        if !(2..=16).contains(&k) {
            return Err(TaskError::invalid("components", "must hold 2 to 16 tasks", format!("{k} tasks")));
        }
        let mut components = Vec::with_capacity(k);
        for (i, c) in params.components.iter().enumerate() {
            if c.name == ENTRY.name {
                return Err(TaskError::invalid("components", "cannot hold a mixture", format!("component {i}")));
            }
            let task = crate::build(c)
                .map_err(|e| TaskError::invalid("components", &format!("component {i}: {e}"), &c.name))?;
            components.push(task);
        }
        let dims = components[0].dims();
        if let Some((i, t)) = components.iter().enumerate().find(|(_, t)| t.dims() != dims) {
            let got = format!("component {i} `{}` has {:?}, component 0 has {:?}", t.name(), t.dims(), dims);
            return Err(TaskError::invalid("components", "must agree on x_dim, y_dim and context_len", got));
        }
        let raw = match &params.weights {
            None => vec![1.0; k],
            Some(w) if w.len() != k => {
                return Err(TaskError::invalid(
                    "weights",
                    "must hold one number per component",
                    format!("{} numbers", w.len()),
                ))
            }
            Some(w) => {
                for &v in w {
                    crate::check_real("weights", v, 0.0, true)?;
                }
                w.clone()
            }
        };
        let total: f64 = raw.iter().sum();
        let cumulative = raw.iter().scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        });
        Ok(Self { cumulative: cumulative.collect(), params, components })
    }

    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self::new(parse(ENTRY.name, params)?)?))
    }

    /// The component tasks, in order.
    pub fn components(&self) -> &[Box<dyn Task>] {
        &self.components
    }

    /// `batch` prompts and, for each, the index of the component that drew it. The components
    /// are picked first (one uniform draw per prompt), then each component samples its prompts in
    /// order from the same RNG, and they are laid out in the picked order.
    pub fn sample_with_components(&self, rng: &mut TaskRng, batch: usize, n: usize) -> (Prompts, Vec<usize>) {
        let picks: Vec<usize> = (0..batch)
            .map(|_| {
                let u: f64 = rng.random();
                self.cumulative.iter().position(|&c| u < c).unwrap_or(self.components.len() - 1)
            })
            .collect();
        let parts: Vec<Prompts> = self
            .components
            .iter()
            .enumerate()
            .map(|(k, t)| t.sample_n(rng, picks.iter().filter(|&&p| p == k).count(), n))
            .collect();
        // Row b of the batch is the next unused prompt of component picks[b].
        let mut next = vec![0usize; parts.len()];
        let order: Vec<(usize, usize)> = picks
            .iter()
            .map(|&k| {
                next[k] += 1;
                (k, next[k] - 1)
            })
            .collect();
        let stack3 = |get: &dyn Fn(&Prompts) -> ndarray::ArrayView3<f64>| {
            let views: Vec<_> =
                order.iter().map(|&(k, i)| get(&parts[k]).index_axis_move(ndarray::Axis(0), i)).collect();
            ndarray::stack(ndarray::Axis(0), &views).expect("components agree on shapes")
        };
        let stack2 = |get: &dyn Fn(&Prompts) -> ndarray::ArrayView2<f64>| {
            let views: Vec<_> =
                order.iter().map(|&(k, i)| get(&parts[k]).index_axis_move(ndarray::Axis(0), i)).collect();
            ndarray::stack(ndarray::Axis(0), &views).expect("components agree on shapes")
        };
        let d = self.dims();
        if batch == 0 {
            return (self.components[0].sample_n(rng, 0, n), picks);
        }
        let w = parts.iter().all(|p| p.w.is_some()).then(|| stack3(&|p| p.w.as_ref().expect("checked").view()));
        let prompts = Prompts {
            xs: stack3(&|p| p.xs.view()),
            ys: stack3(&|p| p.ys.view()),
            xq: stack2(&|p| p.xq.view()),
            yq: stack2(&|p| p.yq.view()),
            w,
        };
        debug_assert_eq!(prompts.x_dim(), d.x_dim);
        (prompts, picks)
    }
}

impl Task for TaskMixture {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn params(&self) -> Params {
        // Components with every default filled in, so the resolved config says exactly what ran.
        let resolved = MixtureParams {
            components: self.components.iter().map(|t| t.config()).collect(),
            weights: self.params.weights.clone(),
        };
        to_params(&resolved)
    }

    fn dims(&self) -> Dims {
        self.components[0].dims()
    }

    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n_context: usize) -> Prompts {
        self.sample_with_components(rng, batch, n_context).0
    }

    fn zero_error(&self) -> f64 {
        let mut prev = 0.0;
        self.components
            .iter()
            .zip(&self.cumulative)
            .map(|(t, &c)| {
                let p = c - prev;
                prev = c;
                p * t.zero_error()
            })
            .sum()
    }

    fn learners(&self) -> Vec<LearnerSpec> {
        let mut out: Vec<LearnerSpec> = Vec::new();
        for spec in self.components.iter().flat_map(|t| t.learners()) {
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
        out
    }

    fn shifts(&self) -> Vec<ShiftSweep> {
        Vec::new()
    }

    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        Err(TaskError::unsupported_shift(self, shift.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use rand::SeedableRng;

    fn pair(weights: Option<Vec<f64>>) -> TaskConfig {
        let mut c = TaskConfig::new("mixture").with(
            "components",
            serde_json::json!([
                {"name": "gaussian_linear", "x_dim": 6, "context_len": 8},
                {"name": "sparse_linear", "x_dim": 6, "context_len": 8, "sparsity": 2}
            ]),
        );
        if let Some(w) = weights {
            c = c.with("weights", w);
        }
        c
    }

    #[test]
    fn each_prompt_knows_its_component_and_follows_it() {
        let params: MixtureParams = parse("mixture", &pair(Some(vec![1.0, 3.0])).params).unwrap();
        let task = TaskMixture::new(params).unwrap();
        let (p, picks) = task.sample_with_components(&mut TaskRng::seed_from_u64(1), 2000, 8);
        let share = picks.iter().filter(|&&k| k == 1).count() as f64 / 2000.0;
        assert!((share - 0.75).abs() < 0.03, "{share}");
        // A sparse component's w has 2 non-zero coordinates, a dense one's all 6.
        let w = p.w.as_ref().unwrap();
        for (b, &k) in picks.iter().enumerate() {
            let nonzero = (0..6).filter(|&j| w[[b, 0, j]] != 0.0).count();
            assert_eq!(nonzero, if k == 1 { 2 } else { 6 }, "prompt {b}, component {k}");
        }
        // The same seed gives the same prompts; the learners are the union, each once.
        let again = task.sample_n(&mut TaskRng::seed_from_u64(1), 2000, 8);
        assert_eq!(again, p);
        let labels: Vec<String> = task.learners().iter().map(|l| l.label()).collect();
        assert!(labels.contains(&"lasso(alpha=0.01)".to_string()) && labels.contains(&"newton(steps=5)".to_string()));
        assert_eq!(labels.iter().filter(|l| *l == "ridge").count(), 1);
        assert!(build(&pair(None)).unwrap().config().params["components"][1]["sparsity"] == 2);
    }

    #[test]
    fn bad_mixtures_name_the_field() {
        let e = |c: TaskConfig| build(&c).err().unwrap().to_string();
        let one = TaskConfig::new("mixture").with("components", serde_json::json!([{"name": "linear"}]));
        assert!(e(one).starts_with("task.components: must hold 2 to 16"));
        let apart = TaskConfig::new("mixture")
            .with("components", serde_json::json!([{"name": "linear"}, {"name": "linear", "x_dim": 3}]));
        assert!(e(apart).contains("must agree on x_dim"));
        assert!(e(pair(Some(vec![1.0]))).starts_with("task.weights:"));
        let bad =
            TaskConfig::new("mixture").with("components", serde_json::json!([{"name": "linear"}, {"name": "nope"}]));
        assert!(e(bad).contains("component 1"));
    }
}
