//! The name → task registry and the configuration every task is built from.

use serde::{Deserialize, Serialize};

use crate::{linear::LinearRegression, Task, TaskError};

/// How a task is chosen and parameterised, as written under `[task]` in a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Registry name, e.g. `linear`.
    pub name: String,
    /// Input dimension d (von Oswald et al.: 10).
    pub x_dim: usize,
    /// Output dimension o (1 in every paper figure).
    pub y_dim: usize,
    /// Number of context pairs N (von Oswald et al.: 10).
    pub context_len: usize,
    /// Inputs are drawn from U(−input_range/2, input_range/2). The official code uses 1,
    /// i.e. U(−0.5, 0.5); the paper text says U(−1, 1).
    pub input_range: f64,
    /// Teacher weights are N(0, I)·w_scale.
    pub w_scale: f64,
    /// Standard deviation of Gaussian label noise on context and query labels.
    pub noise_std: f64,
    /// How many context labels are replaced by N(0, 1) noise ("distractors", von Oswald et al. A.13).
    pub distractors: usize,
}

impl Default for TaskConfig {
    /// The official code's defaults for von Oswald et al. 2023.
    fn default() -> Self {
        Self {
            name: "linear".into(),
            x_dim: 10,
            y_dim: 1,
            context_len: 10,
            input_range: 1.0,
            w_scale: 1.0,
            noise_std: 0.0,
            distractors: 0,
        }
    }
}

type Constructor = fn(&TaskConfig) -> Result<Box<dyn Task>, TaskError>;

/// Every task, by name. Adding a task is one line here.
pub const REGISTRY: &[(&str, Constructor)] = &[("linear", LinearRegression::build)];

/// The registered task names.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(name, _)| *name).collect()
}

/// Builds the task a configuration names, after checking the fields every task shares.
pub fn build(config: &TaskConfig) -> Result<Box<dyn Task>, TaskError> {
    check_common(config)?;
    let (_, construct) = REGISTRY
        .iter()
        .find(|(name, _)| *name == config.name)
        .ok_or_else(|| TaskError::Unknown(config.name.clone(), names().join(", ")))?;
    construct(config)
}

fn check_common(c: &TaskConfig) -> Result<(), TaskError> {
    let invalid = |field, message, got: String| Err(TaskError::Invalid { field, message, got });
    if c.x_dim == 0 || c.x_dim > 4096 {
        return invalid("x_dim", "must be an integer in 1..=4096", c.x_dim.to_string());
    }
    if c.y_dim == 0 || c.y_dim > 4096 {
        return invalid("y_dim", "must be an integer in 1..=4096", c.y_dim.to_string());
    }
    if c.context_len == 0 || c.context_len > 100_000 {
        return invalid("context_len", "must be an integer in 1..=100000", c.context_len.to_string());
    }
    if !(c.input_range.is_finite() && c.input_range > 0.0) {
        return invalid("input_range", "must be a finite number > 0", c.input_range.to_string());
    }
    if !(c.w_scale.is_finite() && c.w_scale >= 0.0) {
        return invalid("w_scale", "must be a finite number >= 0", c.w_scale.to_string());
    }
    if !(c.noise_std.is_finite() && c.noise_std >= 0.0) {
        return invalid("noise_std", "must be a finite number >= 0", c.noise_std.to_string());
    }
    if c.distractors > c.context_len {
        return invalid("distractors", "must be at most task.context_len", c.distractors.to_string());
    }
    Ok(())
}
