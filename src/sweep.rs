//! `icl-lab sweep`: a grid of config overrides × seeds, expanded into one run directory per
//! (config, seed) under the manifest rules of [`crate::runs`], and run where the compute is:
//!
//! - `sweep plan <file>`: the expanded runs, nothing trained;
//! - `sweep run <file> --jobs N`: trains them on this machine with a pool of N workers (one
//!   libtorch thread each); complete runs are reused;
//! - `sweep slurm <file> --out DIR`: writes one resolved config per (config, seed) and a Slurm
//!   array job (`sbatch DIR/sweep.sbatch`, one array task per run, each `icl-lab train --config`);
//! - `sweep collect <file>`: reads the finished runs (refusing the sweep if any is incomplete or
//!   damaged) and writes `reports/<name>.{md,json}` and `figures/<name>/final-loss.{png,svg}`.
//!
//! The sweep file (TOML):
//!
//! ```toml
//! name = "lr-depth"          # runs are <name>-<k>/seed-<s>, k = the grid point
//! preset = "tiny"            # or: config = "base.toml" (relative to the sweep file)
//! seeds = 3                  # seeds 0..3, or a list: seeds = [3, 7, 11]
//! [grid]                     # dotted keys of the run config → the values to try (a full product;
//!                            # not `seed` or `name`: seeds come from `seeds`, names from `name`)
//! "train.lr" = [0.003, 0.01]
//! "model.layers" = [1, 2]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::train::{load_complete_run, run_dir, train, RunMetrics, TrainOptions};

/// At most this many runs per sweep (a typo in a grid should not queue a million jobs).
pub const MAX_RUNS: usize = 10_000;

/// A sweep file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    pub name: String,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub seeds: Seeds,
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<toml::Value>>,
}

/// `seeds = N` (seeds 0..N) or `seeds = [s, …]` (those seeds).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

impl Default for Seeds {
    fn default() -> Self {
        Seeds::Count(1)
    }
}

impl Seeds {
    /// The seeds, checked: 1 to 1,000 of them, each once.
    fn resolve(&self) -> anyhow::Result<Vec<u64>> {
        let seeds: Vec<u64> = match self {
            Seeds::Count(n) => {
                anyhow::ensure!((1..=1000).contains(n), "seeds: must be in 1..=1000 (got {n})");
                (0..*n).collect()
            }
            Seeds::List(list) => list.clone(),
        };
        anyhow::ensure!((1..=1000).contains(&seeds.len()), "seeds: give 1 to 1000 seeds (got {})", seeds.len());
        for (i, s) in seeds.iter().enumerate() {
            anyhow::ensure!(!seeds[..i].contains(s), "seeds: seed {s} is listed twice");
        }
        Ok(seeds)
    }
}

/// One grid point: its overrides and its resolved config (seed 0; seeds vary per run).
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub index: usize,
    pub overrides: BTreeMap<String, toml::Value>,
    #[serde(skip)]
    pub config: RunConfig,
}

/// A sweep expanded: every point and seed.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub name: String,
    pub seeds: Vec<u64>,
    pub points: Vec<Point>,
}

impl Sweep {
    /// Reads and expands a sweep file; every point's config is validated (one line naming the
    /// field and the point on error).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: SweepFile = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("invalid sweep {}: {}", path.display(), crate::config::one_line(e.message()))
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Self::expand(&file, base_dir).with_context(|| format!("sweep {}", path.display()))
    }

    pub fn expand(file: &SweepFile, base_dir: &Path) -> anyhow::Result<Self> {
        let name_ok = !file.name.is_empty()
            && file.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !file.name.starts_with('.');
        anyhow::ensure!(
            name_ok,
            "name: letters, digits, `-`, `_` and `.`, not starting with `.` (got `{}`)",
            file.name
        );
        let seeds = file.seeds.resolve()?;
        for key in file.grid.keys() {
            anyhow::ensure!(
                !matches!(key.as_str(), "seed" | "name"),
                "grid.\"{key}\": not a grid key ({}); every point gets every seed of `seeds` and the name `{}-<point>`",
                if key == "seed" { "give the seeds as `seeds = [3, 7]`" } else { "runs are named by the sweep" },
                file.name
            );
            anyhow::ensure!(!file.grid[key].is_empty(), "grid.\"{key}\": give at least one value");
        }
        // The size of the product, before anything is expanded.
        let total = file
            .grid
            .values()
            .try_fold(seeds.len() as u64, |acc, v| acc.checked_mul(v.len() as u64))
            .filter(|&t| t <= MAX_RUNS as u64);
        anyhow::ensure!(
            total.is_some(),
            "grid: more than {MAX_RUNS} runs ({} × {} seed(s)); sweep fewer values",
            file.grid.iter().map(|(k, v)| format!("{} {k}", v.len())).collect::<Vec<_>>().join(" × "),
            seeds.len()
        );
        let base = match (&file.preset, &file.config) {
            (Some(p), None) => RunConfig::preset(p)?,
            (None, Some(c)) => RunConfig::from_file(&base_dir.join(c))?,
            _ => anyhow::bail!("give exactly one of `preset` and `config`"),
        };
        let mut points = vec![BTreeMap::new()];
        for (key, values) in &file.grid {
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut p = p.clone();
                        p.insert(key.clone(), v.clone());
                        p
                    })
                })
                .collect();
        }
        let points = points
            .into_iter()
            .enumerate()
            .map(|(index, overrides)| {
                let config = apply(&base, &overrides, &format!("{}-{index}", file.name))
                    .with_context(|| format!("grid point {index} ({})", describe(&overrides)))?;
                Ok(Point { index, overrides, config })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { name: file.name.clone(), seeds, points })
    }

    /// Every (point, seed) as a resolved run config, in array-task order (point-major).
    pub fn runs(&self) -> Vec<(usize, RunConfig)> {
        let mut out = Vec::new();
        for p in &self.points {
            for &seed in &self.seeds {
                let mut c = p.config.clone();
                c.seed = seed;
                out.push((p.index, c));
            }
        }
        out
    }
}

/// `base` with the dotted-key overrides applied and the run named `name`, validated.
fn apply(base: &RunConfig, overrides: &BTreeMap<String, toml::Value>, name: &str) -> anyhow::Result<RunConfig> {
    let mut table: toml::Table = toml::from_str(&base.to_toml())?;
    for (key, value) in overrides {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().filter(|l| !l.is_empty()).with_context(|| format!("grid: bad key `{key}`"))?;
        let mut at = &mut table;
        for part in parts {
            at = at
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("grid: `{key}`: `{part}` is not a table"))?;
        }
        at.insert(last.to_string(), value.clone());
    }
    table.insert("name".into(), toml::Value::String(name.into()));
    RunConfig::from_toml_str(&toml::to_string(&table)?)
}

/// `train.lr = 0.01, model.layers = 2`.
pub fn describe(overrides: &BTreeMap<String, toml::Value>) -> String {
    if overrides.is_empty() {
        return "the base config".into();
    }
    overrides.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

/// The plan as a table for the terminal.
pub fn plan(sweep: &Sweep, runs_root: &Path) -> String {
    let mut out = format!(
        "sweep `{}`: {} point(s) × {} seed(s) = {} runs\n",
        sweep.name,
        sweep.points.len(),
        sweep.seeds.len(),
        sweep.points.len() * sweep.seeds.len()
    );
    let runs = sweep.runs();
    for p in &sweep.points {
        let state = runs
            .iter()
            .filter(|(point, c)| *point == p.index && load_complete_run(&run_dir(runs_root, c), c).is_some())
            .count();
        out += &format!(
            "  {:<24} {}  ({state}/{} complete)\n",
            run_dir(runs_root, &p.config).parent().map_or_else(String::new, |d| d.display().to_string()),
            describe(&p.overrides),
            sweep.seeds.len()
        );
    }
    out
}

/// Trains every run of the sweep on this machine with `jobs` workers; complete runs are reused.
pub fn run_local(sweep: &Sweep, runs_root: &Path, jobs: usize) -> anyhow::Result<(usize, usize)> {
    let runs = sweep.runs();
    let bars = crate::progress::multi();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs.max(1)).build()?;
    let outcomes: Vec<anyhow::Result<bool>> = pool.install(|| {
        runs.par_iter()
            .map(|(_, c)| {
                let bar = bars.add(crate::train::run_progress_bar(c));
                let out = train(c, runs_root, TrainOptions { progress: Some(bar), ..Default::default() })
                    .with_context(|| format!("{} seed {}", c.name, c.seed))?;
                Ok(out.reused)
            })
            .collect()
    });
    let mut reused = 0;
    for outcome in outcomes {
        reused += usize::from(outcome?);
    }
    Ok((runs.len(), reused))
}

/// What `sweep slurm` asks of each array task. Every value goes into an `#SBATCH` line of the
/// job script, so [`SlurmOptions::check`] lets through only what Slurm's own syntax allows there.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    pub time: String,
    pub cpus: usize,
    pub mem: String,
    pub partition: Option<String>,
    /// At most this many array tasks at once (`--array=0-N%limit`).
    pub limit: Option<usize>,
}

impl SlurmOptions {
    /// Refuses, in one line naming the flag, any value that is not of Slurm's syntax for it: no
    /// newline, quote, space or shell metacharacter can reach the job script.
    pub fn check(&self) -> anyhow::Result<()> {
        let time_ok = !self.time.is_empty()
            && self.time.starts_with(|c: char| c.is_ascii_digit())
            && self.time.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '-')
            && self.time.matches('-').count() <= 1
            && self.time.matches(':').count() <= 2;
        anyhow::ensure!(time_ok, "--time: Slurm's time format, e.g. 90, 01:30:00 or 2-12:00:00 (got {:?})", self.time);
        let digits = self.mem.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
        let mem_ok =
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && self.mem.len() - digits.len() <= 1;
        anyhow::ensure!(mem_ok, "--mem: a number with an optional unit K, M, G or T, e.g. 2G (got {:?})", self.mem);
        if let Some(p) = &self.partition {
            let ok = !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,".contains(c));
            anyhow::ensure!(ok, "--partition: letters, digits, '-', '_', '.' and ',' only (got {p:?})");
        }
        anyhow::ensure!((1..=1024).contains(&self.cpus), "--cpus: must be in 1..=1024 (got {})", self.cpus);
        if let Some(l) = self.limit {
            anyhow::ensure!(l >= 1, "--limit: at least 1 array task at a time (got {l})");
        }
        Ok(())
    }
}

/// A path that goes into the job script: in an `#SBATCH` line (`sbatch_line`, read by Slurm
/// unquoted, where `%` is a pattern and a space ends the value) only letters, digits and
/// `/ . _ - + @ , : =`; in a command (quoted) anything but control characters.
fn check_script_path(flag: &str, path: &Path, sbatch_line: bool) -> anyhow::Result<()> {
    let text = path.to_str().with_context(|| format!("{flag}: {} is not valid UTF-8", path.display()))?;
    anyhow::ensure!(
        !text.chars().any(char::is_control),
        "{flag}: the path has a control character (a newline would end the job script's line): {text:?}"
    );
    if sbatch_line {
        anyhow::ensure!(
            text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@,:=".contains(c)),
            "{flag}: the path goes into the job script's #SBATCH --output line, which Slurm reads unquoted; use letters, digits and / . _ - + @ , : = only (got {text:?})"
        );
    }
    Ok(())
}

/// Writes `out/configs/<k>.toml` (one resolved config per run, k = array index),
/// `out/sweep.sbatch` and `out/sweep.json` (the index → point table); returns the sbatch path.
pub fn write_slurm(sweep: &Sweep, runs_root: &Path, out: &Path, opts: &SlurmOptions) -> anyhow::Result<PathBuf> {
    opts.check()?;
    // Paths as given are checked before anything is created; their absolute forms again below.
    check_script_path("--out", out, true)?;
    check_script_path("--runs", runs_root, false)?;
    let abs = |p: &Path| -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(p)?;
        Ok(p.canonicalize()?)
    };
    let out = abs(out)?;
    let runs_root = abs(runs_root)?;
    check_script_path("--out", &out, true)?;
    check_script_path("--runs", &runs_root, false)?;
    let configs = out.join("configs");
    std::fs::create_dir_all(&configs)?;
    std::fs::create_dir_all(out.join("logs"))?;
    let runs = sweep.runs();
    let mut table = Vec::new();
    for (k, (point, c)) in runs.iter().enumerate() {
        crate::io::write_atomic(&configs.join(format!("{k}.toml")), c.to_toml().as_bytes())?;
        table.push(serde_json::json!({
            "array_index": k, "point": point, "seed": c.seed,
            "run_dir": run_dir(&runs_root, c), "overrides": sweep.points[*point].overrides,
        }));
    }
    crate::io::write_json_atomic(&out.join("sweep.json"), &serde_json::json!({ "name": sweep.name, "runs": table }))?;
    let exe = std::env::current_exe().context("locating the icl-lab binary")?;
    check_script_path("the icl-lab binary", &exe, false)?;
    let mut script = format!(
        "#!/bin/bash\n# Written by `icl-lab sweep slurm` for sweep `{}`: one array task per (config, seed).\n\
         #SBATCH --job-name={}\n#SBATCH --array=0-{}{}\n#SBATCH --cpus-per-task={}\n#SBATCH --mem={}\n#SBATCH --time={}\n\
         #SBATCH --output={}/logs/%A_%a.out\n",
        sweep.name,
        sweep.name,
        runs.len() - 1,
        opts.limit.map_or(String::new(), |l| format!("%{l}")),
        opts.cpus,
        opts.mem,
        opts.time,
        out.display()
    );
    if let Some(p) = &opts.partition {
        script += &format!("#SBATCH --partition={p}\n");
    }
    script += &format!(
        "set -euo pipefail\n\
         # Each task trains one run directory; a rerun of the array reuses complete runs and retrains\n\
         # incomplete ones (the run directory's lock keeps two tasks off one run).\n\
         exec {} train --config {}/${{SLURM_ARRAY_TASK_ID}}.toml --runs {}\n",
        shell_quote(&exe),
        shell_quote(&configs),
        shell_quote(&runs_root)
    );
    let path = out.join("sweep.sbatch");
    crate::io::write_atomic(&path, script.as_bytes())?;
    Ok(path)
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// One finished run of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub point: usize,
    pub overrides: BTreeMap<String, toml::Value>,
    pub seed: u64,
    pub run_dir: String,
    /// ½·MSE on the run's evaluation set after training.
    pub final_loss: f64,
    /// The run's 1-step-per-layer GD reference on the same set, where it has one.
    pub gd_loss: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub sweep: String,
    pub seeds: Vec<u64>,
    pub points: Vec<Point>,
    pub rows: Vec<SweepRow>,
    pub figures: Vec<String>,
}

/// Reads every run of the sweep; refuses (one line) if any is not complete.
pub fn collect(sweep: &Sweep, runs_root: &Path) -> anyhow::Result<Vec<SweepRow>> {
    let runs = sweep.runs();
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for (point, c) in &runs {
        let dir = run_dir(runs_root, c);
        match load_complete_run(&dir, c) {
            Some(m) => rows.push(row(sweep, *point, &dir, &m)),
            None => missing.push(dir.display().to_string()),
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "{} of {} runs are not complete (first: {}); train them (`icl-lab sweep run` or the Slurm array) and collect again",
            missing.len(),
            runs.len(),
            missing.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(rows)
}

fn row(sweep: &Sweep, point: usize, dir: &Path, m: &RunMetrics) -> SweepRow {
    SweepRow {
        point,
        overrides: sweep.points[point].overrides.clone(),
        seed: m.seed,
        run_dir: dir.display().to_string(),
        final_loss: m.rows.last().map_or(f64::NAN, |r| r.loss),
        gd_loss: m.reference("gd").map(|r| r.loss),
    }
}

/// `sweep collect`: the report and the figure.
pub fn write_report(sweep: &Sweep, rows: Vec<SweepRow>, reports: &Path, figures: &Path) -> anyhow::Result<SweepReport> {
    let files = figure(sweep, &rows, &figures.join(&sweep.name))?;
    let report = SweepReport {
        sweep: sweep.name.clone(),
        seeds: sweep.seeds.clone(),
        points: sweep.points.clone(),
        rows,
        figures: files.iter().map(|f| f.display().to_string()).collect(),
    };
    std::fs::create_dir_all(reports)?;
    crate::io::write_json_atomic(&reports.join(format!("{}.json", sweep.name)), &report)?;
    crate::io::write_atomic(&reports.join(format!("{}.md", sweep.name)), markdown(&report).as_bytes())?;
    Ok(report)
}

/// Final loss per point: mean, min and max over seeds.
fn per_point(report_rows: &[SweepRow], point: usize) -> (f64, f64, f64, Option<f64>) {
    let losses: Vec<f64> = report_rows.iter().filter(|r| r.point == point).map(|r| r.final_loss).collect();
    let gd = report_rows.iter().find(|r| r.point == point).and_then(|r| r.gd_loss);
    let mean = crate::figures::mean(&losses);
    let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
    let max = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max, gd)
}

pub fn markdown(r: &SweepReport) -> String {
    let mut md = format!(
        "# Sweep `{}`\n\n{} point(s) × {} seed(s); final ½·MSE on each run's evaluation set, mean and [min, max] over \
         seeds; the 1-step-per-layer GD reference where the runs have one. Made by `icl-lab sweep collect`.\n\n\
         | point | overrides | final ½·MSE | [min, max] | GD reference |\n|---|---|---|---|---|\n",
        r.sweep,
        r.points.len(),
        r.seeds.len()
    );
    for p in &r.points {
        let (mean, min, max, gd) = per_point(&r.rows, p.index);
        md += &format!(
            "| {} | {} | {mean:.4} | [{min:.4}, {max:.4}] | {} |\n",
            p.index,
            describe(&p.overrides),
            gd.map_or("—".into(), |g| format!("{g:.4}"))
        );
    }
    if !r.figures.is_empty() {
        md += &format!("\nFigure: {}\n", r.figures.join(", "));
    }
    md
}

/// Final loss against the first numeric grid key, one line per combination of the others (with
/// the seeds' range as a band); none when no grid key is numeric.
fn figure(sweep: &Sweep, rows: &[SweepRow], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let numeric = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    // The x axis: the numeric grid key with the most values (the first of those).
    let distinct = |key: &str| {
        let mut values: Vec<f64> = sweep.points.iter().filter_map(|p| p.overrides.get(key).and_then(numeric)).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        values.len()
    };
    let keys: Vec<&String> = sweep.points.first().map(|p| p.overrides.keys().collect()).unwrap_or_default();
    let Some(x_key) = keys
        .into_iter()
        .filter(|k| distinct(k) > 1)
        .fold(None::<&String>, |best, k| match best {
            Some(b) if distinct(b) >= distinct(k) => Some(b),
            _ => Some(k),
        })
        .cloned()
    else {
        return Ok(Vec::new());
    };
    let mut series: Vec<crate::plot::Series> = Vec::new();
    for p in &sweep.points {
        let mut others = p.overrides.clone();
        let x = others.remove(&x_key).as_ref().and_then(numeric).unwrap_or(f64::NAN);
        others.retain(|k, _| sweep.points.iter().any(|q| q.overrides.get(k) != p.overrides.get(k)));
        let label = if others.is_empty() { "final ½·MSE".to_string() } else { describe(&others) };
        let (mean, min, max, _) = per_point(rows, p.index);
        let i = match series.iter().position(|s| s.label == label) {
            Some(i) => i,
            None => {
                series.push(crate::plot::Series { label: label.clone(), color: series.len(), ..Default::default() });
                series.len() - 1
            }
        };
        series[i].points.push((x, mean));
        series[i].band.push((x, min, max));
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        s.band.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let chart = crate::plot::Chart {
        title: format!("sweep {}: final loss by {x_key}", sweep.name),
        x_label: x_key,
        y_label: "final ½·MSE (mean; band: seeds' range)".into(),
        log_y: true,
        series,
        ..Default::default()
    };
    crate::plot::render(&crate::plot::Panel { charts: vec![chart], chart_size: Some((760, 520)) }, dir, "final-loss")
}
