//! The name → task registry, and [`TaskConfig`], the `[task]` table of a run config: a task name
//! and that task's own parameters.

use std::sync::RwLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{Params, Task, TaskError};

/// How a task is chosen and parameterised, as written under `[task]` in a run config:
/// `name = "…"` and the task's own keys (see each task's parameter struct). Missing keys take the
/// task's defaults; [`build`] rejects unknown keys and bad values with a one-line error.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskConfig {
    /// Registry name, e.g. `linear`.
    pub name: String,
    /// The task's own parameters.
    pub params: Params,
}

impl Default for TaskConfig {
    /// von Oswald et al. 2023's linear regression with the official code's settings.
    fn default() -> Self {
        Self::new("linear")
    }
}

impl TaskConfig {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), params: Params::new() }
    }

    /// Sets one parameter (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.set(key, value);
        self
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.params.insert(key.into(), value.into());
    }

    /// Builds the task (see [`build`]).
    pub fn build(&self) -> Result<Box<dyn Task>, TaskError> {
        build(self)
    }
}

impl Serialize for TaskConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = Params::new();
        map.insert("name".into(), Value::String(self.name.clone()));
        map.extend(self.params.clone());
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut params = Params::deserialize(d)?;
        let name = match params.remove("name") {
            None => "linear".to_string(),
            Some(Value::String(s)) => s,
            Some(other) => return Err(serde::de::Error::custom(format!("task.name: must be a string (got {other})"))),
        };
        Ok(Self { name, params })
    }
}

/// A registered task: its name, one line saying what it is, and how to build it from parameters.
#[derive(Clone, Copy)]
pub struct TaskEntry {
    pub name: &'static str,
    pub about: &'static str,
    pub build: fn(&Params) -> Result<Box<dyn Task>, TaskError>,
}

/// Every task of the lab, by name. Adding a task is one line here.
pub const REGISTRY: &[TaskEntry] = &[
    crate::linear::ENTRY,
    crate::gaussian_linear::ENTRY,
    crate::sparse_linear::ENTRY,
    crate::decision_tree::ENTRY,
    crate::relu_net::ENTRY,
    crate::sine::ENTRY,
    crate::mixture::ENTRY,
];

/// Tasks registered at run time by code outside this crate (a downstream crate, a test).
static EXTRA: RwLock<Vec<TaskEntry>> = RwLock::new(Vec::new());

/// Registers a task defined outside this crate; it is then built by name like the built-in ones.
/// Registering a name twice is an error.
pub fn register(entry: TaskEntry) -> Result<(), TaskError> {
    let mut extra = EXTRA.write().expect("task registry lock");
    if REGISTRY.iter().chain(extra.iter()).any(|e| e.name == entry.name) {
        return Err(TaskError::invalid("name", "is already registered", entry.name));
    }
    extra.push(entry);
    Ok(())
}

/// Every registered task, built-in first.
pub fn entries() -> Vec<TaskEntry> {
    let extra = EXTRA.read().expect("task registry lock");
    REGISTRY.iter().chain(extra.iter()).copied().collect()
}

/// The registered task names.
pub fn names() -> Vec<&'static str> {
    entries().iter().map(|e| e.name).collect()
}

/// Builds the task a configuration names, parsing and checking its parameters.
pub fn build(config: &TaskConfig) -> Result<Box<dyn Task>, TaskError> {
    let entry = entries()
        .into_iter()
        .find(|e| e.name == config.name)
        .ok_or_else(|| TaskError::Unknown(config.name.clone(), names().join(", ")))?;
    (entry.build)(&config.params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_builds_from_defaults_and_round_trips() {
        for entry in REGISTRY {
            let task = build(&TaskConfig::new(entry.name)).unwrap();
            assert_eq!(task.name(), entry.name);
            // The resolved config rebuilds the same task.
            let again = build(&task.config()).unwrap();
            assert_eq!(again.params(), task.params(), "{}", entry.name);
            let json = serde_json::to_string(&task.config()).unwrap();
            let back: TaskConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, task.config());
        }
    }

    #[test]
    fn unknown_tasks_and_keys_are_named() {
        let e = build(&TaskConfig::new("nope")).err().unwrap().to_string();
        assert!(e.starts_with("task.name: unknown task `nope`") && e.contains("sparse_linear"), "{e}");
        let e = build(&TaskConfig::new("sparse_linear").with("input_range", 2.0)).err().unwrap().to_string();
        assert!(
            e.starts_with("task.input_range: unknown key for task `sparse_linear` (expected one of `x_dim`"),
            "{e}"
        );
    }
}
