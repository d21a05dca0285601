//! One interface for every in-context learner: from each prompt's context (xs, ys), predict at its
//! query, and give ∂ŷ/∂x_q where that is defined. The reference algorithms of `learners/`
//! implement it, and so does a trained model read out after a layer (in the `icl-lab` crate).
//!
//! A [`LearnerFamily`] turns a [`LearnerSpec`] (a name and fixed settings, as a task lists them)
//! into a [`Learner`], tuning the hyperparameters the spec leaves open (η, λ, γ, P) on *tuning*
//! prompts: prompts from the training distribution at the number of in-context examples the
//! learner will be evaluated at, never the evaluation prompts themselves. Families are found by
//! name in a registry; crates that add learners (the tch-fitted network, trained models) register
//! theirs at run time.

use std::sync::RwLock;

use ndarray::{s, Array2, Array3};
use serde::de::DeserializeOwned;

use icl_tasks::{LearnerSpec, Params, Prompts};

use crate::ProbeError;

/// A learner's answers on a batch of prompts.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// ŷ at each query, (B, o).
    pub preds: Array2<f64>,
    /// ∂ŷ_last/∂x_q, (B, d): for a linear learner its weight row; `None` where the prediction is
    /// not differentiable in x_q (trees, nearest neighbours).
    pub sens: Option<Array2<f64>>,
}

pub trait Learner: Send + Sync {
    /// The family name, e.g. `gd`.
    fn name(&self) -> &str;
    /// The hyperparameters used, fixed or tuned, e.g. `{"steps": 1, "eta": 0.48}`.
    fn params(&self) -> Params;
    /// Predicts each prompt's query from its own context.
    fn predict(&self, prompts: &Prompts) -> Result<Prediction, ProbeError>;
    /// For learners with a linear hypothesis: each prompt's weights W (B, o, d), ŷ = W x_q.
    fn weights(&self, _prompts: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        None
    }
    /// `name(k=v, …)` with the scalar hyperparameters, for legends and tables.
    fn label(&self) -> String {
        let scalars: Params = self.params().into_iter().filter(|(_, v)| !v.is_array() && !v.is_object()).collect();
        LearnerSpec { name: self.name().to_string(), params: scalars }.label()
    }
}

/// ŷ = W x_q and ∂ŷ_last/∂x_q = the last row of W, for per-prompt weights (B, o, d).
pub fn linear_prediction(w: &Array3<f64>, xq: &Array2<f64>) -> Prediction {
    let preds = crate::gd::predict(w, xq);
    let o = w.shape()[1];
    Prediction { preds, sens: Some(w.slice(s![.., o - 1, ..]).to_owned()) }
}

/// Builds learners of one kind from specs.
pub trait LearnerFamily: Send + Sync {
    fn name(&self) -> &'static str;
    /// One line: what the learner does and where it comes from.
    fn about(&self) -> &'static str;
    /// Whether `spec` leaves hyperparameters to tune (then [`LearnerFamily::fit`] needs tuning prompts).
    fn needs_tuning(&self, _spec: &LearnerSpec) -> bool {
        false
    }
    /// The learner `spec` describes; open hyperparameters are tuned on `tuning`.
    fn fit(&self, spec: &LearnerSpec, tuning: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError>;
}

static EXTRA: RwLock<Vec<&'static dyn LearnerFamily>> = RwLock::new(Vec::new());

/// Registers a learner family defined outside this crate. A name already taken is an error.
pub fn register_family(family: &'static dyn LearnerFamily) -> Result<(), ProbeError> {
    let mut extra = EXTRA.write().expect("learner registry lock");
    if families_in(&extra).iter().any(|f| f.name() == family.name()) {
        return Err(ProbeError::Unsupported(format!("learner `{}` is already registered", family.name())));
    }
    extra.push(family);
    Ok(())
}

fn families_in(extra: &[&'static dyn LearnerFamily]) -> Vec<&'static dyn LearnerFamily> {
    crate::learners::BUILT_IN.iter().copied().chain(extra.iter().copied()).collect()
}

/// Every learner family, built-in first.
pub fn families() -> Vec<&'static dyn LearnerFamily> {
    families_in(&EXTRA.read().expect("learner registry lock"))
}

pub fn family(name: &str) -> Result<&'static dyn LearnerFamily, ProbeError> {
    let all = families();
    all.iter().copied().find(|f| f.name() == name).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|f| f.name()).collect();
        ProbeError::Unsupported(format!("unknown learner `{name}` (known: {})", names.join(", ")))
    })
}

/// Builds the learner `spec` names, tuning what it leaves open on `tuning`.
pub fn fit(spec: &LearnerSpec, tuning: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
    let f = family(&spec.name)?;
    if f.needs_tuning(spec) && tuning.is_none() {
        return Err(ProbeError::Unsupported(format!("learner `{}` needs tuning prompts", spec.label())));
    }
    f.fit(spec, tuning)
}

/// The tuning prompts of a learner that tunes something (`fit` checks that they are given).
pub fn tuning_for<'a>(name: &str, tuning: Option<&'a Prompts>) -> Result<&'a Prompts, ProbeError> {
    tuning.ok_or_else(|| ProbeError::Unsupported(format!("learner `{name}` needs tuning prompts")))
}

/// Parses a spec's settings into a family's typed parameters; the error names the learner.
pub fn parse_spec<T: DeserializeOwned>(spec: &LearnerSpec) -> Result<T, ProbeError> {
    serde_json::from_value(serde_json::Value::Object(spec.params.clone()))
        .map_err(|e| ProbeError::InvalidSpec(format!("learner `{}`: {e}", spec.name)))
}

/// Serialises typed parameters back to a table.
pub fn to_params<T: serde::Serialize>(typed: &T) -> Params {
    match serde_json::to_value(typed) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => Params::new(),
    }
}
