//! Reference learners, hard-coded constructions, comparison metrics, learning curves and
//! measurement rows for icl-lab, in f64 `ndarray`.
//!
//! Every in-context learner implements [`learner::Learner`]; the reference algorithms live in
//! [`learners`] and are built by name from a task's learner specs ([`learner::fit`]).
//!
//! Nothing here knows libtorch. A construction is a set of named weight matrices
//! ([`NamedWeights`]) that the model crate loads into its transformer through the parameter
//! names it publishes (`layers.0.attn.q`, …); trained weights come back the same way. So probes
//! cannot tell trained from constructed weights, and the model never knows about GD.
//!
//! Conventions follow von Oswald et al. 2023 ("Transformers learn in-context by gradient
//! descent", arXiv 2212.07677) and its official code: row-vector weights (`x @ W`), tokens
//! e = (x, y), prediction = −(y-entries of the query token), losses ½·MSE.

pub mod activation_probe;
pub mod construct;
pub mod contest;
pub mod curve;
pub mod gd;
pub mod gdpp;
pub mod gdpp_fit;
pub mod interventions;
pub mod learner;
pub mod learners;
pub mod measure;
pub mod metrics;
pub mod ridge;
pub mod specs;
pub mod spectrum;
pub mod tournament;
pub mod tune;

use std::collections::BTreeMap;

use ndarray::Array2;

/// Weight matrices by parameter name, e.g. `layers.0.attn.q` → (D, H·K). Row-vector convention.
pub type NamedWeights = BTreeMap<String, Array2<f64>>;

/// A probe that cannot run on what it was given.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("missing weight `{0}`")]
    MissingWeight(String),
    #[error("{0}")]
    Unsupported(String),
    /// A learner spec that no prompts could make work (an unknown key, k = 0, λ ≤ 0): a command
    /// stops on it before measuring anything, where [`ProbeError::Unsupported`] only leaves the
    /// learner out where it does not apply.
    #[error("{0}")]
    InvalidSpec(String),
    #[error("linear algebra failed: {0}")]
    Linalg(#[from] ndarray_linalg::error::LinalgError),
}
