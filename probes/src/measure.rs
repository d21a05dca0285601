//! Measurements as rows: every evaluation in the lab produces [`Measurement`]s in long format
//! (task, learner and its parameters, model, seed, layer, number of in-context examples, shift,
//! metric, value with its interval). Reports and figures are queries over these rows.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};

use icl_tasks::{LearnerSpec, Params, Shift};

/// One number the lab measured, with everything needed to find it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Task name.
    pub task: String,
    /// Learner name (`gd`, `least_squares`, …; `model` for a trained model).
    pub learner: String,
    /// The learner's hyperparameters as used, e.g. `{"steps": 1, "eta": 0.48}`.
    pub params: Params,
    /// The spec the learner was fitted from, as given (e.g. `knn` with `k = 8`; tuned
    /// hyperparameters are in `params`), on the rows of learners measured from specs (curves,
    /// tournaments). It is the candidate's identity: two specs of one family differ here while
    /// `learner` is the same, and tables, rankings and legends key on it
    /// ([`Measurement::candidate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<LearnerSpec>,
    /// The trained model's run name; null for reference learners.
    pub model: Option<String>,
    /// The trained model's seed; null for reference learners.
    pub seed: Option<u64>,
    /// The layer a model was read out after (1-based); null for the model's output and for learners.
    pub layer: Option<usize>,
    /// Number of in-context examples.
    pub n_context: Option<usize>,
    /// The distribution shift evaluated under; null for the training distribution.
    pub shift: Option<Shift>,
    /// The intervention protocol the row comes from (`P1` knockout, `P2:y` / `P2:all` iterate
    /// interchange of those channels, `P3` activation patching, `P4` influence profile;
    /// [`crate::interventions`]); null for rows that intervene on nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The token position a row is about (P3's patched position); null for whole-prompt rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// `normalised_error`, `loss` (½·MSE), `model_cos`, `preds_diff`, …
    pub metric: String,
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    /// The 90% interval (bootstrap over prompts, or over seeds), where there is one.
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

impl Measurement {
    /// What the row measures, as rankings and tables key it: the label of the spec it was
    /// fitted from ([`LearnerSpec::label`], every setting) where it has one, else the learner's
    /// family name (`model` for a model's own rows).
    pub fn candidate(&self) -> String {
        self.spec.as_ref().map_or_else(|| self.learner.clone(), LearnerSpec::label)
    }

    /// The row with the identity of the spec it was fitted from.
    pub fn with_spec(mut self, spec: &LearnerSpec) -> Self {
        self.spec = Some(spec.clone());
        self
    }
}

/// serde_json writes NaN as null; read it back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Measurement {
    /// A row for a reference learner with no model, layer or shift.
    pub fn new(task: &str, learner: &str, params: Params, metric: &str, value: f64) -> Self {
        Self {
            task: task.into(),
            learner: learner.into(),
            params,
            spec: None,
            model: None,
            seed: None,
            layer: None,
            n_context: None,
            shift: None,
            protocol: None,
            position: None,
            metric: metric.into(),
            value,
            lo: None,
            hi: None,
        }
    }
}

/// Mean of `values` with a `level` (e.g. 0.9) bootstrap interval of the mean: `resamples` resamples
/// with replacement from a fixed seed, then the (1 − level)/2 and (1 + level)/2 quantiles (Garg et
/// al.'s `eval.py`: 1,000 resamples, 90%). Returns (mean, lo, hi).
pub fn bootstrap_mean(values: &[f64], level: f64, resamples: usize, seed: u64) -> (f64, f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| means[((p * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (mean, q((1.0 - level) / 2.0), q((1.0 + level) / 2.0))
}

/// A simultaneous `level` band for several means computed on the same prompts (one sample per
/// statistic, each indexed by prompt; e.g. one learner's errors at every n): the "max-t" bootstrap.
/// Prompts are resampled jointly across statistics; for each resample, the largest standardised
/// deviation of any statistic from its mean is recorded; the band is mean ± c·se with c the
/// `level` quantile of that maximum. A curve lies inside the band at *every* point with
/// probability `level`, which a pointwise interval does not promise. Returns (mean, lo, hi) each.
pub fn simultaneous_band(samples: &[Vec<f64>], level: f64, resamples: usize, seed: u64) -> Vec<(f64, f64, f64)> {
    let k = samples.len();
    let n = samples.first().map_or(0, Vec::len);
    assert!(samples.iter().all(|s| s.len() == n), "every statistic on the same prompts");
    if n == 0 || k == 0 {
        return vec![(f64::NAN, f64::NAN, f64::NAN); k];
    }
    let means: Vec<f64> = samples.iter().map(|s| s.iter().sum::<f64>() / n as f64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let replicates: Vec<Vec<f64>> = (0..resamples)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            samples.iter().map(|s| idx.iter().map(|&i| s[i]).sum::<f64>() / n as f64).collect()
        })
        .collect();
    let se: Vec<f64> = (0..k)
        .map(|j| {
            let var = replicates.iter().map(|r| (r[j] - means[j]).powi(2)).sum::<f64>() / resamples as f64;
            var.sqrt()
        })
        .collect();
    let mut max_t: Vec<f64> = replicates
        .iter()
        .map(|r| (0..k).filter(|&j| se[j] > 0.0).map(|j| (r[j] - means[j]).abs() / se[j]).fold(0.0, f64::max))
        .collect();
    max_t.sort_by(f64::total_cmp);
    let c = max_t[((level * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (0..k).map(|j| (means[j], means[j] - c * se[j], means[j] + c * se[j])).collect()
}

/// Mean with the min–max over a handful of values (seeds).
pub fn mean_min_max(values: &[f64]) -> (f64, f64, f64) {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, lo, hi)
}

/// The rows matching a predicate, e.g. one learner's curve.
pub fn select<'a>(
    rows: &'a [Measurement],
    keep: impl Fn(&Measurement) -> bool + 'a,
) -> impl Iterator<Item = &'a Measurement> {
    rows.iter().filter(move |m| keep(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_shrinks_with_n() {
        let small: Vec<f64> = (0..100).map(|i| (i % 10) as f64).collect();
        let large: Vec<f64> = (0..10_000).map(|i| (i % 10) as f64).collect();
        let (m, lo, hi) = bootstrap_mean(&small, 0.9, 1000, 0);
        assert!((m - 4.5).abs() < 1e-12 && lo < m && m < hi);
        // standard error 2.87/√100 = 0.287: the 90% interval is about ±1.645·0.287
        assert!(((hi - lo) / 2.0 - 0.47).abs() < 0.08, "{lo} {hi}");
        let (_, lo2, hi2) = bootstrap_mean(&large, 0.9, 1000, 0);
        assert!(hi2 - lo2 < (hi - lo) / 5.0);
        assert_eq!(bootstrap_mean(&small, 0.9, 1000, 0), (m, lo, hi), "seeded");
    }

    #[test]
    fn a_simultaneous_band_is_wider_than_pointwise_intervals() {
        // 20 independent statistics on 400 prompts: the joint band must be wider than each
        // pointwise 90% interval, and cover a constant curve at its true mean.
        let samples: Vec<Vec<f64>> =
            (0..20).map(|j| (0..400).map(|i| (((i * 7 + j * 13) % 11) as f64) - 5.0).collect()).collect();
        let band = simultaneous_band(&samples, 0.9, 2000, 1);
        for (j, s) in samples.iter().enumerate() {
            let (m, lo, hi) = bootstrap_mean(s, 0.9, 2000, 1);
            assert!((band[j].0 - m).abs() < 1e-12);
            assert!(band[j].2 - band[j].1 > 1.2 * (hi - lo), "{j}: {band:?} vs [{lo}, {hi}]");
        }
    }

    #[test]
    fn rows_round_trip_with_nan() {
        let mut row = Measurement::new("linear", "gd", Params::new(), "loss", f64::NAN);
        row.n_context = Some(3);
        let json = serde_json::to_string(&row).unwrap();
        assert!(json.contains("\"value\":null") && json.contains("\"layer\":null"), "{json}");
        let back: Measurement = serde_json::from_str(&json).unwrap();
        assert!(back.value.is_nan() && back.n_context == Some(3));
    }
}
