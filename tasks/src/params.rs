//! Task and learner parameters as they appear in a run config: a table of named values, parsed
//! into each task's own typed struct (unknown keys rejected, wrong types named).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::TaskError;

/// Named parameter values (a TOML table, a JSON object).
pub type Params = serde_json::Map<String, Value>;

/// Parses a task's parameters into its typed struct `T` (which should be
/// `#[serde(deny_unknown_fields, default)]`): the error names the offending key.
pub fn parse<T: DeserializeOwned>(task: &'static str, params: &Params) -> Result<T, TaskError> {
    serde_path_to_error::deserialize(Value::Object(params.clone())).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde names an unknown key only in its message: "unknown field `k`, expected one of …".
        if let Some(key) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
            let expected = message.split_once(", ").map_or("", |(_, rest)| rest).to_string();
            return TaskError::UnknownKey { key: key.to_string(), task, expected };
        }
        let got = params.get(&path).map_or_else(|| "?".to_string(), |v| v.to_string());
        TaskError::invalid(&path, &message, got)
    })
}

/// Serialises a task's typed parameters back to a table.
pub fn to_params<T: Serialize>(typed: &T) -> Params {
    match serde_json::to_value(typed) {
        Ok(Value::Object(map)) => map,
        _ => panic!("task parameters serialise to a table"),
    }
}

/// A reference learner by name with its fixed settings, e.g. `knn` with `{k = 3}` or `lasso`
/// with `{alpha = 0.01}`. Hyperparameters not given here are tuned by the learner itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnerSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: Params,
}

impl LearnerSpec {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), params: Params::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }

    /// `name` or `name(k=v, …)`, for legends and tables.
    pub fn label(&self) -> String {
        if self.params.is_empty() {
            return self.name.clone();
        }
        let kv: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
        format!("{}({})", self.name, kv.join(", "))
    }
}

/// A value without JSON quoting (strings bare, `null` as "none").
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        k: usize,
        alpha: f64,
    }

    fn params(json: &str) -> Params {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse::<Demo>("demo", &params(r#"{"k": 3, "alpha": "x"}"#)).unwrap_err().to_string();
        assert!(e.starts_with("task.alpha: invalid type"), "{e}");
        let e = parse::<Demo>("demo", &params(r#"{"k": 3, "alpha": 1, "kk": 2}"#)).unwrap_err().to_string();
        assert_eq!(e, "task.kk: unknown key for task `demo` (expected `k` or `alpha`)");
        let e = parse::<Demo>("demo", &params(r#"{"k": 2.5, "alpha": 1}"#)).unwrap_err().to_string();
        assert!(e.starts_with("task.k:"), "{e}");
        // integers are accepted where a real number is expected
        assert_eq!(parse::<Demo>("demo", &params(r#"{"k": 3, "alpha": 1}"#)).unwrap().alpha, 1.0);
    }

    #[test]
    fn learner_labels() {
        assert_eq!(LearnerSpec::new("least_squares").label(), "least_squares");
        assert_eq!(LearnerSpec::new("knn").with("k", 3).label(), "knn(k=3)");
        assert_eq!(LearnerSpec::new("tree").with("max_depth", Value::Null).label(), "tree(max_depth=none)");
    }
}
