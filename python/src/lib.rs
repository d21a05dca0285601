//! `icl_lab._core`: the libtorch-free half of the lab as a Python extension (PyO3 + numpy).
//! Tasks sample the same prompts, bit for bit, as the Rust side for a (seed, stream); learners
//! are built from the CLI's spec strings; the tournament is `icl_probes::contest`'s loop, the one
//! `icl-lab tournament` runs, with a Python callable as the contestant. Structured values (task
//! parameters, learner parameters, measurement rows, rankings) cross as JSON text, so their
//! schema is reports/*.json's exactly; arrays cross as float64 numpy arrays.
//!
//! The friendly API (keyword defaults, DataFrames, torch tensors) is `icl_lab/__init__.py`; errors
//! are `ValueError` with the command line's one-line messages.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use ndarray::{s, Array2, Array3, ArrayD, Axis};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use icl_probes::contest::{Contestant, Field, TournamentOptions};
use icl_probes::curve::stream_rng;
use icl_probes::learner::{fit, Learner, Prediction};
use icl_probes::ProbeError;
use icl_tasks::{Params, Prompts, Task, TaskConfig};

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn params_from_json(text: &str) -> PyResult<Params> {
    match serde_json::from_str::<serde_json::Value>(text).map_err(value_error)? {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null => Ok(Params::new()),
        other => Err(value_error(format!("parameters must be a table (got {other})"))),
    }
}

/// The task `name` with `params` (JSON object), pooled if `pool` = (size, pool_seed) is given.
fn build_task(name: &str, params_json: &str, pool: Option<(usize, u64)>) -> PyResult<Box<dyn Task>> {
    let config = TaskConfig { name: name.to_string(), params: params_from_json(params_json)? };
    let task = config.build().map_err(value_error)?;
    match pool {
        Some((size, seed)) => task.pooled(size, seed).map_err(value_error),
        None => Ok(task),
    }
}

/// Prompts as a dict of float64 arrays: xs (B, n, d), ys (B, n, o), xq (B, d), yq (B, o), and w
/// (B, o, d) where the task has a hidden linear function.
fn prompts_to_dict<'py>(py: Python<'py>, p: Prompts) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("xs", p.xs.into_pyarray(py))?;
    d.set_item("ys", p.ys.into_pyarray(py))?;
    d.set_item("xq", p.xq.into_pyarray(py))?;
    d.set_item("yq", p.yq.into_pyarray(py))?;
    if let Some(w) = p.w {
        d.set_item("w", w.into_pyarray(py))?;
    }
    Ok(d)
}

/// Prompts from a dict with xs (B, n, d), ys (B, n, o), xq (B, d) and optionally yq (B, o) (NaN
/// where absent) and w (B, o, d); the Python side has already made them float64 and 3-D/2-D.
fn prompts_from_dict(d: &Bound<'_, PyDict>) -> PyResult<Prompts> {
    let get = |key: &str| -> PyResult<Option<Bound<'_, PyAny>>> { d.get_item(key) };
    let need = |key: &str| get(key)?.ok_or_else(|| value_error(format!("prompts: missing `{key}`")));
    let xs: PyReadonlyArray3<f64> = need("xs")?.extract()?;
    let ys: PyReadonlyArray3<f64> = need("ys")?.extract()?;
    let xq: PyReadonlyArray2<f64> = need("xq")?.extract()?;
    let (xs, ys, xq) = (xs.as_array().to_owned(), ys.as_array().to_owned(), xq.as_array().to_owned());
    let (b, n, x_dim) = xs.dim();
    let o = ys.shape()[2];
    if ys.shape()[..2] != [b, n] || xq.dim() != (b, x_dim) {
        return Err(value_error(format!(
            "prompts: xs is {:?}, ys {:?}, xq {:?}; they must be (B, n, d), (B, n, o), (B, d)",
            xs.shape(),
            ys.shape(),
            xq.shape()
        )));
    }
    let yq = match get("yq")? {
        Some(v) if !v.is_none() => {
            let a: PyReadonlyArray2<f64> = v.extract()?;
            let a = a.as_array().to_owned();
            if a.dim() != (b, o) {
                return Err(value_error(format!("prompts: yq is {:?}, must be (B, o) = ({b}, {o})", a.shape())));
            }
            a
        }
        _ => Array2::from_elem((b, o), f64::NAN),
    };
    let w = match get("w")? {
        Some(v) if !v.is_none() => {
            let a: PyReadonlyArray3<f64> = v.extract()?;
            let a = a.as_array().to_owned();
            if a.dim() != (b, o, x_dim) {
                return Err(value_error(format!("prompts: w is {:?}, must be (B, o, d)", a.shape())));
            }
            Some(a)
        }
        _ => None,
    };
    let bad = xs.iter().chain(ys.iter()).chain(xq.iter()).any(|v| !v.is_finite());
    if bad {
        return Err(value_error("prompts: xs, ys and xq must be finite"));
    }
    Ok(Prompts { xs, ys, xq, yq, w })
}

/// Every registered task: name, about, resolved default parameters, dims, learners and shifts (JSON).
#[pyfunction]
fn tasks_json() -> PyResult<String> {
    let mut out = Vec::new();
    for entry in icl_tasks::registry::entries() {
        let task = (entry.build)(&Params::new()).map_err(value_error)?;
        let dims = task.dims();
        out.push(serde_json::json!({
            "name": entry.name,
            "about": entry.about,
            "params": task.params(),
            "x_dim": dims.x_dim,
            "y_dim": dims.y_dim,
            "context_len": dims.context_len,
            "learners": task.learners().iter().map(|s| s.label()).collect::<Vec<_>>(),
            "shifts": task.shifts().iter().map(|s| s.kind.name()).collect::<Vec<_>>(),
        }));
    }
    serde_json::to_string(&out).map_err(value_error)
}

/// A task's resolved parameters, dims and learners (JSON), for (name, params).
#[pyfunction]
#[pyo3(signature = (name, params_json, pool=None))]
fn task_json(name: &str, params_json: &str, pool: Option<(usize, u64)>) -> PyResult<String> {
    let task = build_task(name, params_json, pool)?;
    let dims = task.dims();
    let v = serde_json::json!({
        "name": task.name(),
        "params": task.params(),
        "x_dim": dims.x_dim,
        "y_dim": dims.y_dim,
        "context_len": dims.context_len,
        "zero_error": task.zero_error(),
        "learners": task.learners(),
    });
    serde_json::to_string(&v).map_err(value_error)
}

/// `batch` prompts of `n` pairs from stream `stream` of `seed`: `task.sample_n(rng, batch, n)`
/// with the RNG every command seeds that way (`icl-lab prompts` writes the same).
#[pyfunction]
#[pyo3(signature = (name, params_json, batch, n, seed, stream, pool=None))]
#[allow(clippy::too_many_arguments)]
fn sample<'py>(
    py: Python<'py>,
    name: &str,
    params_json: &str,
    batch: usize,
    n: usize,
    seed: u64,
    stream: u64,
    pool: Option<(usize, u64)>,
) -> PyResult<Bound<'py, PyDict>> {
    let task = build_task(name, params_json, pool)?;
    check_sizes(batch, n, task.dims().x_dim + task.dims().y_dim)?;
    let prompts = py.detach(|| task.sample_n(&mut stream_rng(seed, stream), batch, n));
    prompts_to_dict(py, prompts)
}

/// Refuses prompt sizes that would not fit in memory (one line, before allocating).
fn check_sizes(batch: usize, n: usize, width: usize) -> PyResult<()> {
    if n > icl_tasks::MAX_CONTEXT {
        return Err(value_error(format!("n: at most {} in-context examples (got {n})", icl_tasks::MAX_CONTEXT)));
    }
    let elements = (batch as u128) * (n as u128 + 1) * width as u128;
    if batch == 0 || elements > 1 << 31 {
        return Err(value_error(format!(
            "batch: {batch} prompts × {n} pairs × width {width} is {} (need 1 ≤ batch and at most 2^31 numbers)",
            if batch == 0 { "empty".to_string() } else { format!("{elements} numbers") }
        )));
    }
    Ok(())
}

/// Every learner family: (name, about).
#[pyfunction]
fn learner_families() -> Vec<(String, String)> {
    icl_probes::learner::families().iter().map(|f| (f.name().to_string(), f.about().to_string())).collect()
}

/// The specs a `--learners` string names (JSON list of {name, params}); `default` stands for
/// `defaults_json` (a JSON list of specs).
#[pyfunction]
fn resolve_learners(text: &str, defaults_json: &str) -> PyResult<String> {
    let defaults: Vec<icl_tasks::LearnerSpec> = serde_json::from_str(defaults_json).map_err(value_error)?;
    let specs = icl_probes::specs::resolve_learners(text, &defaults).map_err(value_error)?;
    serde_json::to_string(&specs).map_err(value_error)
}

fn one_spec(spec: &str) -> PyResult<icl_tasks::LearnerSpec> {
    let mut specs = icl_probes::specs::parse_learners(spec).map_err(value_error)?;
    match specs.len() {
        1 => Ok(specs.remove(0)),
        k => Err(value_error(format!("learner: one spec such as \"gd(steps=2)\" (got {k} in `{spec}`)"))),
    }
}

/// A reference learner, built from its spec and tuned (where the spec leaves η, λ, γ or P open)
/// on tuning prompts.
#[pyclass(name = "Learner", module = "icl_lab._core", frozen)]
struct PyLearner {
    inner: Box<dyn Learner>,
    spec: icl_tasks::LearnerSpec,
}

#[pymethods]
impl PyLearner {
    #[new]
    #[pyo3(signature = (spec, tuning=None))]
    fn new(py: Python<'_>, spec: &str, tuning: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let spec = one_spec(spec)?;
        let tuning = tuning.map(prompts_from_dict).transpose()?;
        let inner = py.detach(|| fit(&spec, tuning.as_ref())).map_err(value_error)?;
        Ok(Self { inner, spec })
    }

    /// The family name, e.g. `gd`.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// The spec as given (its label is the candidate's identity in a tournament).
    #[getter]
    fn spec(&self) -> String {
        self.spec.label()
    }

    /// `name(k=v, …)` with the hyperparameters used, fixed or tuned.
    #[getter]
    fn label(&self) -> String {
        self.inner.label()
    }

    /// The hyperparameters used, fixed or tuned, as JSON.
    fn params_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.params()).map_err(value_error)
    }

    /// ŷ at each query (B, o) and ∂ŷ_last/∂x_q (B, d) or None.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        prompts: &Bound<'py, PyDict>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
        let p = prompts_from_dict(prompts)?;
        let Prediction { preds, sens } = py.detach(|| self.inner.predict(&p)).map_err(value_error)?;
        Ok((preds.into_pyarray(py).into_any(), sens.map(|s| s.into_pyarray(py).into_any())))
    }

    /// The per-prompt weights W (B, o, d) of a learner with a linear hypothesis, else None.
    fn weights<'py>(&self, py: Python<'py>, prompts: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let p = prompts_from_dict(prompts)?;
        match py.detach(|| self.inner.weights(&p)) {
            None => Ok(None),
            Some(w) => Ok(Some(w.map_err(value_error)?.into_pyarray(py).into_any())),
        }
    }

    /// The smoother s (B, n) with ŷ = s(X, x_q)ᵀ y, for scalar labels; a ValueError if the
    /// learner is not linear in y on these prompts (then it has no smoother).
    fn smoother<'py>(&self, py: Python<'py>, prompts: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let p = prompts_from_dict(prompts)?;
        use icl_probes::interventions::{linear_smoother, Smoother};
        match py.detach(|| linear_smoother(self.inner.as_ref(), &p)).map_err(value_error)? {
            Smoother::Linear(s) => Ok(s.into_pyarray(py).into_any()),
            Smoother::Zero => Ok(Array2::<f64>::zeros((p.batch(), p.context_len())).into_pyarray(py).into_any()),
            Smoother::NotLinear => Err(value_error(format!(
                "{}: not linear in y on these prompts, so it has no smoother",
                self.inner.label()
            ))),
        }
    }

    fn __repr__(&self) -> String {
        format!("Learner({})", self.inner.label())
    }
}

/// SPD / d: mean over prompts of ‖ŷ_a − ŷ_b‖² / d.
#[pyfunction]
fn spd(a: PyReadonlyArray2<f64>, b: PyReadonlyArray2<f64>, d: usize) -> PyResult<f64> {
    same_shape(a.shape(), b.shape())?;
    if d == 0 {
        return Err(value_error("d: the input dimension, at least 1"));
    }
    Ok(icl_probes::tournament::spd(&a.as_array().to_owned(), &b.as_array().to_owned(), d))
}

/// ILWD / d: mean over prompts of ‖ŵ_a − ŵ_b‖²_F / d, for weights (B, o, d).
#[pyfunction]
fn ilwd(a: PyReadonlyArray3<f64>, b: PyReadonlyArray3<f64>) -> PyResult<f64> {
    same_shape(a.shape(), b.shape())?;
    Ok(icl_probes::tournament::ilwd(&a.as_array().to_owned(), &b.as_array().to_owned()))
}

/// von Oswald et al.'s alignment of two learners from predictions (B, o) and sensitivities
/// (B, d): model cos, preds diff, and the rest of [`icl_probes::metrics::Alignment`] (JSON).
#[pyfunction]
fn alignment(
    preds_a: PyReadonlyArray2<f64>,
    sens_a: PyReadonlyArray2<f64>,
    preds_b: PyReadonlyArray2<f64>,
    sens_b: PyReadonlyArray2<f64>,
) -> PyResult<String> {
    same_shape(preds_a.shape(), preds_b.shape())?;
    same_shape(sens_a.shape(), sens_b.shape())?;
    let al = icl_probes::metrics::alignment(
        &preds_a.as_array().to_owned(),
        &sens_a.as_array().to_owned(),
        &preds_b.as_array().to_owned(),
        &sens_b.as_array().to_owned(),
    );
    serde_json::to_string(&al).map_err(value_error)
}

fn same_shape(a: &[usize], b: &[usize]) -> PyResult<()> {
    if a == b {
        Ok(())
    } else {
        Err(value_error(format!("the two arrays differ in shape: {a:?} and {b:?}")))
    }
}

/// The tournament's ranking (JSON list) of measurement rows (JSON list, reports/*.json's schema)
/// by `metric`.
#[pyfunction]
fn rank(rows_json: &str, metric: &str) -> PyResult<String> {
    let rows: Vec<icl_probes::measure::Measurement> = serde_json::from_str(rows_json).map_err(value_error)?;
    if !icl_probes::tournament::METRICS.contains(&metric) {
        return Err(value_error(format!(
            "metric: one of {} (got `{metric}`)",
            icl_probes::tournament::METRICS.join(", ")
        )));
    }
    serde_json::to_string(&icl_probes::tournament::rank(&rows, metric)).map_err(value_error)
}

/// A Python callable `model_fn(xs, ys, xq, layer) -> ŷ (B, o)` read out after one layer, as a
/// learner. ∂ŷ/∂x_q and ∂ŷ/∂y are central finite differences of step `step` (exact up to
/// rounding for a model linear in those inputs, as linear self-attention is in x_q).
struct PyModel {
    f: Py<PyAny>,
    layer: usize,
    sensitivity: bool,
    step: f64,
    /// The first exception the callable raised, re-raised as itself once the loop has stopped.
    error: Mutex<Option<PyErr>>,
}

impl PyModel {
    fn call(&self, xs: &Array3<f64>, ys: &Array3<f64>, xq: &Array2<f64>) -> Result<Array2<f64>, ProbeError> {
        let (b, o) = (xs.shape()[0], ys.shape()[2]);
        let result = Python::attach(|py| -> PyResult<Array2<f64>> {
            let out = self.f.call1(
                py,
                (xs.clone().into_pyarray(py), ys.clone().into_pyarray(py), xq.clone().into_pyarray(py), self.layer),
            )?;
            let arr: Bound<'_, PyArrayDyn<f64>> = out.bind(py).extract()?;
            let a: ArrayD<f64> = arr.readonly().as_array().to_owned();
            if a.len() != b * o {
                return Err(value_error(format!(
                    "model_fn returned shape {:?}; expected (B, o) = ({b}, {o}) or (B,)",
                    a.shape()
                )));
            }
            a.into_shape_with_order((b, o)).map_err(value_error)
        });
        result.map_err(|e| {
            let message = format!("model_fn at layer {}: {e}", self.layer);
            let mut slot = self.error.lock().expect("error slot");
            if slot.is_none() {
                *slot = Some(e);
            }
            ProbeError::Unsupported(message)
        })
    }
}

impl Learner for PyModel {
    fn name(&self) -> &str {
        "model"
    }

    fn params(&self) -> Params {
        Params::new()
    }

    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        let preds = self.call(&p.xs, &p.ys, &p.xq)?;
        if !self.sensitivity {
            return Ok(Prediction { preds, sens: None });
        }
        let (b, d, o) = (p.batch(), p.x_dim(), p.y_dim());
        let mut sens = Array2::zeros((b, d));
        for j in 0..d {
            let (mut plus, mut minus) = (p.xq.clone(), p.xq.clone());
            plus.column_mut(j).mapv_inplace(|v| v + self.step);
            minus.column_mut(j).mapv_inplace(|v| v - self.step);
            let (fp, fm) = (self.call(&p.xs, &p.ys, &plus)?, self.call(&p.xs, &p.ys, &minus)?);
            sens.column_mut(j).assign(&((&fp.column(o - 1) - &fm.column(o - 1)) / (2.0 * self.step)));
        }
        Ok(Prediction { preds, sens: Some(sens) })
    }
}

struct PyContestant(PyModel);

impl Contestant for PyContestant {
    fn readout(&mut self, layer: usize, sensitivity: bool) -> &dyn Learner {
        self.0.layer = layer;
        self.0.sensitivity = sensitivity;
        &self.0
    }

    fn influence(&mut self, p: &Prompts, layer: usize) -> Result<Option<Array2<f64>>, ProbeError> {
        self.0.layer = layer;
        let (b, n) = (p.batch(), p.context_len());
        let mut s = Array2::zeros((b, n));
        for j in 0..n {
            let (mut plus, mut minus) = (p.ys.clone(), p.ys.clone());
            plus.slice_mut(s![.., j, 0]).mapv_inplace(|v| v + self.0.step);
            minus.slice_mut(s![.., j, 0]).mapv_inplace(|v| v - self.0.step);
            let (fp, fm) = (self.0.call(&p.xs, &plus, &p.xq)?, self.0.call(&p.xs, &minus, &p.xq)?);
            s.column_mut(j).assign(&((&fp.index_axis(Axis(1), 0) - &fm.index_axis(Axis(1), 0)) / (2.0 * self.0.step)));
        }
        Ok(Some(s))
    }
}

/// The tournament over Python models: `models` is a list of (name, seed, callable, layers); the
/// candidates are `learners` (a `--learners` string; `default` = the task's). Returns the JSON of
/// {options, learners, skipped, ranking, measurements}, the fields of `icl-lab tournament`'s report.
#[pyfunction]
#[pyo3(signature = (models, task, params_json, learners, n_values, prompts, tuning_prompts, queries, orders, seed, step, pool=None))]
#[allow(clippy::too_many_arguments)]
fn tournament(
    py: Python<'_>,
    models: Vec<(String, u64, Py<PyAny>, usize)>,
    task: &str,
    params_json: &str,
    learners: &str,
    n_values: Option<Vec<usize>>,
    prompts: usize,
    tuning_prompts: usize,
    queries: Option<usize>,
    orders: usize,
    seed: u64,
    step: f64,
    pool: Option<(usize, u64)>,
) -> PyResult<String> {
    let task = build_task(task, params_json, pool)?;
    if models.is_empty() {
        return Err(value_error("models: give at least one model"));
    }
    if !(step.is_finite() && step > 0.0) {
        return Err(value_error(format!("fd_step: a finite number > 0 (got {step})")));
    }
    if let Some((name, _, _, layers)) = models.iter().find(|m| m.3 == 0) {
        return Err(value_error(format!("layers: {name} needs at least 1 layer (got {layers})")));
    }
    let defaults = task.learners();
    let specs = icl_probes::specs::resolve_learners(learners, &defaults).map_err(value_error)?;
    let mut opts = TournamentOptions::for_task(task.as_ref());
    if let Some(n) = n_values {
        opts.n_values = n;
    }
    if let Some(q) = queries {
        opts.queries = q;
    }
    opts.prompts = prompts;
    opts.tuning_prompts = tuning_prompts;
    opts.orders = orders;
    opts.seed = seed;
    let n_max = opts.n_values.iter().copied().max().unwrap_or(0);
    let dims = task.dims();
    check_sizes(prompts.max(tuning_prompts).max(1) * opts.queries.max(1), n_max, dims.x_dim + dims.y_dim)?;
    let max_layers = models.iter().map(|m| m.3).max().unwrap_or(1);
    let mut contestants: Vec<(String, u64, usize, PyContestant)> = models
        .into_iter()
        .map(|(name, seed, f, layers)| {
            let model = PyModel { f, layer: 1, sensitivity: true, step, error: Mutex::new(None) };
            (name, seed, layers, PyContestant(model))
        })
        .collect();
    let outcome = py.detach(|| -> Result<_, ProbeError> {
        let (mut field, mut rows) = Field::fit(task.as_ref(), &specs, &opts, max_layers, &|_| {})?;
        for (name, seed, layers, c) in contestants.iter_mut() {
            rows.extend(field.measure(c, name, *seed, *layers, &|_| {})?);
        }
        Ok((field.skipped, rows))
    });
    let (skipped, rows) = match outcome {
        Ok(v) => v,
        Err(e) => {
            // A Python exception from the model comes back as itself.
            for (_, _, _, c) in &contestants {
                if let Some(err) = c.0.error.lock().expect("error slot").take() {
                    return Err(err);
                }
            }
            return Err(value_error(e));
        }
    };
    let ranking: Vec<_> =
        icl_probes::tournament::METRICS.iter().flat_map(|m| icl_probes::tournament::rank(&rows, m)).collect();
    let report = serde_json::json!({
        "task": task.config(),
        "options": opts,
        "learners": specs,
        "skipped": skipped,
        "ranking": ranking,
        "measurements": rows,
    });
    serde_json::to_string(&report).map_err(value_error)
}

/// Garg et al.'s learning curve (normalised error against n) of reference learners (`learners`, a
/// `--learners` string) and Python models (name, seed, callable, layer: read out after that
/// layer), as `icl-lab curve` measures it: the same prompts, tuning and bootstrap intervals.
/// Returns the rows as JSON.
#[pyfunction]
#[pyo3(signature = (task, params_json, learners, models, n_values, prompts, tuning_prompts, seed, shift=None, pool=None))]
#[allow(clippy::too_many_arguments)]
fn curve(
    py: Python<'_>,
    task: &str,
    params_json: &str,
    learners: &str,
    models: Vec<(String, u64, Py<PyAny>, usize)>,
    n_values: Vec<usize>,
    prompts: usize,
    tuning_prompts: usize,
    seed: u64,
    shift: Option<String>,
    pool: Option<(usize, u64)>,
) -> PyResult<String> {
    use icl_probes::curve::{learning_curve, CurveMember, CurveOptions};
    let task = build_task(task, params_json, pool)?;
    let specs = icl_probes::specs::resolve_learners(learners, &task.learners()).map_err(value_error)?;
    let shift = match shift {
        None => None,
        Some(text) => {
            let shift = icl_tasks::Shift::parse(&text).map_err(value_error)?;
            task.shifted(shift).map_err(|e| value_error(format!("--shift: {e}")))?;
            Some(shift)
        }
    };
    if n_values.is_empty() {
        return Err(value_error("n: give at least one number of in-context examples"));
    }
    let n_max = n_values.iter().copied().max().unwrap_or(0);
    let dims = task.dims();
    check_sizes(prompts.max(tuning_prompts), n_max, dims.x_dim + dims.y_dim)?;
    if prompts == 0 || tuning_prompts == 0 {
        return Err(value_error("prompts and tuning_prompts: at least 1 each"));
    }
    let opts = CurveOptions { prompts, tuning_prompts, n_values, seed, shift, ..Default::default() };
    let fns: Vec<(String, u64, PyModel)> = models
        .into_iter()
        .map(|(name, seed, f, layer)| {
            (name, seed, PyModel { f, layer, sensitivity: false, step: 1e-3, error: Mutex::new(None) })
        })
        .collect();
    let outcome = py.detach(|| {
        let mut members: Vec<CurveMember> = specs.iter().cloned().map(CurveMember::Reference).collect();
        for (name, seed, m) in &fns {
            members.push(CurveMember::Fixed { learner: m, model: Some(name.clone()), seed: Some(*seed), layer: None });
        }
        learning_curve(task.as_ref(), &members, &opts, &|_| {})
    });
    match outcome {
        Ok(rows) => serde_json::to_string(&rows).map_err(value_error),
        Err(e) => {
            for (_, _, m) in &fns {
                if let Some(err) = m.error.lock().expect("error slot").take() {
                    return Err(err);
                }
            }
            Err(value_error(e))
        }
    }
}

/// The bytes and SHA-256 of a file.
fn file_entry(path: &Path) -> Result<(u64, String), String> {
    use sha2::Digest;
    let bytes =
        std::fs::read(path).map_err(|_| format!("{} is missing", path.file_name().unwrap_or_default().display()))?;
    let hex: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    Ok((bytes.len() as u64, hex))
}

/// Reads a run directory after checking it as `icl-lab` does before every use: metrics.json says
/// complete and manifest.json lists config.toml, metrics.json and weights.safetensors (and any
/// other file it lists) with the sizes and SHA-256 they have on disk. Returns (config.toml text,
/// metrics.json text, manifest.json text, weights by name as float64 arrays).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn read_run<'py>(
    py: Python<'py>,
    dir: &str,
) -> PyResult<(String, String, String, BTreeMap<String, Bound<'py, PyAny>>)> {
    let dir = Path::new(dir);
    let fail = |why: String| value_error(format!("{}: {why}", dir.display()));
    if !dir.join("config.toml").is_file() {
        return Err(fail(if dir.is_dir() {
            "missing config.toml (not a run directory)".into()
        } else {
            "no such run directory".into()
        }));
    }
    let config = std::fs::read_to_string(dir.join("config.toml")).map_err(|e| fail(e.to_string()))?;
    let metrics = std::fs::read_to_string(dir.join("metrics.json"))
        .map_err(|_| fail("metrics.json missing (the run was never trained here)".into()))?;
    let status: serde_json::Value = serde_json::from_str(&metrics).map_err(|e| fail(format!("metrics.json: {e}")))?;
    match status.get("status").and_then(|s| s.as_str()) {
        Some("complete") => {}
        Some(other) => return Err(fail(format!("not complete (metrics.json says `{other}`)"))),
        None => return Err(fail("metrics.json is not a run's metrics (no status)".into())),
    }
    let manifest = std::fs::read_to_string(dir.join("manifest.json"))
        .map_err(|_| fail("no manifest.json (not complete)".into()))?;
    let m: serde_json::Value =
        serde_json::from_str(&manifest).map_err(|e| fail(format!("manifest.json is not a run's manifest ({e})")))?;
    let files =
        m.get("files").and_then(|f| f.as_object()).ok_or_else(|| fail("manifest.json lists no files".into()))?;
    for name in ["config.toml", "metrics.json", "weights.safetensors"] {
        if !files.contains_key(name) {
            return Err(fail(format!("the manifest lacks {name}")));
        }
    }
    for (name, want) in files {
        let (bytes, sha) = file_entry(&dir.join(name)).map_err(&fail)?;
        let (want_bytes, want_sha) =
            (want.get("bytes").and_then(|v| v.as_u64()), want.get("sha256").and_then(|v| v.as_str()));
        if want_bytes != Some(bytes) || want_sha != Some(sha.as_str()) {
            return Err(fail(format!(
                "{name} differs from manifest.json: changed after training ({bytes} bytes, SHA-256 {}…)",
                &sha[..12]
            )));
        }
    }
    let raw = std::fs::read(dir.join("weights.safetensors")).map_err(|e| fail(e.to_string()))?;
    let tensors = safetensors::SafeTensors::deserialize(&raw).map_err(|e| fail(format!("weights.safetensors: {e}")))?;
    let mut weights = BTreeMap::new();
    for (name, view) in tensors.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            safetensors::Dtype::F32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect()
            }
            safetensors::Dtype::F64 => {
                data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
            }
            other => return Err(fail(format!("weights.safetensors: {name} is {other:?}, not f32 or f64"))),
        };
        let a = ArrayD::from_shape_vec(shape, values).map_err(|e| fail(format!("{name}: {e}")))?;
        weights.insert(name, a.into_pyarray(py).into_any());
    }
    Ok((config, metrics, manifest, weights))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    icl_probes::learners::serial_blas();
    m.add_class::<PyLearner>()?;
    m.add_function(wrap_pyfunction!(tasks_json, m)?)?;
    m.add_function(wrap_pyfunction!(task_json, m)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(learner_families, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_learners, m)?)?;
    m.add_function(wrap_pyfunction!(spd, m)?)?;
    m.add_function(wrap_pyfunction!(ilwd, m)?)?;
    m.add_function(wrap_pyfunction!(alignment, m)?)?;
    m.add_function(wrap_pyfunction!(rank, m)?)?;
    m.add_function(wrap_pyfunction!(tournament, m)?)?;
    m.add_function(wrap_pyfunction!(curve, m)?)?;
    m.add_function(wrap_pyfunction!(read_run, m)?)?;
    m.add("__doc__", "icl-lab's Rust core (tasks, learners, metrics, tournament); use the `icl_lab` package.")?;
    Ok(())
}
