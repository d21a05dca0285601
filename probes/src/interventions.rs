//! The learner side of the intervention protocols (issue "causal evidence"; definitions in
//! ../shared/reference/interventions-and-bayes.md §3): what a hypothesis "layer l runs step l of
//! learner L" predicts when layer l is changed.
//!
//! GD and GD++ are written here as a recursion on von Oswald et al.'s tokens e = (x, y), exactly
//! as their constructions compute it (Proposition 1 and A.10): per step, simultaneously for every
//! token j (the N context tokens and the query), with sums over the context tokens i,
//!
//! ```text
//! x_j ← x_j − γ Σ_i x_i x_iᵀ x_j          y_j ← y_j − (η/N) Σ_i y_i x_iᵀ x_j
//! ```
//!
//! starting from the prompt (the query's y-entry 0), the prediction being −(query's y). Unlike
//! `gdpp.rs`, which carries the query as a linear map, the query here is a concrete vector, so a
//! state can be *patched* (P2: context channels from another prompt) and the recursion continued,
//! or a step *skipped* (P1). For the constructions the model's tokens are these states, so the
//! model under the same intervention must match to rounding.
//!
//! P4 needs every linear-in-y learner as a smoother: ŷ = s(X, x_q)ᵀ y. [`smoother`] reads s off any
//! [`Learner`] by evaluating it on the unit label vectors (exact for a learner linear in y).

use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use icl_tasks::Prompts;

use crate::learner::Learner;
use crate::ProbeError;

/// One prompt's tokens between layers: what every token holds in the construction.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    /// Context x-entries, (N, d).
    pub ctx_x: Array2<f64>,
    /// Context y-entries, (N, o): the residuals yᵢ − W xᵢ under GD.
    pub ctx_y: Array2<f64>,
    /// The query's x-entries, (d,).
    pub q_x: Array1<f64>,
    /// The query's y-entries, (o,): −ŷ.
    pub q_y: Array1<f64>,
}

/// Which entries of the context tokens an interchange copies from the source prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    /// The y-entries (under GD: the residuals, i.e. the iterate's errors).
    Y,
    /// The x-entries (under GD++: the preconditioned inputs).
    X,
    /// The whole token.
    All,
}

impl Channels {
    pub const ALL: [Channels; 3] = [Channels::Y, Channels::X, Channels::All];

    pub fn name(self) -> &'static str {
        match self {
            Channels::Y => "y",
            Channels::X => "x",
            Channels::All => "all",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The channel range [start, end) of a token of width d + o.
    pub fn range(self, x_dim: usize, y_dim: usize) -> (usize, usize) {
        match self {
            Channels::Y => (x_dim, x_dim + y_dim),
            Channels::X => (0, x_dim),
            Channels::All => (0, x_dim + y_dim),
        }
    }
}

impl Tokens {
    /// Prompt i's tokens before the first layer.
    pub fn initial(p: &Prompts, i: usize) -> Self {
        Self {
            ctx_x: p.xs.index_axis(Axis(0), i).to_owned(),
            ctx_y: p.ys.index_axis(Axis(0), i).to_owned(),
            q_x: p.xq.row(i).to_owned(),
            q_y: Array1::zeros(p.y_dim()),
        }
    }

    /// One step with (η, γ), every token at once.
    pub fn step(&self, eta: f64, gamma: f64) -> Self {
        let n = self.ctx_x.nrows();
        // No context pairs: nothing to learn from (and η/n would be 0/0).
        let rate = if n == 0 { 0.0 } else { eta / n as f64 };
        let c = self.ctx_x.t().dot(&self.ctx_x); // (d, d) Σ x_i x_iᵀ
        let b = self.ctx_y.t().dot(&self.ctx_x); // (o, d) Σ y_i x_iᵀ
        Self {
            ctx_y: &self.ctx_y - &(self.ctx_x.dot(&b.t()) * rate),
            q_y: &self.q_y - &(b.dot(&self.q_x) * rate),
            ctx_x: &self.ctx_x - &(self.ctx_x.dot(&c) * gamma),
            q_x: &self.q_x - &(c.dot(&self.q_x) * gamma),
        }
    }

    /// The prediction these tokens read out to: −(query's y-entries), (o,).
    pub fn prediction(&self) -> Array1<f64> {
        -&self.q_y
    }

    /// These tokens with the context channels `channels` taken from `source`.
    pub fn with_context_from(&self, source: &Tokens, channels: Channels) -> Self {
        let mut out = self.clone();
        if matches!(channels, Channels::X | Channels::All) {
            out.ctx_x.assign(&source.ctx_x);
        }
        if matches!(channels, Channels::Y | Channels::All) {
            out.ctx_y.assign(&source.ctx_y);
        }
        out
    }

    /// The tokens as one matrix (N + 1, d + o), context rows first, as the model holds them.
    pub fn matrix(&self) -> Array2<f64> {
        let (n, d, o) = (self.ctx_x.nrows(), self.ctx_x.ncols(), self.ctx_y.ncols());
        let mut m = Array2::zeros((n + 1, d + o));
        m.slice_mut(s![..n, ..d]).assign(&self.ctx_x);
        m.slice_mut(s![..n, d..]).assign(&self.ctx_y);
        m.slice_mut(s![n, ..d]).assign(&self.q_x);
        m.slice_mut(s![n, d..]).assign(&self.q_y);
        m
    }
}

/// A learner written as steps of the token recursion: GD (γ = 0) or GD++, one (η, γ) per step.
#[derive(Clone, Debug, PartialEq)]
pub struct Recursion {
    pub steps: Vec<(f64, f64)>,
}

impl Recursion {
    /// k steps sharing one (η, γ): the `gd` (γ = 0) and `gd++` learners.
    pub fn shared(steps: usize, eta: f64, gamma: f64) -> Self {
        Self { steps: vec![(eta, gamma); steps] }
    }

    /// From a fitted `gd` or `gd++` learner's parameters (`steps`, `eta`, `gamma`); `None` for
    /// any other learner (it has no token recursion).
    pub fn of_learner(learner: &dyn Learner) -> Option<Self> {
        let p = learner.params();
        let steps = p.get("steps")?.as_u64()? as usize;
        let eta = p.get("eta")?.as_f64()?;
        let gamma = match learner.name() {
            "gd" => 0.0,
            "gd++" => p.get("gamma")?.as_f64()?,
            _ => return None,
        };
        Some(Self::shared(steps, eta, gamma))
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs steps `from..` on `tokens`, skipping step `skip` if given; the final tokens.
    pub fn run_from(&self, tokens: Tokens, from: usize, skip: Option<usize>) -> Tokens {
        self.steps
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(l, _)| Some(*l) != skip)
            .fold(tokens, |t, (_, &(eta, gamma))| t.step(eta, gamma))
    }

    /// The tokens after steps 0..=l (l = `layer`, 0-based).
    pub fn after(&self, tokens: Tokens, layer: usize) -> Tokens {
        self.steps[..=layer].iter().fold(tokens, |t, &(eta, gamma)| t.step(eta, gamma))
    }

    /// Predictions (B, o) of the intact recursion.
    pub fn predict(&self, p: &Prompts) -> Array2<f64> {
        per_prompt(p, |i| self.run_from(Tokens::initial(p, i), 0, None).prediction())
    }

    /// P1: predictions (B, o) with step `layer` removed (the iterate after step l − 1 goes
    /// straight to step l + 1).
    pub fn knockout(&self, p: &Prompts, layer: usize) -> Result<Array2<f64>, ProbeError> {
        self.check_layer(layer)?;
        Ok(per_prompt(p, |i| self.run_from(Tokens::initial(p, i), 0, Some(layer)).prediction()))
    }

    /// P2: predictions (B, o) of base prompts `a` whose context `channels` after step `layer` are
    /// replaced by source prompts `b`'s (prompt i of `b` into prompt i of `a`), the recursion
    /// continued from the patched tokens.
    pub fn interchange(
        &self,
        a: &Prompts,
        b: &Prompts,
        layer: usize,
        channels: Channels,
    ) -> Result<Array2<f64>, ProbeError> {
        self.check_layer(layer)?;
        if a.xs.shape() != b.xs.shape() || a.ys.shape() != b.ys.shape() {
            return Err(ProbeError::Unsupported(format!(
                "interchange needs base and source prompts of one shape (got {:?} and {:?})",
                a.xs.shape(),
                b.xs.shape()
            )));
        }
        Ok(per_prompt(a, |i| {
            let base = self.after(Tokens::initial(a, i), layer);
            let source = self.after(Tokens::initial(b, i), layer);
            self.run_from(base.with_context_from(&source, channels), layer + 1, None).prediction()
        }))
    }

    fn check_layer(&self, layer: usize) -> Result<(), ProbeError> {
        if layer < self.len() {
            Ok(())
        } else {
            Err(ProbeError::Unsupported(format!("step {layer} of a {}-step recursion", self.len())))
        }
    }
}

/// Applies `f` to every prompt index on the rayon pool and stacks the (o,) answers to (B, o).
fn per_prompt(p: &Prompts, f: impl Fn(usize) -> Array1<f64> + Sync + Send) -> Array2<f64> {
    let rows: Vec<Array1<f64>> = (0..p.batch()).into_par_iter().map(f).collect();
    let mut out = Array2::zeros((p.batch(), p.y_dim()));
    for (i, r) in rows.into_iter().enumerate() {
        out.row_mut(i).assign(&r);
    }
    out
}

/// P4: a learner's smoother s (B, N) for scalar labels, ŷ = s(X, x_q)ᵀ y, read off by evaluating
/// it on every unit label vector eⱼ (column j is its prediction with y = eⱼ). Exact for a learner
/// linear in y (GD, GD++, ridge, least squares, averaging, k-NN, Newton); for one that is not,
/// the result is not its smoother, so [`is_linear_in_y`] should be checked first.
pub fn smoother(learner: &dyn Learner, p: &Prompts) -> Result<Array2<f64>, ProbeError> {
    if p.y_dim() != 1 {
        return Err(ProbeError::Unsupported(format!("smoothers are for scalar labels (got o = {})", p.y_dim())));
    }
    let (b, n) = (p.batch(), p.context_len());
    let mut s = Array2::zeros((b, n));
    for j in 0..n {
        let mut unit = p.clone();
        unit.ys.fill(0.0);
        unit.ys.slice_mut(s![.., j, 0]).fill(1.0);
        let preds = learner.predict(&unit)?.preds; // (B, 1)
        s.column_mut(j).assign(&preds.column(0));
    }
    Ok(s)
}

/// Whether a learner is linear in y on these prompts: its predictions equal the smoother applied
/// to the actual labels to `tol` (relative to the predictions' scale).
pub fn is_linear_in_y(learner: &dyn Learner, p: &Prompts, s: &Array2<f64>, tol: f64) -> Result<bool, ProbeError> {
    let preds = learner.predict(p)?.preds;
    let scale = preds.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    let ok = (0..p.batch()).all(|i| {
        let via_s: f64 = s.row(i).dot(&p.ys.slice(s![i, .., 0]));
        (via_s - preds[[i, 0]]).abs() <= tol * scale
    });
    Ok(ok)
}

/// What a learner's smoother is on some prompts ([`linear_smoother`]).
pub enum Smoother {
    /// ŷ = sᵀ y with this s (B, N), not identically 0.
    Linear(Array2<f64>),
    /// s = 0: the learner ignores the labels (the zero learner), so s has no direction.
    Zero,
    /// The predictions are not the smoother applied to the labels: no smoother.
    NotLinear,
}

/// The learner's smoother on `p` where it is linear in y (1e-8 relative, [`is_linear_in_y`]):
/// what the tournament, the protocols' P4 and the Python module compare a model's ∂ŷ/∂y with.
pub fn linear_smoother(learner: &dyn Learner, p: &Prompts) -> Result<Smoother, ProbeError> {
    let s = smoother(learner, p)?;
    if s.iter().all(|v| *v == 0.0) {
        Ok(Smoother::Zero)
    } else if is_linear_in_y(learner, p, &s, 1e-8)? {
        Ok(Smoother::Linear(s))
    } else {
        Ok(Smoother::NotLinear)
    }
}

/// Per row: the cosine of a and b (rows of (B, N)), 0 where either row is zero.
pub fn row_cosines(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Vec<f64> {
    a.outer_iter().zip(b.outer_iter()).map(|(x, y)| cosine(x, y)).collect()
}

/// Per row: ‖a − b‖ / ‖b‖ (b the reference; NaN where b's row is zero).
pub fn row_relative_distances(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Vec<f64> {
    a.outer_iter()
        .zip(b.outer_iter())
        .map(|(x, y)| {
            let d = (&x - &y).mapv(|v| v * v).sum().sqrt();
            let r = y.mapv(|v| v * v).sum().sqrt();
            if r == 0.0 {
                f64::NAN
            } else {
                d / r
            }
        })
        .collect()
}

fn cosine(x: ArrayView1<f64>, y: ArrayView1<f64>) -> f64 {
    let (nx, ny) = (x.dot(&x).sqrt(), y.dot(&y).sqrt());
    if nx == 0.0 || ny == 0.0 {
        0.0
    } else {
        x.dot(&y) / (nx * ny)
    }
}

/// The closed form of 1-step GD's smoother, η/N · X x_q (B, N), for the tests.
pub fn gd1_smoother(p: &Prompts, eta: f64) -> Array2<f64> {
    let n = p.context_len() as f64;
    let mut s = Array2::zeros((p.batch(), p.context_len()));
    for i in 0..p.batch() {
        let x = p.xs.index_axis(Axis(0), i); // (N, d)
        s.row_mut(i).assign(&(x.dot(&p.xq.row(i)) * (eta / n)));
    }
    s
}

/// Stacks per-prompt token matrices (N + 1, d + o) to (B, N + 1, d + o).
pub fn stack_tokens(states: &[Tokens]) -> Array3<f64> {
    let mats: Vec<Array2<f64>> = states.iter().map(Tokens::matrix).collect();
    let views: Vec<_> = mats.iter().map(|m| m.view()).collect();
    ndarray::stack(Axis(0), &views).expect("tokens of one prompt shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learners::Gd;
    use icl_tasks::{build, TaskConfig, TaskRng};
    use rand::SeedableRng;

    fn prompts(seed: u64, n: usize) -> Prompts {
        build(&TaskConfig::default()).unwrap().sample_n(&mut TaskRng::seed_from_u64(seed), 5, n)
    }

    #[test]
    fn the_recursion_is_gd_and_gdpp() {
        let p = prompts(1, 7);
        let gd = Recursion::shared(3, 0.7, 0.0).predict(&p);
        let w = crate::gd::gd_weights(&crate::gd::LeastSquaresStats::new(&p), &[0.7; 3]).pop().unwrap();
        let want = crate::gd::predict(&w, &p.xq);
        assert!((&gd - &want).iter().all(|e| e.abs() < 1e-12));
        let pp = Recursion::shared(2, 0.6, 0.05).predict(&p);
        let w = crate::gdpp::gdpp_weights(&p, &[0.6; 2], &[0.05; 2]).pop().unwrap();
        assert!((&pp - &crate::gd::predict(&w, &p.xq)).iter().all(|e| e.abs() < 1e-12));
    }

    #[test]
    fn knocking_out_a_gd_step_is_one_step_fewer() {
        let p = prompts(2, 6);
        let r = Recursion::shared(3, 0.5, 0.0);
        let two = Recursion::shared(2, 0.5, 0.0).predict(&p);
        for l in 0..3 {
            let k = r.knockout(&p, l).unwrap();
            assert!((&k - &two).iter().all(|e| e.abs() < 1e-12), "step {l}");
        }
        assert!(r.knockout(&p, 3).is_err());
    }

    #[test]
    fn interchanging_everything_after_the_last_step_changes_nothing_and_before_copies_b() {
        let (a, b) = (prompts(3, 6), prompts(4, 6));
        let r = Recursion::shared(2, 0.5, 0.0);
        // After the last step nothing reads the context: the base's own prediction.
        let last = r.interchange(&a, &b, 1, Channels::All).unwrap();
        assert!((&last - &r.predict(&a)).iter().all(|e| e.abs() < 1e-12));
        // Patching the whole context after step 0 and continuing is B's context step applied to
        // A's query: check against doing it by hand.
        let one = r.interchange(&a, &b, 0, Channels::Y).unwrap();
        let base = r.after(Tokens::initial(&a, 0), 0);
        let source = r.after(Tokens::initial(&b, 0), 0);
        let mut by_hand = base.clone();
        by_hand.ctx_y = source.ctx_y.clone();
        let by_hand = by_hand.step(0.5, 0.0).prediction();
        assert!((one[[0, 0]] - by_hand[0]).abs() < 1e-12);
    }

    #[test]
    fn one_step_gd_smoother_is_eta_over_n_x_xq() {
        let p = prompts(5, 9);
        let s = smoother(&Gd { steps: 1, eta: 0.8 }, &p).unwrap();
        let want = gd1_smoother(&p, 0.8);
        assert!((&s - &want).iter().all(|e| e.abs() < 1e-12));
        assert!(is_linear_in_y(&Gd { steps: 1, eta: 0.8 }, &p, &s, 1e-10).unwrap());
        let cos = row_cosines(s.view(), want.view());
        assert!(cos.iter().all(|c| (c - 1.0).abs() < 1e-12));
        let rel = row_relative_distances((&want * 2.0).view(), want.view());
        assert!(rel.iter().all(|r| (r - 1.0).abs() < 1e-12));
    }
}
