//! Training batches drawn on the training device (`train.data = "device"`, opt-in): for GPU runs,
//! where sampling every batch on one CPU core and copying it over limits the step (issue #24;
//! reports/gpu-check-h200). The batch is drawn by libtorch's generator on the device from a seed
//! derived from (run seed, step), so a run is a function of its (config, seed) on a given device,
//! as with host batches; but the numbers differ from the host path's (another generator), and
//! libtorch's CPU and CUDA generators differ from each other, which is why `host` stays the
//! default and the run's manifest records `data = "device"`.
//!
//! Tasks: `gaussian_linear` with identity covariance (Garg et al.'s linear regression): x ~
//! N(0, I)·input_scale, w ~ N(0, I)·w_scale, y = wᵀx, N(0, σ²) noise on the context labels only —
//! the distribution of [`icl_tasks::gaussian_linear`], checked by the tests below (moments, the
//! exact y = wᵀx relation, the noise only where the host path puts it). Other tasks and settings
//! are refused in one line naming the setting.
//!
//! libtorch's generator is process-global (tch exposes no generator objects), so seeding and
//! drawing happen under one lock; nothing else in the lab draws from that generator.

use std::sync::Mutex;

use anyhow::Context;
use tch::{Device, Kind, Tensor};

use icl_tasks::gaussian_linear::{Covariance, GaussianLinearParams};
use icl_tasks::TaskConfig;

/// Serialises seeding and drawing from libtorch's global generator.
static GENERATOR: Mutex<()> = Mutex::new(());

/// The device-side sampler of `gaussian_linear`; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianLinearSampler {
    pub x_dim: usize,
    pub y_dim: usize,
    pub context_len: usize,
    input_scale: f64,
    w_scale: f64,
    noise_std: f64,
}

impl GaussianLinearSampler {
    /// The sampler for `task`, or a one-line reason why there is none.
    pub fn for_task(task: &TaskConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            task.name == "gaussian_linear",
            "\"device\" draws gaussian_linear batches only (this run's task is `{}`); use \"host\"",
            task.name
        );
        let p: GaussianLinearParams = icl_tasks::params::parse("gaussian_linear", &task.params)?;
        let unsupported = [
            (p.covariance != Covariance::Identity, "covariance other than identity"),
            (p.noise_levels.is_some(), "noise_levels"),
            (p.fixed_w, "fixed_w"),
            (p.context_orthant, "context_orthant"),
            (p.query_from_context, "query_from_context"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
            anyhow::bail!("\"device\" does not draw gaussian_linear with {what}; use \"host\"");
        }
        Ok(Self {
            x_dim: p.x_dim,
            y_dim: p.y_dim,
            context_len: p.context_len,
            input_scale: p.input_scale,
            w_scale: p.w_scale,
            noise_std: p.noise_std,
        })
    }

    /// The libtorch seed of training step `step` of run seed `seed` (SplitMix64 of the pair).
    fn step_seed(seed: u64, step: usize) -> i64 {
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64).wrapping_add(0xD1B5_4A32_D192_ED03);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as i64
    }

    /// One batch of a GPT-style run, drawn on `device`: tokens (B, 2P − 1, d) in the classic
    /// layout (x₁, (0…, y₁), x₂, …, x_q; [`crate::layout`]) and the targets at every x position
    /// (B, P, o), with P = `points` and the inputs' first `dims` ≤ d coordinates drawn, the rest
    /// zero (a curriculum stage, as the host path pads it).
    pub fn gpt_batch(
        &self,
        seed: u64,
        step: usize,
        batch: usize,
        dims: usize,
        points: usize,
        device: Device,
    ) -> anyhow::Result<(Tensor, Tensor)> {
        let (d, o) = (self.x_dim as i64, self.y_dim as i64);
        anyhow::ensure!((1..=self.x_dim).contains(&dims) && points >= 1, "a stage of {dims} dims, {points} points");
        anyhow::ensure!(o <= d, "the classic layout needs y_dim ≤ x_dim");
        let (b, p, k) = (batch as i64, points as i64, dims as i64);
        let opts = (Kind::Float, device);
        let (xs, w, noise) = {
            let _guard = GENERATOR.lock().ok().context("the device sampler's lock")?;
            tch::manual_seed(Self::step_seed(seed, step));
            let xs = Tensor::randn([b, p, k], opts) * self.input_scale; // (B, P, k)
            let w = Tensor::randn([b, k, o], opts) * self.w_scale; // (B, k, o)
            let noise = (self.noise_std > 0.0).then(|| Tensor::randn([b, p - 1, o], opts) * self.noise_std);
            (xs, w, noise)
        };
        let clean = xs.matmul(&w); // (B, P, o): y = wᵀx at every point, the query's noise-free
        let ys = match noise {
            Some(n) => Tensor::cat(&[clean.narrow(1, 0, p - 1) + n, clean.narrow(1, p - 1, 1)], 1),
            None => clean,
        };
        let x_tokens = xs.constant_pad_nd([0, d - k]); // (B, P, d)
        let y_tokens = ys.constant_pad_nd([d - o, 0]); // (B, P, d): y in the last o entries
        let tokens = Tensor::stack(&[x_tokens, y_tokens], 2).view([b, 2 * p, d]).narrow(1, 0, 2 * p - 1); // (B, 2P − 1, d)
        Ok((tokens, ys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(noise: f64) -> GaussianLinearSampler {
        let task = TaskConfig::new("gaussian_linear")
            .with("x_dim", 4)
            .with("context_len", 6)
            .with("noise_std", noise)
            .with("w_scale", 2.0);
        GaussianLinearSampler::for_task(&task).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    #[test]
    fn device_batches_have_the_tasks_distribution_and_layout() {
        let s = sampler(0.5);
        let (tokens, targets) = s.gpt_batch(7, 3, 4096, 4, 7, Device::Cpu).unwrap();
        assert_eq!(tokens.size(), vec![4096, 13, 4]);
        assert_eq!(targets.size(), vec![4096, 7, 1]);
        // x tokens at even positions are N(0, I): mean 0, variance 1.
        let xs = values(&tokens.slice(1, 0, 13, 2));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "x: mean {mean}, variance {var}");
        // y tokens (odd positions) carry the context targets in their last entry, zeros before it.
        let y_tok = tokens.slice(1, 1, 13, 2); // (B, 6, 4)
        assert_eq!(f64::try_from(y_tok.narrow(2, 0, 3).abs().max()).unwrap(), 0.0);
        let gap = (y_tok.narrow(2, 3, 1) - targets.narrow(1, 0, 6)).abs().max();
        assert_eq!(f64::try_from(gap).unwrap(), 0.0);
        // Targets: y = wᵀx (variance w_scale²·d = 16) plus noise of variance 0.25 on the context
        // only, so the context targets' variance is 16.25 and the query's 16.
        let var_of = |t: &Tensor| {
            let v = values(t);
            v.iter().map(|y| y * y).sum::<f64>() / v.len() as f64
        };
        let (context, query) = (var_of(&targets.narrow(1, 0, 6)), var_of(&targets.narrow(1, 6, 1)));
        assert!((context - 16.25).abs() < 0.5, "context label variance {context}");
        assert!((query - 16.0).abs() < 0.8, "query label variance {query}");
    }

    #[test]
    fn device_batches_are_a_function_of_seed_and_step_and_honour_a_curriculum_stage() {
        let s = sampler(0.0);
        let a = s.gpt_batch(1, 10, 8, 4, 7, Device::Cpu).unwrap();
        let b = s.gpt_batch(1, 10, 8, 4, 7, Device::Cpu).unwrap();
        let other_step = s.gpt_batch(1, 11, 8, 4, 7, Device::Cpu).unwrap();
        let other_seed = s.gpt_batch(2, 10, 8, 4, 7, Device::Cpu).unwrap();
        assert!(a.0.equal(&b.0) && a.1.equal(&b.1), "the same (seed, step) draws the same batch");
        assert!(!a.0.equal(&other_step.0) && !a.0.equal(&other_seed.0));
        // A stage of 2 dims and 3 points: inputs' last 2 coordinates are zero, 5 tokens.
        let (tokens, targets) = s.gpt_batch(1, 12, 8, 2, 3, Device::Cpu).unwrap();
        assert_eq!(tokens.size(), vec![8, 5, 4]);
        assert_eq!(targets.size(), vec![8, 3, 1]);
        let x_tail = tokens.slice(1, 0, 5, 2).narrow(2, 2, 2).abs().max();
        assert_eq!(f64::try_from(x_tail).unwrap(), 0.0);
        assert!(f64::try_from(tokens.slice(1, 0, 5, 2).narrow(2, 0, 2).abs().max()).unwrap() > 0.0);
    }

    #[test]
    fn unsupported_tasks_and_settings_are_refused_in_one_line() {
        let err = GaussianLinearSampler::for_task(&TaskConfig::new("linear")).unwrap_err().to_string();
        assert!(err.contains("gaussian_linear") && err.contains("`linear`"), "{err}");
        let task = TaskConfig::new("gaussian_linear").with("fixed_w", true);
        let err = GaussianLinearSampler::for_task(&task).unwrap_err().to_string();
        assert!(err.contains("fixed_w") && !err.contains('\n'), "{err}");
    }
}
