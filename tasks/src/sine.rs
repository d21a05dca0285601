//! Sine waves (von Oswald et al. 2023, Fig. 4; official `create_reg_data_sin`): one scalar input
//! x ~ U(−r/2, r/2) with r = `input_range` (10 in the code), y = a·sin(x + φ) with the amplitude
//! a ~ U(amp_min, amp_max) and the phase φ ~ U(0, phase_max) drawn per prompt. The code's ranges
//! are a ∈ [0.1, 0.5] and φ ∈ [0, π] (the paper's text says a ∈ [0.1, 5]). The code draws a and φ
//! from the same key, so its φ is a function of a — one parameter, not two; `tied_phase = true`
//! reproduces that (φ = phase_max·(a − amp_min)/(amp_max − amp_min)), the default draws them
//! independently as the paper describes. Not linear in x: the task of learning a feature map.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use serde::{Deserialize, Serialize};

use crate::params::{parse, to_params};
use crate::registry::TaskEntry;
use crate::{
    check_count, check_real, check_sample_size, prompts_from, Dims, LearnerSpec, Params, Prompts, Shift, ShiftSweep,
    Task, TaskError, TaskRng,
};

pub const ENTRY: TaskEntry = TaskEntry {
    name: "sine",
    about: "sine waves a·sin(x + φ), amplitude and phase per prompt, x ~ U(−5, 5) (von Oswald et al. 2023, Fig. 4)",
    build: SineTask::build,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SineParams {
    pub context_len: usize,
    pub input_range: f64,
    pub amp_min: f64,
    pub amp_max: f64,
    pub phase_max: f64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tied_phase: bool,
    pub noise_std: f64,
}

impl Default for SineParams {
    fn default() -> Self {
        Self {
            context_len: 10,
            input_range: 10.0,
            amp_min: 0.1,
            amp_max: 0.5,
            phase_max: std::f64::consts::PI,
            tied_phase: false,
            noise_std: 0.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SineTask {
    pub params: SineParams,
}

impl SineTask {
    pub fn new(params: SineParams) -> Result<Self, TaskError> {
        check_count("context_len", params.context_len, 1..=crate::MAX_CONTEXT)?;
        check_real("input_range", params.input_range, 0.0, true)?;
        check_real("amp_min", params.amp_min, 0.0, false)?;
        check_real("amp_max", params.amp_max, params.amp_min, true)?;
        check_real("phase_max", params.phase_max, 0.0, false)?;
        check_real("noise_std", params.noise_std, 0.0, false)?;
        Ok(Self { params })
    }

    pub fn build(params: &Params) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self::new(parse(ENTRY.name, params)?)?))
    }

    /// The phase of a prompt with amplitude `amp` whose independent phase draw is `u` ∈ [0, 1).
    fn phase(&self, amp: f64, u: f64) -> f64 {
        let p = &self.params;
        if p.tied_phase {
            p.phase_max * (amp - p.amp_min) / (p.amp_max - p.amp_min)
        } else {
            p.phase_max * u
        }
    }
}

impl Task for SineTask {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn params(&self) -> Params {
        to_params(&self.params)
    }

    fn dims(&self) -> Dims {
        Dims { x_dim: 1, y_dim: 1, context_len: self.params.context_len }
    }

    /// E[y_q²] = E[a² sin²(x + φ)] = ½E[a²] − ½·(sin r / r)·E[a² cos 2φ] for x ~ U(−r/2, r/2),
    /// the last expectation over (a, φ) by a 4,096-point midpoint rule.
    fn zero_error(&self) -> f64 {
        let p = &self.params;
        let r = p.input_range;
        let k = 4096;
        let (mut a2, mut a2cos) = (0.0, 0.0);
        for i in 0..k {
            let amp = p.amp_min + (p.amp_max - p.amp_min) * (i as f64 + 0.5) / k as f64;
            // Independent phases average cos 2φ over [0, phase_max]; tied ones take φ(a).
            let mean_cos = if p.tied_phase {
                (2.0 * self.phase(amp, 0.0)).cos()
            } else if p.phase_max == 0.0 {
                1.0
            } else {
                (2.0 * p.phase_max).sin() / (2.0 * p.phase_max)
            };
            a2 += amp * amp / k as f64;
            a2cos += amp * amp * mean_cos / k as f64;
        }
        0.5 * a2 - 0.5 * (r.sin() / r) * a2cos
    }

    fn learners(&self) -> Vec<LearnerSpec> {
        vec![LearnerSpec::new("zero"), LearnerSpec::new("averaging"), LearnerSpec::new("knn").with("k", 3)]
    }

    fn shifts(&self) -> Vec<ShiftSweep> {
        Vec::new()
    }

    fn shifted(&self, shift: Shift) -> Result<Box<dyn Task>, TaskError> {
        Err(TaskError::unsupported_shift(self, shift.kind))
    }

    fn sample_n(&self, rng: &mut TaskRng, batch: usize, n: usize) -> Prompts {
        let p = &self.params;
        check_sample_size(batch, n, 2);
        let half = p.input_range / 2.0;
        let inputs = Uniform::new(-half, half).expect("input_range is checked > 0");
        let mut xs = vec![0.0; batch * n];
        let mut ys = vec![0.0; batch * n];
        let mut xq = vec![0.0; batch];
        let mut yq = vec![0.0; batch];
        for b in 0..batch {
            // Per prompt, in this order: amplitude, phase draw, the n context inputs, the query.
            let amp = rng.random_range(p.amp_min..p.amp_max);
            let phase = self.phase(amp, rng.random::<f64>());
            for i in 0..n {
                let x = inputs.sample(rng);
                xs[b * n + i] = x;
                ys[b * n + i] = amp * (x + phase).sin();
            }
            xq[b] = inputs.sample(rng);
            yq[b] = amp * (xq[b] + phase).sin();
        }
        if p.noise_std > 0.0 {
            ys.iter_mut().for_each(|y| *y += p.noise_std * rng.sample::<f64, _>(StandardNormal));
        }
        prompts_from((batch, n, 1, 1), xs, ys, xq, yq, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, TaskConfig};
    use rand::SeedableRng;

    /// (a, φ) of y = a·sin(x + φ) = (a cos φ)·sin x + (a sin φ)·cos x, by least squares on two points
    /// of the prompt, and the largest misfit over its other points and query.
    fn amplitude_phase(p: &Prompts, b: usize) -> (f64, f64, f64) {
        let (x0, x1) = (p.xs[[b, 0, 0]], p.xs[[b, 1, 0]]);
        let (y0, y1) = (p.ys[[b, 0, 0]], p.ys[[b, 1, 0]]);
        // [sin x0, cos x0; sin x1, cos x1] (c, s) = (y0, y1)
        let det = x0.sin() * x1.cos() - x0.cos() * x1.sin();
        let c = (y0 * x1.cos() - x0.cos() * y1) / det;
        let s = (x0.sin() * y1 - y0 * x1.sin()) / det;
        let (amp, phase) = (c.hypot(s), s.atan2(c));
        let f = |x: f64| amp * (x + phase).sin();
        let mut misfit = (f(p.xq[[b, 0]]) - p.yq[[b, 0]]).abs();
        for i in 0..p.context_len() {
            misfit = misfit.max((f(p.xs[[b, i, 0]]) - p.ys[[b, i, 0]]).abs());
        }
        (amp, phase.rem_euclid(2.0 * std::f64::consts::PI), misfit)
    }

    #[test]
    fn every_prompt_is_one_sine_wave_in_range() {
        for tied in [false, true] {
            let task = build(&TaskConfig::new("sine").with("tied_phase", tied)).unwrap();
            let p = task.sample(&mut TaskRng::seed_from_u64(3), 300);
            assert_eq!((p.x_dim(), p.y_dim(), p.context_len()), (1, 1, 10));
            assert!(p.xs.iter().chain(p.xq.iter()).all(|x| x.abs() <= 5.0));
            for b in 0..p.batch() {
                let (amp, phase, misfit) = amplitude_phase(&p, b);
                assert!(misfit < 1e-8, "prompt {b}: misfit {misfit}");
                assert!((0.1 - 1e-9..0.5 + 1e-9).contains(&amp), "amplitude {amp}");
                assert!(phase <= std::f64::consts::PI + 1e-9, "phase {phase}");
                if tied {
                    let expected = std::f64::consts::PI * (amp - 0.1) / 0.4;
                    assert!((phase - expected).abs() < 1e-6, "tied phase {phase} vs {expected}");
                }
            }
        }
    }

    #[test]
    fn the_zero_error_is_the_mean_squared_query_label() {
        for tied in [false, true] {
            let task = build(&TaskConfig::new("sine").with("tied_phase", tied)).unwrap();
            let p = task.sample(&mut TaskRng::seed_from_u64(4), 200_000);
            let empirical = p.yq.iter().map(|y| y * y).sum::<f64>() / p.batch() as f64;
            let rel = (empirical - task.zero_error()).abs() / task.zero_error();
            assert!(rel < 0.01, "tied {tied}: {empirical} vs {}", task.zero_error());
        }
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let err = build(&TaskConfig::new("sine").with("amp_max", 0.05)).err().unwrap();
        assert!(err.to_string().contains("task.amp_max"), "{err}");
    }
}
