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

    /// The spec's identity: `name` or `name(k=v, …)` with every setting, keys in order and lists
    /// and matrices written out in full. Two specs are the same candidate exactly when their
    /// labels are equal; rows, rankings, tables and legends key on it.
    pub fn label(&self) -> String {
        self.label_with(plain)
    }

    /// [`Self::label`] for tables and legends: a value longer than [`SHORT_VALUE`] characters
    /// (a list or a matrix) is shown as its length and a hash of its JSON (`p=[5×5 #3f9a1c02]`),
    /// so that two specs that differ only there still read differently.
    pub fn short_label(&self) -> String {
        self.label_with(|v| {
            let full = plain(v);
            if full.chars().count() <= SHORT_VALUE {
                return full;
            }
            let shape = match v {
                Value::Array(rows) => match rows.first() {
                    Some(Value::Array(first)) => format!("{}×{}", rows.len(), first.len()),
                    _ => format!("{} values", rows.len()),
                },
                Value::Object(map) => format!("{} keys", map.len()),
                _ => format!("{} chars", full.chars().count()),
            };
            format!("[{shape} #{}]", short_hash(&v.to_string()))
        })
    }

    fn label_with(&self, show: impl Fn(&Value) -> String) -> String {
        if self.params.is_empty() {
            return self.name.clone();
        }
        let kv: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={}", show(v))).collect();
        format!("{}({})", self.name, kv.join(", "))
    }

    /// Whether the spec sets `key` (to something other than null, which means "unset": tuned or
    /// the default).
    pub fn sets(&self, key: &str) -> bool {
        self.params.get(key).is_some_and(|v| !v.is_null())
    }

    /// The spec without `key` (e.g. `steps`, where it follows the depth).
    pub fn without(&self, key: &str) -> Self {
        let mut spec = self.clone();
        spec.params.remove(key);
        spec
    }
}

/// The longest value [`LearnerSpec::short_label`] writes out.
pub const SHORT_VALUE: usize = 24;

/// The first 8 hex digits of the SHA-256 of `text`: stable across runs, machines and versions.
fn short_hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
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
        // Lists and matrices are part of the identity; the short label keeps them apart by a hash.
        let a = LearnerSpec::new("ridge_bayes").with("noise", vec![0.1, 0.5]);
        assert_eq!(a.label(), "ridge_bayes(noise=[0.1,0.5])");
        assert_eq!(a.short_label(), a.label());
        let p = |x: f64| LearnerSpec::new("precond_gd").with("p", vec![vec![x, 0.0, 0.0]; 3]).with("steps", 1);
        let (p1, p2) = (p(1.0), p(2.0));
        assert_ne!(p1.label(), p2.label());
        assert_ne!(p1.short_label(), p2.short_label());
        assert!(p1.short_label().starts_with("precond_gd(p=[3×3 #") && p1.short_label().ends_with("], steps=1)"));
        assert_eq!(p1.short_label(), p(1.0).short_label(), "stable");
        assert_eq!(p1.without("steps").label(), p1.label().replace(", steps=1", ""));
    }
}
