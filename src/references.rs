//! The reference learners a trained model is compared with, with their hyperparameters fitted
//! (von Oswald et al. 2023 §3–4, A.10; official `pre_train_gd_hps`):
//!
//! - **GD**: K steps from W₀ = 0. One η for all steps, tuned on the official grid, when the
//!   model is recurrent; one η per layer, fitted with Adam, when its layers are separate.
//! - **GD++**: GD with the input preconditioning x ← (I − γ Σ x_i x_iᵀ) x, one (η, γ) shared or
//!   per layer, fitted with Adam on fresh tasks.
//!
//! The (η, γ) fit runs the learners' dynamics in each prompt's eigenbasis with a written-out
//! gradient (`icl_probes::gdpp_fit`; a test here checks it against libtorch autograd of the token
//! dynamics); the numbers are then evaluated by the f64 references in `icl-probes` (`gd.rs`,
//! `gdpp.rs`), and tests pin that both and the transformer constructions agree.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use icl_probes::gd::{self, LeastSquaresStats};
use icl_probes::gdpp::gdpp_weights;
use icl_probes::gdpp_fit::{Adam, SpectralPrompts};
use icl_tasks::{Prompts, TaskConfig};

use crate::config::{GdTuning, RunConfig};
use crate::layout::array2_to_tensor;
use crate::rng::{seeded_rng, REFERENCE_FIT_SEED};

/// A reference learner with its hyperparameters, one entry per *applied* layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// `gd` or `gd++`.
    pub name: String,
    pub etas: Vec<f64>,
    /// All zero for GD.
    pub gammas: Vec<f64>,
    /// ½·MSE on the evaluation set after the last step.
    pub loss: f64,
}

impl Reference {
    /// Effective weights (B, o, d) after each step on `prompts`.
    pub fn weights(&self, prompts: &Prompts) -> Vec<ndarray::Array3<f64>> {
        if self.gammas.iter().all(|g| *g == 0.0) {
            gd::gd_weights(&LeastSquaresStats::new(prompts), &self.etas)
        } else {
            gdpp_weights(prompts, &self.etas, &self.gammas)
        }
    }

    /// The per-parameter-layer hyperparameters of a construction for a model with `param_layers`.
    pub fn per_param_layer(&self, param_layers: usize) -> (Vec<f64>, Vec<f64>) {
        (self.etas[..param_layers].to_vec(), self.gammas[..param_layers].to_vec())
    }
}

/// How the GD/GD++ hyperparameters are fitted.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { steps: 1000, batch: 512, lr: 0.02, seed: REFERENCE_FIT_SEED }
    }
}

/// The references a run compares with: GD always, GD++ if `eval.gdpp`; evaluated on `eval`.
pub fn references_for(config: &RunConfig, eval: &Prompts) -> anyhow::Result<Vec<Reference>> {
    let e = &config.eval;
    let fit = FitOptions { steps: e.fit_steps, lr: e.fit_lr, batch: e.fit_batch, ..FitOptions::default() };
    fit_selected(config, eval, fit, config.eval.gdpp)
}

/// GD and GD++ for a model config, evaluated on `eval` prompts.
pub fn fit_references(config: &RunConfig, eval: &Prompts, fit: FitOptions) -> anyhow::Result<Vec<Reference>> {
    fit_selected(config, eval, fit, true)
}

fn fit_selected(
    config: &RunConfig,
    eval: &Prompts,
    fit: FitOptions,
    with_gdpp: bool,
) -> anyhow::Result<Vec<Reference>> {
    // GD takes as many steps as the model has layers, unless the config says otherwise (Fig. 5).
    let layers = config.eval.gd_steps.unwrap_or(config.model.layers);
    let tuned_eta = match config.eval.gd_tuning.unwrap_or(GdTuning::Grid) {
        GdTuning::Grid => gd::tune_eta(eval, &LeastSquaresStats::new(eval), layers, &gd::official_eta_grid()).eta,
        GdTuning::Search => {
            let tuning = crate::rng::prompts(config.task().as_ref(), config.eval.tasks, REFERENCE_FIT_SEED);
            icl_probes::learners::tune_gd_eta(&tuning, layers)
        }
    };
    let shared = config.model.recurrent || layers == 1;
    let gd_etas = if shared {
        vec![tuned_eta; layers]
    } else {
        fit_hyperparameters(&config.task, layers, false, false, tuned_eta, fit)?.0
    };
    let mut learners = vec![("gd", gd_etas, vec![0.0; layers])];
    if with_gdpp {
        let (etas, gammas) = fit_hyperparameters(&config.task, layers, shared, true, tuned_eta, fit)?;
        learners.push(("gd++", etas, gammas));
    }
    let mut out = Vec::new();
    for (name, etas, gammas) in learners {
        let mut r = Reference { name: name.into(), etas, gammas, loss: f64::NAN };
        let w = r.weights(eval).pop().expect("layers >= 1");
        r.loss = eval.half_mse(&gd::predict(&w, &eval.xq));
        out.push(r);
    }
    Ok(out)
}

/// Fits (η_l, γ_l) with Adam on fresh tasks (γ ≡ 0 unless `plus_plus`), starting from η = `eta0`,
/// γ = 0. Returns one (η, γ) per applied layer: the parameters with the lowest loss on a fixed
/// validation batch among those checked every 50 steps (the start included). Deep GD++ has regions
/// where the iteration diverges, and an Adam run can wander into them late; without this guard the
/// 5-layer fit ended at 2e9 on one run and 0.058 on another that differed only in the last bits
/// of its BLAS sums.
pub fn fit_hyperparameters(
    task: &TaskConfig,
    layers: usize,
    shared: bool,
    plus_plus: bool,
    eta0: f64,
    fit: FitOptions,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let sampler = icl_tasks::build(task)?;
    let params = if shared { 1 } else { layers };
    // (η₀, …, γ₀, …): one of each per parameter; γ stays 0 for plain GD.
    let mut theta: Vec<f64> = [vec![eta0; params], vec![0.0; params]].concat();
    let mut adam = Adam::new(theta.len(), fit.lr);
    let per_layer = |theta: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let expand = |v: &[f64]| if shared { vec![v[0]; layers] } else { v.to_vec() };
        (expand(&theta[..params]), expand(&theta[params..]))
    };
    let validation = SpectralPrompts::new(&sampler.sample(&mut seeded_rng(fit.seed, 2), 2048));
    let snapshot = |theta: &[f64]| -> (f64, Vec<f64>) {
        let (etas, gammas) = per_layer(theta);
        let v = validation.loss(&etas, &gammas);
        (if v.is_finite() { v } else { f64::INFINITY }, theta.to_vec())
    };
    let mut best = snapshot(&theta);
    let mut rng = seeded_rng(fit.seed, 0);
    for step in 1..=fit.steps {
        let batch = SpectralPrompts::new(&sampler.sample(&mut rng, fit.batch));
        let (etas, gammas) = per_layer(&theta);
        let (_, d_eta, d_gamma) = batch.loss_and_grad(&etas, &gammas, true);
        // A shared parameter's gradient is the sum over the layers it is applied in.
        let fold = |g: Vec<f64>| if shared { vec![g.iter().sum()] } else { g };
        let mut grad = [fold(d_eta), fold(d_gamma)].concat();
        if !plus_plus {
            grad[params..].fill(0.0); // γ is not fitted: Adam leaves a parameter with zero gradient at 0
        }
        adam.step(&mut theta, &grad);
        if step % 50 == 0 || step == fit.steps {
            let now = snapshot(&theta);
            if now.0 < best.0 {
                best = now;
            }
        }
    }
    Ok(per_layer(&best.1))
}

/// Fits L-step preconditioned GD (one P_l per step; Ahn et al. 2023, whose critical points of L
/// separate layers are such steps) with Adam on fresh prompts of `task`, from P_l = η₀·I:
/// W ← W − (W A − B) P_lᵀ from W = 0, A = XᵀX/n, B = YᵀX/n, prediction W x_q, loss ½·MSE.
pub fn fit_preconditioners(
    task: &dyn icl_tasks::Task,
    steps: usize,
    eta0: f64,
    fit: FitOptions,
) -> anyhow::Result<Vec<ndarray::Array2<f64>>> {
    let dims = task.dims();
    let d = dims.x_dim as i64;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let init = Tensor::eye(d, (Kind::Double, Device::Cpu)).unsqueeze(0).repeat([steps as i64, 1, 1]) * eta0;
    let p = vs.root().var_copy("p", &init); // (L, d, d)
    vs.set_kind(Kind::Double);
    let mut opt = nn::Adam::default().build(&vs, fit.lr)?;
    let mut rng = seeded_rng(fit.seed, 1);
    let n = dims.context_len as f64;
    for _ in 0..fit.steps {
        let prompts = task.sample(&mut rng, fit.batch);
        let xs = array3(&prompts.xs); // (B, N, d)
        let ys = array3(&prompts.ys); // (B, N, o)
        let xq = array2_to_tensor(&prompts.xq, Kind::Double, Device::Cpu).unsqueeze(2); // (B, d, 1)
        let target = array2_to_tensor(&prompts.yq, Kind::Double, Device::Cpu);
        let a = xs.transpose(1, 2).matmul(&xs) / n; // (B, d, d)
        let b = ys.transpose(1, 2).matmul(&xs) / n; // (B, o, d)
        let mut w = b.zeros_like();
        for l in 0..steps as i64 {
            w = &w - (w.matmul(&a) - &b).matmul(&p.get(l).tr()); // (B, o, d)
        }
        let pred = w.matmul(&xq).squeeze_dim(2); // (B, o)
        let loss = (pred - &target).square().sum_dim_intlist(1, false, Kind::Double).mean(Kind::Double) * 0.5;
        opt.zero_grad();
        loss.backward();
        opt.step();
    }
    (0..steps as i64)
        .map(|l| {
            let t = p.get(l).detach().contiguous();
            let values = Vec::<f64>::try_from(&t.view(-1))?;
            Ok(ndarray::Array2::from_shape_vec((d as usize, d as usize), values)?)
        })
        .collect()
}

/// The multi-step `precond_gd` fitter of the tournament and curves (registered by
/// [`crate::learners::register`]): one P_l per step, fitted by full-batch Adam on four fifths of
/// the tuning prompts (their n), from P_l = η·I with η the tuned L-step GD's, keeping the P with
/// the lowest loss on the last fifth (so it is never worse than GD there: with d² parameters per
/// step and few examples, the fitting loss alone overfits badly). Same update as the learner:
/// W ← W − (W A − B) P_lᵀ from W = 0 with A, B the prompts' (1/n)-normalised statistics.
pub fn fit_preconditioners_on(
    prompts: &icl_tasks::Prompts,
    steps: usize,
) -> Result<Vec<ndarray::Array2<f64>>, icl_probes::ProbeError> {
    use icl_probes::ProbeError;
    let torch = |e: tch::TchError| ProbeError::Unsupported(format!("libtorch: {e}"));
    let gd = icl_probes::learner::fit(&icl_tasks::LearnerSpec::new("gd").with("steps", steps), Some(prompts))?;
    let eta0 = gd.params().get("eta").and_then(|v| v.as_f64()).unwrap_or(1.0);
    let stats = icl_probes::gd::LeastSquaresStats::new(prompts);
    let a = array3(&stats.xx); // (B, d, d)
    let b = array3(&stats.yx); // (B, o, d)
    let xq = array2_to_tensor(&prompts.xq, Kind::Double, Device::Cpu).unsqueeze(2); // (B, d, 1)
    let target = array2_to_tensor(&prompts.yq, Kind::Double, Device::Cpu); // (B, o)
    let d = prompts.x_dim() as i64;
    let rows = prompts.batch() as i64;
    let fit_rows = (rows - rows / 5).max(1);
    let part =
        |t: &Tensor, fit: bool| if fit { t.narrow(0, 0, fit_rows) } else { t.narrow(0, fit_rows, rows - fit_rows) };
    let mut vs = nn::VarStore::new(Device::Cpu);
    let init = Tensor::eye(d, (Kind::Double, Device::Cpu)).unsqueeze(0).repeat([steps as i64, 1, 1]) * eta0;
    let p = vs.root().var_copy("p", &init); // (L, d, d)
    vs.set_kind(Kind::Double);
    let mut opt = nn::Adam::default().build(&vs, 0.02 * eta0.abs().max(1e-6)).map_err(torch)?;
    let loss_of = |p: &Tensor, fit: bool| {
        let (a, b) = (part(&a, fit), part(&b, fit));
        let mut w = b.zeros_like();
        for l in 0..steps as i64 {
            w = &w - (w.matmul(&a) - &b).matmul(&p.get(l).tr()); // (B, o, d)
        }
        let pred = w.matmul(&part(&xq, fit)).squeeze_dim(2); // (B, o)
        (pred - part(&target, fit)).square().sum_dim_intlist(1, false, Kind::Double).mean(Kind::Double) * 0.5
    };
    let validate = |p: &Tensor| tch::no_grad(|| loss_of(p, rows == fit_rows).double_value(&[]));
    let mut best = (validate(&init), init.shallow_clone());
    for _ in 0..300 {
        let loss = loss_of(&p, true);
        if !loss.double_value(&[]).is_finite() {
            break;
        }
        opt.zero_grad();
        loss.backward();
        opt.step();
        let value = validate(&p);
        if value < best.0 {
            best = (value, p.detach().copy());
        }
    }
    (0..steps as i64)
        .map(|l| {
            let t = best.1.get(l).contiguous();
            let values = Vec::<f64>::try_from(&t.view(-1)).map_err(torch)?;
            ndarray::Array2::from_shape_vec((d as usize, d as usize), values)
                .map_err(|e| ProbeError::Unsupported(e.to_string()))
        })
        .collect()
}

fn array3(a: &ndarray::Array3<f64>) -> Tensor {
    crate::layout::array_to_tensor(a, Kind::Double, Device::Cpu)
}

/// ½·MSE of the GD++ token dynamics written literally in tch, with (η_l, γ_l) as leaf tensors: the
/// fit's former implementation, kept as the reference its written-out gradient is tested and
/// benchmarked against.
pub fn token_dynamics_loss(p: &Prompts, eta: &Tensor, gamma: &Tensor) -> Tensor {
    let n = p.context_len() as f64;
    let mut x = array3(&p.xs); // (B, N, d)
    let mut y = array3(&p.ys); // (B, N, o)
    let mut xq = array2_to_tensor(&p.xq, Kind::Double, Device::Cpu).unsqueeze(2); // (B, d, 1)
    let target = array2_to_tensor(&p.yq, Kind::Double, Device::Cpu);
    let mut yq = Tensor::zeros([p.batch() as i64, p.y_dim() as i64, 1], (Kind::Double, Device::Cpu));
    for l in 0..eta.size()[0] {
        let step = eta.get(l) / n;
        let bm = y.transpose(1, 2).matmul(&x); // (B, o, d)
        let y_new = &y - x.matmul(&bm.transpose(1, 2)) * &step;
        yq -= bm.matmul(&xq) * &step;
        let c = x.transpose(1, 2).matmul(&x); // (B, d, d)
        let g = gamma.get(l);
        xq = &xq - c.matmul(&xq) * &g;
        x = &x - x.matmul(&c) * &g;
        y = y_new;
    }
    let pred = -yq.squeeze_dim(2); // (B, o)
    (pred - &target).square().sum_dim_intlist(1, false, Kind::Double).mean(Kind::Double) * 0.5
}

/// Milliseconds per fit step (a fresh batch of `batch` prompts, the loss and its gradient in every
/// η_l and γ_l) for `layers` separate GD++ layers: in each prompt's eigenbasis (what the fit runs)
/// and by libtorch autograd of the token dynamics (what it ran before), on the same batches.
pub fn time_fit_gradients(task: &TaskConfig, layers: usize, batch: usize, steps: usize) -> anyhow::Result<(f64, f64)> {
    let sampler = icl_tasks::build(task)?;
    let (etas, gammas) = (vec![6.0; layers], vec![0.1; layers]);
    let mut rng = seeded_rng(REFERENCE_FIT_SEED, 0);
    let start = std::time::Instant::now();
    for _ in 0..steps {
        let p = sampler.sample(&mut rng, batch);
        std::hint::black_box(SpectralPrompts::new(&p).loss_and_grad(&etas, &gammas, true));
    }
    let spectral = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let mut rng = seeded_rng(REFERENCE_FIT_SEED, 0);
    let start = std::time::Instant::now();
    for _ in 0..steps {
        let p = sampler.sample(&mut rng, batch);
        let eta = Tensor::from_slice(&etas).set_requires_grad(true);
        let gamma = Tensor::from_slice(&gammas).set_requires_grad(true);
        token_dynamics_loss(&p, &eta, &gamma).backward();
        let _ = std::hint::black_box((eta.grad(), gamma.grad()));
    }
    let autograd = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    Ok((spectral, autograd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use icl_tasks::TaskRng;
    use rand::SeedableRng;

    #[test]
    fn spectral_gradient_equals_autograd_of_the_token_dynamics() {
        for task in [TaskConfig::default(), TaskConfig::new("linear").with("x_dim", 4).with("y_dim", 2)] {
            let p = icl_tasks::build(&task).unwrap().sample(&mut TaskRng::seed_from_u64(9), 100);
            let (etas, gammas) = (vec![5.5, 6.0, 7.5, 9.0], vec![0.03, 0.08, 0.05, 0.11]);
            let eta = Tensor::from_slice(&etas).set_requires_grad(true);
            let gamma = Tensor::from_slice(&gammas).set_requires_grad(true);
            let loss = token_dynamics_loss(&p, &eta, &gamma);
            loss.backward();
            let (spectral_loss, d_eta, d_gamma) = SpectralPrompts::new(&p).loss_and_grad(&etas, &gammas, true);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * b.abs().max(1e-3);
            let torch_loss = f64::try_from(&loss).unwrap();
            assert!(close(spectral_loss, torch_loss), "loss {spectral_loss} vs {torch_loss}");
            for (ours, theirs) in [(d_eta, eta.grad()), (d_gamma, gamma.grad())] {
                let theirs = Vec::<f64>::try_from(&theirs).unwrap();
                for (a, b) in ours.iter().zip(&theirs) {
                    assert!(close(*a, *b), "gradient {ours:?} vs {theirs:?}");
                }
            }
        }
    }
}
