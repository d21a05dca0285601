//! Learners from maintained crates, fitted per prompt on its context: Lasso by coordinate descent
//! (`linfa-elasticnet`, penalty α·‖w‖₁ on (1/2n)‖y − Xw‖², no intercept — sklearn's `Lasso` as Garg
//! et al. call it), a greedy regression tree and gradient-boosted trees (`gbdt`, squared error; it
//! computes in f32). Garg et al.'s boosting baseline is XGBoost's `XGBRegressor()` defaults
//! (100 trees, learning rate 0.3, depth 6); `gbdt` has no leaf-weight regularisation, so ours is the
//! same algorithm without XGBoost's λ = 1.

use gbdt::config::{Config, Loss};
use gbdt::decision_tree::{Data, DataVec, DecisionTree, TrainingCache};
use gbdt::gradient_boost::GBDT;
use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use ndarray::{s, Array1, Array3, Axis};
use serde::{Deserialize, Serialize};

use icl_tasks::{LearnerSpec, Params, Prompts};

use super::{per_prompt_predictions, stack_weights};
use crate::learner::{linear_prediction, parse_spec, to_params, Learner, LearnerFamily, Prediction};
use crate::ProbeError;

fn one_output(name: &str, p: &Prompts) -> Result<(), ProbeError> {
    if p.y_dim() == 1 {
        Ok(())
    } else {
        Err(ProbeError::Unsupported(format!("learner `{name}` predicts one output (prompts have {})", p.y_dim())))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lasso {
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_alpha() -> f64 {
    0.01
}

pub struct LassoFamily;

impl LearnerFamily for LassoFamily {
    fn name(&self) -> &'static str {
        "lasso"
    }
    fn about(&self) -> &'static str {
        "ℓ₁-regularised least squares, (1/2n)‖y − Xw‖² + α‖w‖₁ (linfa-elasticnet; Garg et al. α = 0.01)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let l: Lasso = parse_spec(spec)?;
        if !(l.alpha.is_finite() && l.alpha > 0.0) {
            return Err(ProbeError::InvalidSpec(format!("learner `lasso`: alpha must be > 0 (got {})", l.alpha)));
        }
        Ok(Box::new(l))
    }
}

impl Learner for Lasso {
    fn name(&self) -> &str {
        "lasso"
    }
    fn params(&self) -> Params {
        to_params(self)
    }
    fn weights(&self, p: &Prompts) -> Option<Result<Array3<f64>, ProbeError>> {
        if let Err(e) = one_output("lasso", p) {
            return Some(Err(e));
        }
        let (n, d) = (p.context_len(), p.x_dim());
        let ws = (0..p.batch())
            .map(|b| {
                if n == 0 {
                    return Ok(Array1::zeros(d));
                }
                let data = Dataset::new(p.xs.index_axis(Axis(0), b).to_owned(), p.ys.slice(s![b, .., 0]).to_owned());
                let model = ElasticNet::<f64>::lasso()
                    .penalty(self.alpha)
                    .with_intercept(false)
                    .max_iterations(100_000)
                    .tolerance(1e-6)
                    .fit(&data)
                    .map_err(|e| ProbeError::Unsupported(format!("lasso: {e}")))?;
                Ok(model.hyperplane().to_owned())
            })
            .collect::<Result<Vec<_>, ProbeError>>();
        Some(ws.map(|ws| stack_weights(ws.into_iter().map(|w| w.insert_axis(Axis(0))).collect(), 1, d)))
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        Ok(linear_prediction(&self.weights(p).expect("linear")?, &p.xq))
    }
}

/// The context of prompt b as gbdt training data (f32 features, unit weights).
fn training_data(p: &Prompts, b: usize) -> DataVec {
    (0..p.context_len())
        .map(|i| {
            let x: Vec<f32> = p.xs.slice(s![b, i, ..]).iter().map(|&v| v as f32).collect();
            Data::new_training_data(x, 1.0, p.ys[[b, i, 0]] as f32, None)
        })
        .collect()
}

fn query_data(p: &Prompts, b: usize) -> DataVec {
    vec![Data::new_test_data(p.xq.row(b).iter().map(|&v| v as f32).collect(), None)]
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// None: grown until leaves are pure (sklearn's `max_depth=None`).
    #[serde(default = "depth_four")]
    pub max_depth: Option<u32>,
}

fn depth_four() -> Option<u32> {
    Some(4)
}

pub struct TreeFamily;

impl LearnerFamily for TreeFamily {
    fn name(&self) -> &'static str {
        "tree"
    }
    fn about(&self) -> &'static str {
        "a greedy regression tree (gbdt, squared error), depth 4 or unlimited as Garg et al."
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        Ok(Box::new(parse_spec::<Tree>(spec)?))
    }
}

impl Learner for Tree {
    fn name(&self) -> &str {
        "tree"
    }
    fn params(&self) -> Params {
        to_params(self)
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        one_output("tree", p)?;
        let preds = per_prompt_predictions(p.batch(), 1, |b| {
            if p.context_len() == 0 {
                return Ok(vec![0.0]);
            }
            let data = training_data(p, b);
            let mut tree = DecisionTree::new();
            tree.set_feature_size(p.x_dim());
            // gbdt counts the root as layer 0, like sklearn's max_depth; 64 levels never bind on
            // a few hundred points.
            tree.set_max_depth(self.max_depth.unwrap_or(64));
            tree.set_min_leaf_size(1);
            tree.set_loss(Loss::SquaredError);
            let mut cache = TrainingCache::get_cache(p.x_dim(), &data, 2);
            tree.fit(&data, &mut cache);
            Ok(vec![tree.predict(&query_data(p, b))[0] as f64])
        })?;
        Ok(Prediction { preds, sens: None })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Boosting {
    pub trees: usize,
    pub learning_rate: f64,
    pub max_depth: u32,
}

impl Default for Boosting {
    /// XGBoost's `XGBRegressor()` defaults, Garg et al.'s baseline.
    fn default() -> Self {
        Self { trees: 100, learning_rate: 0.3, max_depth: 6 }
    }
}

pub struct BoostingFamily;

impl LearnerFamily for BoostingFamily {
    fn name(&self) -> &'static str {
        "boosting"
    }
    fn about(&self) -> &'static str {
        "gradient-boosted regression trees (gbdt; XGBoost's default 100 trees, rate 0.3, depth 6)"
    }
    fn fit(&self, spec: &LearnerSpec, _: Option<&Prompts>) -> Result<Box<dyn Learner>, ProbeError> {
        let b: Boosting = parse_spec(spec)?;
        if b.trees == 0 || b.trees > 10_000 || !(b.learning_rate > 0.0 && b.learning_rate.is_finite()) {
            return Err(ProbeError::InvalidSpec("learner `boosting`: trees in 1..=10000, learning_rate > 0".into()));
        }
        Ok(Box::new(b))
    }
}

impl Learner for Boosting {
    fn name(&self) -> &str {
        "boosting"
    }
    fn params(&self) -> Params {
        to_params(self)
    }
    fn predict(&self, p: &Prompts) -> Result<Prediction, ProbeError> {
        one_output("boosting", p)?;
        let preds = per_prompt_predictions(p.batch(), 1, |b| {
            if p.context_len() == 0 {
                return Ok(vec![0.0]);
            }
            let mut cfg = Config::new();
            cfg.set_feature_size(p.x_dim());
            cfg.set_max_depth(self.max_depth);
            cfg.set_iterations(self.trees);
            cfg.set_shrinkage(self.learning_rate as f32);
            cfg.set_loss("SquaredError");
            cfg.set_min_leaf_size(1);
            let mut model = GBDT::new(&cfg);
            let mut data = training_data(p, b);
            model.fit(&mut data);
            Ok(vec![model.predict(&query_data(p, b))[0] as f64])
        })?;
        Ok(Prediction { preds, sens: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    fn one_prompt(xs: Vec<[f64; 2]>, ys: Vec<f64>, xq: [f64; 2]) -> Prompts {
        let n = xs.len();
        Prompts {
            xs: Array3::from_shape_vec((1, n, 2), xs.concat()).unwrap(),
            ys: Array3::from_shape_vec((1, n, 1), ys).unwrap(),
            xq: Array2::from_shape_vec((1, 2), xq.to_vec()).unwrap(),
            yq: array![[0.0]],
            w: None,
        }
    }

    #[test]
    fn lasso_soft_thresholds_an_orthogonal_design() {
        // With XᵀX/n = I the Lasso solution is Xᵀy/n soft-thresholded by α. Here n = 2, X = √2·I,
        // so XᵀX/n = I and Xᵀy/n = (1, 0.05): α = 0.1 gives w = (0.9, 0).
        let r = 2f64.sqrt();
        let p = one_prompt(vec![[r, 0.0], [0.0, r]], vec![r, 0.05 * r], [1.0, 1.0]);
        let out = Lasso { alpha: 0.1 }.predict(&p).unwrap();
        let w = out.sens.unwrap();
        assert!((w[[0, 0]] - 0.9).abs() < 1e-5 && w[[0, 1]].abs() < 1e-9, "{w}");
    }

    #[test]
    fn a_depth_one_tree_splits_where_the_labels_change() {
        let p = one_prompt(
            vec![[-2.0, 0.3], [-1.0, -0.4], [1.0, 0.2], [2.0, -0.1]],
            vec![5.0, 5.0, -3.0, -3.0],
            [1.5, 0.0],
        );
        let out = Tree { max_depth: Some(1) }.predict(&p).unwrap();
        assert!((out.preds[[0, 0]] + 3.0).abs() < 1e-6, "{}", out.preds);
        let left = one_prompt(
            vec![[-2.0, 0.3], [-1.0, -0.4], [1.0, 0.2], [2.0, -0.1]],
            vec![5.0, 5.0, -3.0, -3.0],
            [-1.5, 0.0],
        );
        assert!((Tree { max_depth: None }.predict(&left).unwrap().preds[[0, 0]] - 5.0).abs() < 1e-6);
    }

    #[test]
    fn boosting_fits_a_step_function() {
        let xs: Vec<[f64; 2]> = (0..20).map(|i| [i as f64 - 9.5, 0.0]).collect();
        let ys: Vec<f64> = (0..20).map(|i| if i < 10 { 1.0 } else { 4.0 }).collect();
        let out = Boosting::default().predict(&one_prompt(xs, ys, [3.0, 0.0])).unwrap();
        assert!((out.preds[[0, 0]] - 4.0).abs() < 1e-3, "{}", out.preds);
    }
}
