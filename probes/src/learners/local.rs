//! Learners without hyperparameters to tune: the zero predictor, averaging (Garg et al.'s
//! `AveragingModel`, one GD step with η = 1) and k nearest neighbours (uniform weights; with fewer
//! than k pairs, all of them, as Garg et al.'s `NNModel`).

use ndarray::{s, Array2, Array3};
use serde::{Deserialize, Serialize};

use icl_tasks::{LearnerSpec, Params, Prompts};

use super::per_prompt_predictions;
use crate::gd::LeastSquaresStats;
use crate::learner::{linear_prediction, parse_spec, to_params, Learner, LearnerFamily, Prediction};
use crate::ProbeError;

pub struct ZeroFamily;
pub struct Zero;

impl LearnerFamily for ZeroFamily {
    fn name(&self) -> &'static str {
        "zero"
    }
    fn about(&self) -> &'static str {
        "the zero predictor, ŷ = 0 (normalised error 1 by construction)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        parse_spec::<Empty>(spec)?;
        Ok(Box::new(Zero))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

impl Learner for Zero {
    fn name(&self) -> &str {
        "zero"
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(Prediction { preds: Array2::zeros(p.yq.raw_dim()), sens: Some(Array2::zeros(p.xq.raw_dim())) })
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        Some(Ok(Array3::zeros((p.batch(), p.y_dim(), p.x_dim()))))
    }
}

pub struct AveragingFamily;
pub struct Averaging;

impl LearnerFamily for AveragingFamily {
    fn name(&self) -> &'static str {
        "averaging"
    }
    fn about(&self) -> &'static str {
        "ŷ = x_qᵀ (1/n) Σ yᵢxᵢ (Garg et al.'s averaging baseline)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        parse_spec::<Empty>(spec)?;
        Ok(Box::new(Averaging))
    }
}

impl Learner for Averaging {
    fn name(&self) -> &str {
        "averaging"
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        Some(Ok(LeastSquaresStats::new(p).yx)) // (1/n) Σ yᵢxᵢᵀ
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&LeastSquaresStats::new(p).yx, &p.xq))
    }
}

pub struct KnnFamily;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knn {
    #[serde(default = "three")]
    pub k: usize,
}

fn three() -> usize {
    3
}

impl LearnerFamily for KnnFamily {
    fn name(&self) -> &'static str {
        "knn"
    }
    fn about(&self) -> &'static str {
        "mean label of the k nearest context inputs (Euclidean, uniform weights)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let knn: Knn = parse_spec(spec)?;
        if knn.k == 0 {
            return Err(ProbeError::InvalidSpec("learner `knn`: k must be at least 1".into()));
        }
        Ok(Box::new(knn))
    }
}

impl Learner for Knn {
    fn name(&self) -> &str {
        "knn"
    }
    fn params(&self) -> Params {
        to_params(self)
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        let (n, o) = (p.context_len(), p.y_dim());
        let preds = per_prompt_predictions(p.batch(), o, |b| {
            if n == 0 {
                return Ok(vec![0.0; o]);
            }
            let xq = p.xq.row(b);
            let mut dist: Vec<(f64, usize)> = (0..n)
                .map(|i| {
                    let diff = &p.xs.slice(s![b, i, ..]) - &xq;
                    (diff.dot(&diff), i)
                })
                .collect();
            dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let k = self.k.min(n);
            let mut sum = vec![0.0; o];
            for &(_, i) in &dist[..k] {
                sum.iter_mut().enumerate().for_each(|(j, m)| *m += p.ys[[b, i, j]]);
            }
            Ok(sum.into_iter().map(|s| s / k as f64).collect())
        })?;
        Ok(Prediction { preds, sens: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn prompts(xs: Array3<f64>, ys: Array3<f64>, xq: Array2<f64>) -> Prompts {
        let yq = Array2::zeros((xq.nrows(), ys.shape()[2]));
        Prompts { xs, ys, xq, yq, w: None }
    }

    #[test]
    fn knn_averages_the_nearest_labels() {
        // 1-D inputs 0, 1, 2, 10 with labels 1, 2, 3, 100; query 1.2: nearest are 1, 2, 0.
        let p = prompts(array![[[0.0], [1.0], [2.0], [10.0]]], array![[[1.0], [2.0], [3.0], [100.0]]], array![[1.2]]);
        let knn = Knn { k: 3 };
        assert_eq!(knn.predict(&p).unwrap().preds, array![[2.0]]);
        assert_eq!(Knn { k: 1 }.predict(&p).unwrap().preds, array![[2.0]]);
        // with fewer pairs than k, all of them; with none, 0
        assert_eq!(knn.predict(&p.prefix(2)).unwrap().preds, array![[1.5]]);
        assert_eq!(knn.predict(&p.prefix(0)).unwrap().preds, array![[0.0]]);
    }

    #[test]
    fn averaging_is_the_mean_of_label_weighted_inputs() {
        // ŵ = ((1·(1,0)) + (3·(0,2)))/2 = (0.5, 3); ŷ = ŵ·(2, 1) = 4
        let p = prompts(array![[[1.0, 0.0], [0.0, 2.0]]], array![[[1.0], [3.0]]], array![[2.0, 1.0]]);
        let out = Averaging.predict(&p).unwrap();
        assert!((out.preds[[0, 0]] - 4.0).abs() < 1e-12);
        assert_eq!(out.sens.unwrap(), array![[0.5, 3.0]]);
        assert_eq!(Averaging.predict(&p.prefix(0)).unwrap().preds, array![[0.0]]);
    }
}
