//! `icl-lab curve`: the in-context learning curve of any task, for any reference learners and any
//! trained runs (read out at their output and, on request, after every layer), as measurement
//! rows in JSON with a PNG and an SVG. The measuring itself is `icl_probes::curve`; this module
//! adds the trained models (through [`ModelLearner`]) and the files.

use std::path::{Path, PathBuf};

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
    /// The run in `dir`, checked before use ([`crate::runs::open_run`]).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let run = crate::runs::open_run(dir)?;
        Ok(Self { dir: run.dir, config: run.config })
    }
}

/// What measuring a curve holds in memory at once ([`crate::budget`]): the evaluation and tuning
/// prompts at the largest n (and a prefix of each), fresh prompts per n under a shift whose
/// prompts are not prefixes, and every run's activations on the evaluation prompts.
pub fn memory(task: &dyn Task, runs: &[RunOnCurve], opts: &CurveOptions) -> crate::budget::Budget {
    use crate::budget::prompt_bytes;
    let dims = task.dims();
    let n_max = opts.n_values.iter().copied().max().unwrap_or(0);
    let mut b = crate::budget::Budget::new();
    b.add("--prompts × --n-max (evaluation prompts)", prompt_bytes(opts.prompts, n_max, dims) * 2)
        .add("--tuning-prompts × --n-max (tuning prompts)", prompt_bytes(opts.tuning_prompts, n_max, dims) * 2);
    if opts.shift.is_some_and(|s| !s.kind.prefix_consistent()) {
        b.add("--shift (fresh prompts per n)", prompt_bytes(opts.prompts, n_max, dims) * opts.n_values.len() as u128);
    }
    for run in runs {
        b.add(
            format!("--run {} (activations)", run.dir.display()),
            run.config.activation_memory(opts.prompts, n_max, false),
        );
    }
    b
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

/// The candidates `--learners` names ([`icl_probes::specs::resolve_learners`]).
pub fn resolve_learners(text: &str, task_defaults: &[LearnerSpec]) -> anyhow::Result<Vec<LearnerSpec>> {
    Ok(icl_probes::specs::resolve_learners(text, task_defaults)?)
}

/// Parses `name` or `name(key=value, …)` learner specs, comma-separated (no `default`).
pub fn parse_learners(text: &str) -> anyhow::Result<Vec<LearnerSpec>> {
    Ok(icl_probes::specs::parse_learners(text)?)
}

/// A command-line value as TOML would read it ([`icl_probes::specs::parse_value`]).
pub fn parse_value(text: &str) -> anyhow::Result<serde_json::Value> {
    icl_probes::specs::parse_value(text).map_err(anyhow::Error::msg)
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

    #[test]
    fn learner_lists_take_lists_defaults_and_refuse_non_numbers_and_repeats() {
        crate::learners::register();
        let specs = parse_learners("precond_gd(steps=1, p=[[1, 0], [0, 2]]), ridge(lambda=0.5)").unwrap();
        assert_eq!(specs[0].params["p"], serde_json::json!([[1, 0], [0, 2]]));
        assert_eq!(specs[1].params["lambda"], 0.5);
        let defaults = vec![LearnerSpec::new("zero"), LearnerSpec::new("knn").with("k", 3)];
        let plus = resolve_learners("+knn(k=1)", &defaults).unwrap();
        assert_eq!(plus.iter().map(|s| s.label()).collect::<Vec<_>>(), ["zero", "knn(k=3)", "knn(k=1)"]);
        assert_eq!(resolve_learners("knn(k=1),default", &defaults).unwrap().len(), 3);
        assert!(resolve_learners("none", &defaults).unwrap().is_empty());
        let err = |t: &str| format!("{:#}", resolve_learners(t, &defaults).unwrap_err());
        assert!(err("+knn(k=3)").contains("`knn(k=3)` is given twice (the task's learners include it)"));
        assert!(err("gd,+knn").contains("`+` goes at the start"));
        for bad in ["ridge(lambda=nan)", "ridge(lambda=inf)", "ridge(lambda=-inf)", "precond_gd(p=[[nan]])"] {
            assert!(err(bad).contains("not a finite number"), "{bad}: {}", err(bad));
        }
        assert!(err("knn(k=1, k=2)").contains("sets `k` twice"));
        assert!(err("ridge(lambda=[0.1, 0.5)").contains("unbalanced"));
    }
}
