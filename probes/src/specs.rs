//! Learner specs as text, `name` or `name(key=value, …)`: the form `--learners` takes on the
//! command line and the Python module takes as a string. A spec's printed form is
//! [`LearnerSpec::label`]; this is its parser. Messages are the command line's, word for word, so
//! a bad spec reads the same from the CLI and from Python.

use icl_tasks::LearnerSpec;

use crate::ProbeError;

fn invalid(message: String) -> ProbeError {
    ProbeError::InvalidSpec(message)
}

/// The candidates `--learners` names: `default` (the task's own learners), `none`, or a
/// comma-separated list of specs (`name` or `name(key=value, …)`, values as TOML reads them:
/// `3`, `0.5`, `"x"` or a bare word, `[0.1, 0.5]`, `[[1, 0], [0, 1]]`, `none` for null), in which
/// the item `default` stands for the task's learners; `+list` is short for `default,list`.
/// A spec given twice is refused (its rows would be one candidate counted twice).
pub fn resolve_learners(text: &str, task_defaults: &[LearnerSpec]) -> Result<Vec<LearnerSpec>, ProbeError> {
    let text = text.trim();
    if text == "none" {
        return Ok(Vec::new());
    }
    let (text, with_defaults) = match text.strip_prefix('+') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let mut specs: Vec<LearnerSpec> = if with_defaults { task_defaults.to_vec() } else { Vec::new() };
    for part in split_top_level(text, ',')? {
        if part.starts_with('+') {
            return Err(invalid(format!(
                "--learners: `+` goes at the start of the list only (`+{part}` adds to the task's learners; or write `default,…`)"
            )));
        }
        match part {
            "default" => specs.extend(task_defaults.iter().cloned()),
            "none" => return Err(invalid("--learners: `none` stands alone".into())),
            _ => specs.push(parse_spec(part)?),
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|s| s.label() == spec.label()) {
            return Err(invalid(format!(
                "--learners: `{}` is given twice{}",
                spec.label(),
                if task_defaults.contains(spec) { " (the task's learners include it)" } else { "" }
            )));
        }
    }
    Ok(specs)
}

/// Parses `name` or `name(key=value, …)` learner specs, comma-separated (no `default`).
pub fn parse_learners(text: &str) -> Result<Vec<LearnerSpec>, ProbeError> {
    resolve_learners(text, &[])
}

/// `text` split at `sep` outside parentheses, brackets and quotes, each part trimmed, empty
/// parts dropped.
fn split_top_level(text: &str, sep: char) -> Result<Vec<&str>, ProbeError> {
    let (mut depth, mut start, mut quote) = (0i32, 0usize, None::<char>);
    let mut parts = Vec::new();
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
        if depth < 0 {
            return Err(invalid(format!("--learners: unbalanced brackets in `{text}`")));
        }
    }
    if depth != 0 || quote.is_some() {
        return Err(invalid(format!("--learners: unbalanced brackets or quotes in `{text}`")));
    }
    parts.push(&text[start..]);
    Ok(parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect())
}

/// One spec, `name` or `name(key=value, …)`; the family must be registered.
pub fn parse_spec(part: &str) -> Result<LearnerSpec, ProbeError> {
    let (name, args) = match part.split_once('(') {
        Some((name, rest)) => {
            (name.trim(), rest.trim_end().strip_suffix(')').ok_or_else(|| invalid("--learners: missing `)`".into()))?)
        }
        None => (part, ""),
    };
    let mut spec = LearnerSpec::new(name);
    for kv in split_top_level(args, ',')? {
        let (k, v) = kv.split_once('=').ok_or_else(|| invalid(format!("--learners: `{kv}` is not key=value")))?;
        let key = k.trim();
        if spec.params.contains_key(key) {
            return Err(invalid(format!("--learners: `{name}` sets `{key}` twice")));
        }
        let value = parse_value(v.trim()).map_err(|e| invalid(format!("--learners: `{name}({key}=…)`: {e}")))?;
        spec.params.insert(key.into(), value);
    }
    crate::learner::family(name).map_err(|e| invalid(format!("--learners: {e}")))?;
    Ok(spec)
}

/// A command-line value as TOML would read it (`3`, `0.5`, `"x"` or bare `x`, `[1, 2]`), `none` → null.
/// NaN and ±inf are refused: JSON cannot hold them, and a setting that is not a number is a
/// mistake, not a request to tune.
pub fn parse_value(text: &str) -> Result<serde_json::Value, String> {
    if matches!(text, "none" | "null") {
        return Ok(serde_json::Value::Null);
    }
    let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {text}"));
    match parsed {
        Ok(mut t) => {
            let value = t.remove("v").expect("one key");
            if !all_finite(&value) {
                return Err(format!("`{text}` is not a finite number"));
            }
            serde_json::to_value(value).map_err(|e| e.to_string())
        }
        Err(_) => Ok(serde_json::Value::String(text.to_string())), // a bare word
    }
}

/// Whether every float in a TOML value (lists included) is finite.
fn all_finite(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(f) => f.is_finite(),
        toml::Value::Array(a) => a.iter().all(all_finite),
        toml::Value::Table(t) => t.values().all(all_finite),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_lists_and_keep_the_command_lines_messages() {
        let specs = parse_learners("gd(steps=2), ridge(lambda=[0.1, 0.5]), knn(k=3)").unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0], LearnerSpec::new("gd").with("steps", 2));
        assert_eq!(specs[1].params["lambda"], serde_json::json!([0.1, 0.5]));
        let e = parse_learners("ridge(lambda=nan)").unwrap_err().to_string();
        assert_eq!(e, "--learners: `ridge(lambda=…)`: `nan` is not a finite number");
        let e = parse_learners("gradient_descent").unwrap_err().to_string();
        assert!(e.starts_with("--learners: unknown learner `gradient_descent` (known: "), "{e}");
        let e = resolve_learners("+knn(k=3)", &[LearnerSpec::new("knn").with("k", 3)]).unwrap_err().to_string();
        assert_eq!(e, "--learners: `knn(k=3)` is given twice (the task's learners include it)");
    }
}
