//! Model families. One file per family; each publishes named parameters (through its
//! `VarStore`) and records named activations into an [`ActivationCache`](crate::cache::ActivationCache).

pub mod transformer;

pub use transformer::Transformer;
