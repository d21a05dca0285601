//! Noise-free (by default) linear regression, the task of von Oswald et al. 2023 (`create_reg_data`)
//! and Garg et al. 2022 (`LinearRegression`): w ~ N(0, I)·w_scale, x ~ U(−r/2, r/2)^d, y = W x (+ noise).

use ndarray::{Array2, Array3};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

use crate::{Dims, Prompts, Task, TaskConfig, TaskError, TaskRng};

/// Linear regression with a fresh teacher W (o × d) per prompt.
#[derive(Clone, Debug)]
pub struct LinearRegression {
    dims: Dims,
    input_range: f64,
    w_scale: f64,
    noise_std: f64,
    distractors: usize,
}

impl LinearRegression {
    pub fn build(c: &TaskConfig) -> Result<Box<dyn Task>, TaskError> {
        Ok(Box::new(Self {
            dims: Dims { x_dim: c.x_dim, y_dim: c.y_dim, context_len: c.context_len },
            input_range: c.input_range,
            w_scale: c.w_scale,
            noise_std: c.noise_std,
            distractors: c.distractors,
        }))
    }
}

impl Task for LinearRegression {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn dims(&self) -> Dims {
        self.dims
    }

    fn references(&self) -> &'static [&'static str] {
        &["gd", "gd++", "ridge", "ols"]
    }

    fn sample(&self, rng: &mut TaskRng, batch: usize) -> Prompts {
        let Dims { x_dim: d, y_dim: o, context_len: n } = self.dims;
        let half = self.input_range / 2.0;
        let uniform = Uniform::new(-half, half).expect("input_range is checked > 0");
        // Flat row-major buffers, filled in a fixed draw order per prompt (W, the N context
        // inputs, the query) so that a (config, seed) pair always gives the same prompts.
        let mut xs = vec![0.0; batch * n * d];
        let mut ys = vec![0.0; batch * n * o];
        let mut xq = vec![0.0; batch * d];
        let mut yq = vec![0.0; batch * o];
        let mut w = vec![0.0; o * d]; // (o, d)
        for b in 0..batch {
            w.iter_mut().for_each(|v| *v = self.w_scale * rng.sample::<f64, _>(StandardNormal));
            let xs_b = &mut xs[b * n * d..(b + 1) * n * d];
            xs_b.iter_mut().for_each(|v| *v = uniform.sample(rng));
            let xq_b = &mut xq[b * d..(b + 1) * d];
            xq_b.iter_mut().for_each(|v| *v = uniform.sample(rng));
            for (k, w_k) in w.chunks_exact(d).enumerate() {
                for (i, x_i) in xs_b.chunks_exact(d).enumerate() {
                    ys[(b * n + i) * o + k] = dot(w_k, x_i);
                }
                yq[b * o + k] = dot(w_k, xq_b);
            }
        }
        if self.noise_std > 0.0 {
            let s = self.noise_std;
            ys.iter_mut().for_each(|y| *y += s * rng.sample::<f64, _>(StandardNormal));
            yq.iter_mut().for_each(|y| *y += s * rng.sample::<f64, _>(StandardNormal));
        }
        if self.distractors > 0 {
            // The first `distractors` context labels of each prompt carry no information about W.
            for b in 0..batch {
                let labels = &mut ys[b * n * o..(b * n + self.distractors) * o];
                labels.iter_mut().for_each(|y| *y = rng.sample(StandardNormal));
            }
        }
        Prompts {
            xs: Array3::from_shape_vec((batch, n, d), xs).expect("sizes match"),
            ys: Array3::from_shape_vec((batch, n, o), ys).expect("sizes match"),
            xq: Array2::from_shape_vec((batch, d), xq).expect("sizes match"),
            yq: Array2::from_shape_vec((batch, o), yq).expect("sizes match"),
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use rand::SeedableRng;

    fn sample(cfg: &TaskConfig, seed: u64, batch: usize) -> Prompts {
        build(cfg).unwrap().sample(&mut TaskRng::seed_from_u64(seed), batch)
    }

    #[test]
    fn shapes_follow_the_config() {
        let cfg = TaskConfig { x_dim: 3, y_dim: 2, context_len: 7, ..TaskConfig::default() };
        let p = sample(&cfg, 0, 5);
        assert_eq!(p.xs.dim(), (5, 7, 3));
        assert_eq!(p.ys.dim(), (5, 7, 2));
        assert_eq!(p.xq.dim(), (5, 3));
        assert_eq!(p.yq.dim(), (5, 2));
    }

    #[test]
    fn a_seed_fixes_the_prompts() {
        let cfg = TaskConfig::default();
        assert_eq!(sample(&cfg, 7, 4), sample(&cfg, 7, 4));
        assert_ne!(sample(&cfg, 7, 4), sample(&cfg, 8, 4));
    }

    #[test]
    fn inputs_are_uniform_and_labels_linear() {
        let cfg = TaskConfig { input_range: 3.0, ..TaskConfig::default() };
        let p = sample(&cfg, 1, 4000);
        let x = p.xs.iter().chain(p.xq.iter());
        let (n, sum, sq, max) =
            x.fold((0.0, 0.0, 0.0, 0.0f64), |(n, s, q, m), &v| (n + 1.0, s + v, q + v * v, m.max(v.abs())));
        assert!(max <= 1.5, "x outside U(−1.5, 1.5): {max}");
        assert!((sum / n).abs() < 0.01, "mean {}", sum / n);
        assert!((sq / n - 9.0 / 12.0).abs() < 0.01, "variance {} vs r²/12 = 0.75", sq / n);
        // Noise-free labels: y_q is exactly linear in x_q with the same W as the context. With
        // N = d = 10 the context determines W, so solving for it recovers y_q.
        let var_y = p.yq.iter().map(|y| y * y).sum::<f64>() / p.batch() as f64;
        // E[y²] = w_scale² · d · E[x²] = 10 · 0.75
        assert!((var_y - 7.5).abs() < 0.5, "E[y²] = {var_y}, want ≈ 7.5");
    }

    #[test]
    fn w_scale_noise_and_distractors() {
        let base = TaskConfig::default();
        let scaled = sample(&TaskConfig { w_scale: 2.0, ..base.clone() }, 3, 2000);
        let plain = sample(&base, 3, 2000);
        let ms = |p: &Prompts| p.yq.iter().map(|y| y * y).sum::<f64>() / p.batch() as f64;
        assert!((ms(&scaled) / ms(&plain) - 4.0).abs() < 1e-9, "same draws, W doubled");
        let noisy = sample(&TaskConfig { noise_std: 0.5, ..base.clone() }, 3, 4000);
        let extra = ms(&noisy) - ms(&plain);
        assert!((extra - 0.25).abs() < 0.05, "noise variance {extra} vs 0.25");
        let d = sample(&TaskConfig { distractors: 4, ..base.clone() }, 3, 2000);
        assert_eq!(d.xs, plain.xs, "distractors change labels only");
        assert_eq!(d.ys.slice(ndarray::s![.., 4.., ..]), plain.ys.slice(ndarray::s![.., 4.., ..]));
        assert_ne!(d.ys.slice(ndarray::s![.., ..4, ..]), plain.ys.slice(ndarray::s![.., ..4, ..]));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |c: TaskConfig| build(&c).err().unwrap().to_string();
        assert!(e(TaskConfig { x_dim: 0, ..TaskConfig::default() }).starts_with("task.x_dim:"));
        assert!(e(TaskConfig { input_range: f64::NAN, ..TaskConfig::default() }).starts_with("task.input_range:"));
        assert!(e(TaskConfig { distractors: 11, ..TaskConfig::default() }).starts_with("task.distractors:"));
        assert!(e(TaskConfig { name: "nope".into(), ..TaskConfig::default() }).contains("known: linear"));
    }
}
