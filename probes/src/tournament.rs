//! The hypothesis tournament: which in-context learner does a model (read out after some layer)
//! behave like? Every contestant is compared with every candidate learner on the same prompts by
//!
//! - **SPD** (Akyürek et al. 2023 §4.1): E‖ŷ_a − ŷ_b‖², divided by d as their plots are;
//! - **ILWD** (same): E‖ŵ_a − ŵ_b‖²_F / d, where ŵ is a learner's own weights if it has a linear
//!   hypothesis and otherwise the least-squares fit (with intercept) of its predictions at K fresh
//!   queries for the same context (their `plot_empirical_distribution`);
//! - **model cos** and **preds diff** (von Oswald et al. 2023, [`crate::metrics::alignment`]),
//!   where both sides have ∂ŷ/∂x_q;
//!
//! and ranked per contestant by the mean of a metric over the numbers of in-context examples; the
//! margin to the runner-up comes with its range over seeds. [`permutation_spread`] measures order
//! sensitivity (Shen et al. 2024): full-batch GD and every learner here is invariant to the order
//! of the context, a model need not be.

use std::collections::BTreeMap;

use ndarray::{s, Array1, Array2, Array3, Axis};
use ndarray_linalg::LeastSquaresSvd;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use icl_tasks::{Prompts, TaskRng};

use crate::learner::{Learner, Prediction};
use crate::measure::Measurement;
use crate::ProbeError;

/// The pairwise metrics of the tournament, in the order they are reported: [`compare`]'s four,
/// and `influence_cos`, the cosine of the model's ∂ŷ/∂y with a linear-in-y learner's smoother
/// ([`crate::interventions::smoother`]; computed where both exist).
pub const METRICS: [&str; 5] = ["spd", "ilwd", "model_cos", "preds_diff", "influence_cos"];

/// What is known of one learner on one set of prompts: its answers and its (implicit) weights.
pub struct Answers {
    pub prediction: Prediction,
    /// ŵ per prompt, (B, o, d).
    pub weights: Array3<f64>,
}

impl Answers {
    /// Predicts `prompts` and reads the learner's weights: its own where it has a linear
    /// hypothesis, else the least-squares fit of its predictions at `queries` (K, d) for each
    /// context ([`implicit_weights`]).
    pub fn of(learner: &dyn Learner, prompts: &Prompts, queries: &Array2<f64>) -> Result<Self, ProbeError> {
        let prediction = learner.predict(prompts)?;
        let weights = match learner.weights(prompts) {
            Some(w) => w?,
            None => implicit_weights(learner, prompts, queries)?,
        };
        Ok(Self { prediction, weights })
    }
}

/// ŵ of each prompt's context: the slope of the least-squares fit ŷ ≈ ŵ x + b over the learner's
/// predictions at the K `queries` (K ≥ d + 1), (B, o, d).
pub fn implicit_weights(
    learner: &dyn Learner,
    prompts: &Prompts,
    queries: &Array2<f64>,
) -> Result<Array3<f64>, ProbeError> {
    let (b, k, d, o) = (prompts.batch(), queries.nrows(), prompts.x_dim(), prompts.y_dim());
    if k < d + 1 {
        return Err(ProbeError::Unsupported(format!(
            "implicit weights need at least d + 1 = {} queries, got {k}",
            d + 1
        )));
    }
    let asked = prompts.with_queries(queries);
    let preds = learner.predict(&asked)?.preds; // (B·K, o)
                                                // The design matrix [x_q, 1] is the same for every context: (K, d + 1).
    let mut design = Array2::ones((k, d + 1));
    design.slice_mut(s![.., ..d]).assign(queries);
    let targets = preds.into_shape_with_order((b, k, o)).expect("(B·K, o) → (B, K, o)");
    let mut w = Array3::zeros((b, o, d));
    for (i, t) in targets.outer_iter().enumerate() {
        let fit = design.least_squares(&t.to_owned())?; // (d + 1, o)
        w.slice_mut(s![i, .., ..]).assign(&fit.solution.slice(s![..d, ..]).t());
    }
    Ok(w)
}

/// SPD / d: mean over prompts of ‖ŷ_a − ŷ_b‖² / d.
pub fn spd(a: &Array2<f64>, b: &Array2<f64>, d: usize) -> f64 {
    let diff = a - b;
    diff.iter().map(|v| v * v).sum::<f64>() / (a.nrows() * d) as f64
}

/// ILWD / d: mean over prompts of ‖ŵ_a − ŵ_b‖²_F / d.
pub fn ilwd(a: &Array3<f64>, b: &Array3<f64>) -> f64 {
    let (batch, _, d) = a.dim();
    let diff = a - b;
    diff.iter().map(|v| v * v).sum::<f64>() / (batch * d) as f64
}

/// Every pairwise metric of `a` against `b` (NaN where one side has no sensitivity).
pub fn compare(a: &Answers, b: &Answers) -> [(&'static str, f64); 4] {
    let d = a.weights.shape()[2];
    let (pa, pb) = (&a.prediction.preds, &b.prediction.preds);
    let (cos, diff) = match (&a.prediction.sens, &b.prediction.sens) {
        (Some(sa), Some(sb)) => {
            let al = crate::metrics::alignment(pa, sa, pb, sb);
            (al.model_cos, al.preds_diff)
        }
        _ => (f64::NAN, (pa - pb).map_axis(Axis(1), |r| r.dot(&r).sqrt()).mean().unwrap_or(f64::NAN)),
    };
    [("spd", spd(pa, pb, d)), ("ilwd", ilwd(&a.weights, &b.weights)), ("model_cos", cos), ("preds_diff", diff)]
}

/// The same prompts with each context in its own random order (queries unchanged).
pub fn permuted(prompts: &Prompts, rng: &mut TaskRng) -> Prompts {
    let mut out = prompts.clone();
    let n = prompts.context_len();
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..prompts.batch() {
        order.shuffle(rng);
        for (to, &from) in order.iter().enumerate() {
            out.xs.slice_mut(s![i, to, ..]).assign(&prompts.xs.slice(s![i, from, ..]));
            out.ys.slice_mut(s![i, to, ..]).assign(&prompts.ys.slice(s![i, from, ..]));
        }
    }
    out
}

/// Order sensitivity: the standard deviation of the last output over `orders` random orders of
/// each context, averaged over prompts (0 for any learner that sees the context as a set).
pub fn permutation_spread(
    learner: &dyn Learner,
    prompts: &Prompts,
    orders: usize,
    rng: &mut TaskRng,
) -> Result<f64, ProbeError> {
    let o = prompts.y_dim();
    let mut answers: Vec<Array1<f64>> = Vec::with_capacity(orders);
    for _ in 0..orders {
        answers.push(learner.predict(&permuted(prompts, rng))?.preds.column(o - 1).to_owned());
    }
    let stacked = ndarray::stack(Axis(0), &answers.iter().map(|a| a.view()).collect::<Vec<_>>())
        .map_err(|e| ProbeError::Unsupported(e.to_string()))?; // (orders, B)
    Ok(stacked.std_axis(Axis(0), 0.0).mean().unwrap_or(f64::NAN))
}

/// The ranking of the candidate learners for one contestant (model, layer) by one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    pub model: String,
    pub layer: Option<usize>,
    pub metric: String,
    /// Candidates, best first, with the metric's mean over n and seeds.
    pub order: Vec<RankedLearner>,
    /// The best candidate's margin to the runner-up (runner-up − best for distances, best −
    /// runner-up for model cos), mean over seeds with its min–max.
    pub margin: f64,
    pub margin_min: f64,
    pub margin_max: f64,
    /// Seeds in which the best candidate (over all seeds) is also best (or tied with the best).
    pub seeds_agreeing: usize,
    pub seeds: usize,
    /// Candidates whose mean equals the best's ([`same_score`]): on these prompts they make the
    /// same predictions (one GD++ step is one GD step), so the best did not beat them.
    #[serde(default)]
    pub tied_with_best: Vec<String>,
    /// The margin to the first candidate that is not tied with the best: the margin that says
    /// how far the best stands from a different algorithm. `None` if every candidate ties.
    #[serde(default)]
    pub beyond_tie: Option<Margin>,
}

/// A margin of the best candidate over another, per seed: mean with its min–max.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    pub against: String,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// Whether two candidates' mean scores are the same up to rounding: 1e-9 relative, or 1e-12
/// absolute for scores near zero (two learners that agree to float precision).
pub fn same_score(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankedLearner {
    /// The candidate: its spec's label ([`Measurement::candidate`]).
    pub learner: String,
    pub value: f64,
}

/// Whether larger is better for `metric`.
pub fn higher_is_better(metric: &str) -> bool {
    metric == "model_cos" || metric == "influence_cos"
}

/// Ranks the candidates of every (model, layer) in `rows` by `metric`: the metric is averaged
/// over n per seed, then over seeds. A candidate is its spec ([`Measurement::candidate`]): two
/// specs of one family are ranked apart. Candidates with a NaN mean (no sensitivity) are left out.
pub fn rank(rows: &[Measurement], metric: &str) -> Vec<Ranking> {
    // (model, layer) → learner → seed → values over n
    type PerSeed = BTreeMap<u64, Vec<f64>>;
    let mut table: BTreeMap<(String, Option<usize>), BTreeMap<String, PerSeed>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.metric == metric) {
        let Some(model) = &r.model else { continue };
        table
            .entry((model.clone(), r.layer))
            .or_default()
            .entry(r.candidate())
            .or_default()
            .entry(r.seed.unwrap_or(0))
            .or_default()
            .push(r.value);
    }
    let sign = if higher_is_better(metric) { -1.0 } else { 1.0 };
    let mut out = Vec::new();
    for ((model, layer), learners) in table {
        // learner → seed → mean over n
        let per_seed: BTreeMap<&String, BTreeMap<u64, f64>> = learners
            .iter()
            .map(|(l, seeds)| (l, seeds.iter().map(|(s, v)| (*s, v.iter().sum::<f64>() / v.len() as f64)).collect()))
            .collect();
        let mut order: Vec<RankedLearner> = per_seed
            .iter()
            .map(|(l, s)| RankedLearner { learner: (*l).clone(), value: s.values().sum::<f64>() / s.len() as f64 })
            .filter(|r| r.value.is_finite())
            .collect();
        order.sort_by(|a, b| (sign * a.value).total_cmp(&(sign * b.value)));
        if order.len() < 2 {
            continue;
        }
        let best = &per_seed[&order[0].learner];
        let margin_over = |against: &str| -> Option<Margin> {
            let other = &per_seed[&against.to_string()];
            let m: Vec<f64> = best.iter().filter_map(|(s, v)| other.get(s).map(|w| sign * (w - v))).collect();
            if m.is_empty() {
                return None;
            }
            let (min, max) = m.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            Some(Margin { against: against.into(), mean: m.iter().sum::<f64>() / m.len() as f64, min, max })
        };
        let tied_with_best: Vec<String> =
            order[1..].iter().take_while(|c| same_score(c.value, order[0].value)).map(|c| c.learner.clone()).collect();
        let beyond_tie = order.get(1 + tied_with_best.len()).and_then(|rival| margin_over(&rival.learner));
        let runner_up = margin_over(&order[1].learner);
        let seeds_agreeing = best
            .keys()
            .filter(|s| {
                per_seed.values().all(|other| {
                    other.get(s).is_none_or(|&v| sign * best[s] <= sign * v || same_score(best[s], v) || v.is_nan())
                })
            })
            .count();
        let nan = || Margin { against: String::new(), mean: f64::NAN, min: f64::NAN, max: f64::NAN };
        let runner_up = runner_up.unwrap_or_else(nan);
        out.push(Ranking {
            model,
            layer,
            metric: metric.into(),
            margin: runner_up.mean,
            margin_min: runner_up.min,
            margin_max: runner_up.max,
            seeds_agreeing,
            seeds: best.len(),
            order,
            tied_with_best,
            beyond_tie,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::fit;
    use icl_tasks::{registry, LearnerSpec, TaskConfig};
    use rand::SeedableRng;

    fn linear_prompts(batch: usize, n: usize, seed: u64) -> (Prompts, Array2<f64>) {
        let task = registry::build(&TaskConfig::new("linear")).unwrap();
        let mut rng = TaskRng::seed_from_u64(seed);
        let prompts = task.sample_n(&mut rng, batch, n);
        let queries = task.sample_n(&mut rng, 32, 0).xq;
        (prompts, queries)
    }

    #[test]
    fn implicit_weights_recover_a_linear_learners_own() {
        crate::learners::serial_blas();
        let (prompts, queries) = linear_prompts(16, 10, 3);
        let ridge = fit(&LearnerSpec::new("ridge").with("lambda", 0.1), None).unwrap();
        let own = ridge.weights(&prompts).unwrap().unwrap();
        let implicit = implicit_weights(ridge.as_ref(), &prompts, &queries).unwrap();
        let err = (&own - &implicit).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-10, "implicit weights differ from ridge's own by {err}");
    }

    #[test]
    fn a_learner_against_itself_scores_zero_distance_and_unit_cosine() {
        crate::learners::serial_blas();
        let (prompts, queries) = linear_prompts(32, 6, 4);
        let gd = fit(&LearnerSpec::new("gd").with("steps", 2).with("eta", 0.5), None).unwrap();
        let a = Answers::of(gd.as_ref(), &prompts, &queries).unwrap();
        let m: BTreeMap<_, _> = compare(&a, &a).into_iter().collect();
        assert_eq!(m["spd"], 0.0);
        assert_eq!(m["ilwd"], 0.0);
        assert!((m["model_cos"] - 1.0).abs() < 1e-7);
    }

    #[test]
    fn spd_of_least_squares_and_zero_is_the_mean_squared_prediction_over_d() {
        let (prompts, queries) = linear_prompts(64, 12, 5);
        let ls = fit(&LearnerSpec::new("least_squares"), None).unwrap();
        let zero = fit(&LearnerSpec::new("zero"), None).unwrap();
        let (a, b) = (
            Answers::of(ls.as_ref(), &prompts, &queries).unwrap(),
            Answers::of(zero.as_ref(), &prompts, &queries).unwrap(),
        );
        // With n ≥ d and no noise least squares recovers w, so ŷ = y_q and ŵ = w.
        let expect_spd = prompts.yq.iter().map(|v| v * v).sum::<f64>() / (64.0 * 10.0);
        let w = prompts.w.as_ref().unwrap();
        let expect_ilwd = w.iter().map(|v| v * v).sum::<f64>() / (64.0 * 10.0);
        let m: BTreeMap<_, _> = compare(&a, &b).into_iter().collect();
        assert!((m["spd"] - expect_spd).abs() < 1e-9, "{} vs {expect_spd}", m["spd"]);
        assert!((m["ilwd"] - expect_ilwd).abs() < 1e-9, "{} vs {expect_ilwd}", m["ilwd"]);
    }

    #[test]
    fn gd_ignores_the_order_of_its_context() {
        let (prompts, _) = linear_prompts(32, 10, 6);
        let mut rng = TaskRng::seed_from_u64(1);
        let gd = fit(&LearnerSpec::new("gd").with("steps", 3).with("eta", 0.7), None).unwrap();
        let spread = permutation_spread(gd.as_ref(), &prompts, 4, &mut rng).unwrap();
        assert!(spread < 1e-12, "GD changed with the order of its context: {spread}");
    }

    fn row(model: &str, seed: u64, learner: &str, n: usize, value: f64) -> Measurement {
        let mut m = Measurement::new("linear", learner, Default::default(), "spd", value);
        m.model = Some(model.into());
        m.seed = Some(seed);
        m.layer = Some(1);
        m.n_context = Some(n);
        m
    }

    #[test]
    fn a_tie_with_the_best_is_named_and_the_margin_beyond_it_is_to_the_first_different_learner() {
        // One GD++ step is one GD step: both score the same (to rounding) in every seed.
        let rows = vec![
            row("m", 0, "gd++", 1, 0.1),
            row("m", 0, "gd", 1, 0.1 + 1e-17),
            row("m", 0, "ridge", 1, 0.4),
            row("m", 0, "zero", 1, 0.9),
            row("m", 1, "gd++", 1, 0.2),
            row("m", 1, "gd", 1, 0.2 + 1e-17),
            row("m", 1, "ridge", 1, 0.3),
            row("m", 1, "zero", 1, 0.9),
        ];
        let r = &rank(&rows, "spd")[0];
        assert_eq!(r.tied_with_best, vec![r.order[1].learner.clone()]);
        assert!(r.margin.abs() < 1e-15, "the runner-up margin is the tie's: {}", r.margin);
        let beyond = r.beyond_tie.as_ref().unwrap();
        assert_eq!(beyond.against, "ridge");
        assert!(
            (beyond.mean - 0.2).abs() < 1e-12 && (beyond.min - 0.1).abs() < 1e-12 && (beyond.max - 0.3).abs() < 1e-12
        );
        // Without a tie the two margins are the same.
        let r = &rank(&rows[2..4].iter().chain(&rows[6..]).cloned().collect::<Vec<_>>(), "spd")[0];
        assert!(r.tied_with_best.is_empty());
        assert_eq!(r.beyond_tie.as_ref().unwrap().mean, r.margin);
    }

    #[test]
    fn two_specs_of_one_family_are_two_candidates() {
        // knn(k=1) and knn(k=8) are different learners: ranked apart, never averaged together.
        let spec = |k: u64| LearnerSpec::new("knn").with("k", k);
        let rows = vec![
            row("m", 0, "knn", 1, 0.6404).with_spec(&spec(1)),
            row("m", 0, "knn", 1, 0.6264).with_spec(&spec(8)),
            row("m", 0, "gd", 1, 0.63).with_spec(&LearnerSpec::new("gd").with("steps", 1)),
        ];
        let r = &rank(&rows, "spd")[0];
        let order: Vec<(&str, f64)> = r.order.iter().map(|c| (c.learner.as_str(), c.value)).collect();
        assert_eq!(order, [("knn(k=8)", 0.6264), ("gd(steps=1)", 0.63), ("knn(k=1)", 0.6404)]);
        assert_eq!(r.beyond_tie.as_ref().unwrap().against, "gd(steps=1)");
    }

    #[test]
    fn ranking_averages_over_n_then_seeds_and_reports_the_margin_per_seed() {
        let rows = vec![
            row("m", 0, "gd", 1, 0.1),
            row("m", 0, "gd", 2, 0.3), // gd seed 0: 0.2
            row("m", 0, "ridge", 1, 0.5),
            row("m", 0, "ridge", 2, 0.5), // ridge seed 0: 0.5
            row("m", 1, "gd", 1, 0.4),    // gd seed 1: 0.4
            row("m", 1, "ridge", 1, 0.3), // ridge seed 1: 0.3
        ];
        let r = &rank(&rows, "spd")[0];
        assert_eq!(r.order[0].learner, "gd"); // mean 0.3 against 0.4
        assert!((r.order[0].value - 0.3).abs() < 1e-12);
        assert!((r.margin - 0.1).abs() < 1e-12); // (0.3 + (−0.1)) / 2
        assert!((r.margin_min + 0.1).abs() < 1e-12 && (r.margin_max - 0.3).abs() < 1e-12);
        assert_eq!((r.seeds_agreeing, r.seeds), (1, 2));
    }
}
