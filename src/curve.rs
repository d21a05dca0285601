//! `icl-lab curve`: the in-context learning curve of any task, for any reference learners and any
//! trained runs (read out at their output and, on request, after every layer), as measurement
//! rows in JSON with a PNG and an SVG. The measuring itself is `icl_probes::curve`; this module
//! adds the trained models (through [`ModelLearner`]) and the files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use icl_probes::curve::{learning_curve_with_errors, CurveMember, CurveOptions};
use icl_probes::learner::Learner;
use icl_probes::measure::Measurement;
use icl_tasks::{LearnerSpec, Shift, Task, TaskConfig};

use crate::config::RunConfig;
use crate::learners::ModelLearner;

/// What a curve file holds: how it was made and its rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurveFile {
    pub task: TaskConfig,
    pub prompts: usize,
    pub tuning_prompts: usize,
    pub seed: u64,
    pub shift: Option<Shift>,
    pub runs: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// A trained run on the curve, read out after its last layer or, with `per_layer`, after each.
pub struct RunOnCurve {
    pub dir: PathBuf,
    pub config: RunConfig,
}

impl RunOnCurve {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config = RunConfig::from_file(&dir.join("config.toml"))?;
        Ok(Self { dir: dir.to_path_buf(), config })
    }
}

/// Measures the curve: reference learners fitted per n, then every run (and its layers).
pub fn measure(
    task: &dyn Task,
    learners: &[LearnerSpec],
    runs: &[RunOnCurve],
    per_layer: bool,
    opts: &CurveOptions,
) -> anyhow::Result<Vec<Measurement>> {
    Ok(measure_with_errors(task, learners, runs, per_layer, opts)?.into_iter().map(|(row, _)| row).collect())
}

/// [`measure`], each row with the per-prompt errors it summarises (for joint statistics over n).
pub fn measure_with_errors(
    task: &dyn Task,
    learners: &[LearnerSpec],
    runs: &[RunOnCurve],
    per_layer: bool,
    opts: &CurveOptions,
) -> anyhow::Result<Vec<(Measurement, Vec<f64>)>> {
    crate::learners::register();
    let mut models: Vec<ModelLearner> = Vec::new();
    for run in runs {
        anyhow::ensure!(
            run.config.dims().x_dim == task.dims().x_dim && run.config.dims().y_dim == task.dims().y_dim,
            "run {} was trained on d = {}, o = {}; the curve's task has d = {}, o = {}",
            run.dir.display(),
            run.config.dims().x_dim,
            run.config.dims().y_dim,
            task.dims().x_dim,
            task.dims().y_dim
        );
        let layers = run.config.layers();
        let readouts: Vec<Option<usize>> = if per_layer { (1..=layers).map(Some).collect() } else { vec![None] };
        for layer in readouts {
            let layer = layer.filter(|&l| l < layers); // the last layer is the model's output
            models.push(ModelLearner::from_run(&run.dir, &run.config)?.at_layer(layer).without_sensitivity());
        }
    }
    let mut members: Vec<CurveMember> = learners.iter().cloned().map(CurveMember::Reference).collect();
    members.extend(models.iter().map(|m| CurveMember::Fixed {
        learner: m as &dyn Learner,
        model: Some(m.run.clone()),
        seed: m.seed,
        layer: m.layer,
    }));
    let total = (members.len() * opts.n_values.len()) as u64;
    let bar = crate::train::progress_bar(total, "curve");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len}  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let progress = |what: &str| {
        bar.inc(1);
        bar.set_message(what.to_string());
    };
    let rows = learning_curve_with_errors(task, &members, opts, &progress).map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    Ok(rows)
}

/// Writes `<out>/curve.json`, `curve.png` and `curve.svg`.
pub fn write(out: &Path, file: &CurveFile, title: &str) -> anyhow::Result<Vec<PathBuf>> {
    crate::io::write_json_atomic(&out.join("curve.json"), file)?;
    let chart = crate::plot::curve_chart(&file.measurements, title, 1.5);
    let mut files = vec![out.join("curve.json")];
    files.extend(crate::plot::render(
        &crate::plot::Panel { charts: vec![chart], chart_size: Some((860, 600)) },
        out,
        "curve",
    )?);
    Ok(files)
}

/// A short table for the terminal: each learner's normalised error at a few n.
pub fn summary(rows: &[Measurement], columns: usize) -> String {
    let mut ns: Vec<usize> = rows.iter().filter_map(|m| m.n_context).collect();
    ns.sort_unstable();
    ns.dedup();
    let picked: Vec<usize> = if ns.len() <= columns {
        ns.clone()
    } else {
        let mut p: Vec<usize> = (0..columns).map(|i| ns[i * (ns.len() - 1) / (columns - 1)]).collect();
        p.dedup();
        p
    };
    let label = |m: &Measurement| match (&m.model, m.layer) {
        (Some(run), Some(l)) => format!("{run} (layer {l})"),
        (Some(run), None) => run.clone(),
        _ => crate::plot::curve_label(m),
    };
    let mut names: Vec<String> = Vec::new();
    for m in rows {
        let l = label(m);
        if !names.contains(&l) {
            names.push(l);
        }
    }
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(7).max(7);
    let mut out = format!("{:<width$}", "learner");
    for n in &picked {
        out += &format!("  {:>8}", format!("n={n}"));
    }
    out.push('\n');
    for name in &names {
        out += &format!("{name:<width$}");
        for n in &picked {
            let v = rows.iter().find(|m| label(m) == *name && m.n_context == Some(*n)).map(|m| m.value);
            out += &match v {
                Some(v) if v.abs() < 1e4 => format!("  {v:>8.4}"),
                Some(v) => format!("  {v:>8.1e}"),
                None => format!("  {:>8}", "—"),
            };
        }
        out.push('\n');
    }
    out
}

/// Parses `name` or `name(key=value, …)` learner specs, comma-separated; values are TOML values
/// (`none` for null).
pub fn parse_learners(text: &str) -> anyhow::Result<Vec<LearnerSpec>> {
    let mut specs = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let mut parts = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        anyhow::ensure!(depth >= 0, "--learners: unbalanced parentheses in `{text}`");
    }
    anyhow::ensure!(depth == 0, "--learners: unbalanced parentheses in `{text}`");
    parts.push(&text[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let (name, args) = match part.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.strip_suffix(')').context("--learners: missing `)`")?),
            None => (part, ""),
        };
        let mut spec = LearnerSpec::new(name);
        for kv in args.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').with_context(|| format!("--learners: `{kv}` is not key=value"))?;
            spec.params.insert(k.trim().into(), parse_value(v.trim())?);
        }
        icl_probes::learner::family(name).map_err(|e| anyhow::anyhow!("--learners: {e}"))?;
        specs.push(spec);
    }
    Ok(specs)
}

/// A command-line value as TOML would read it (`3`, `0.5`, `"x"` or bare `x`, `[1, 2]`), `none` → null.
pub fn parse_value(text: &str) -> anyhow::Result<serde_json::Value> {
    if matches!(text, "none" | "null") {
        return Ok(serde_json::Value::Null);
    }
    let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {text}"));
    match parsed {
        Ok(mut t) => Ok(serde_json::to_value(t.remove("v").expect("one key"))?),
        Err(_) => Ok(serde_json::Value::String(text.to_string())), // a bare word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learner_lists_parse() {
        crate::learners::register();
        let specs = parse_learners("least_squares, gd(steps=2), tree(max_depth=none),lasso(alpha=0.1)").unwrap();
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[1].params["steps"], 2);
        assert!(specs[2].params["max_depth"].is_null());
        assert!(parse_learners("gd(steps=2").is_err());
        assert!(parse_learners("nope").unwrap_err().to_string().contains("unknown learner `nope`"));
    }
}
