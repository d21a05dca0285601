//! icl-lab: does attention implement gradient descent?
//!
//! Models in `tch` ([`models`]), training ([`train`]), evaluation against reference learners
//! ([`evaluate`], with the f64 references in the `icl-probes` crate), the activation cache probes
//! read ([`cache`]), and the figures and reports of the papers we reproduce ([`figures`]).

pub mod bench;
pub mod budget;
pub mod cache;
pub mod commands;
pub mod config;
pub mod construct;
pub mod curve;
pub mod device;
pub mod device_data;
pub mod evaluate;
pub mod export;
pub mod figures;
pub mod fused_gpt;
pub mod fused_lsa;
pub mod interventions;
pub mod io;
pub mod layer_probes;
pub mod layout;
pub mod learners;
pub mod measure;
pub mod models;
pub mod plot;
pub mod presets;
pub mod probe;
pub mod progress;
pub mod protocols;
pub mod references;
pub mod rng;
pub mod runs;
pub mod sweep;
pub mod term;
pub mod tournament;
pub mod train;
pub mod train_gpt;
pub mod training;
