//! von Oswald et al. 2023, Figure 11: how two softmax heads approximate one linear attention.
//!
//! A softmax head's weights over the N context tokens are 1/N + δⱼ with Σⱼ δⱼ = 0, so its output
//! at the query splits into a *constant* term, (1/N) Σⱼ vⱼ (the mean of the projected values:
//! nothing is learned in context), and a *linear* term Σⱼ δⱼ vⱼ (to first order δⱼ is linear in
//! q·kⱼ, as in linear attention). The paper's claim: in the trained 2-head model the heads' constant
//! terms cancel and what is left adds up to the linear-attention (GD) update.
//!
//! Everything is read from the trained 2-head model of Fig. 12 (the same runs): the attention
//! pattern and the tokens from the activation cache (`layers.0.attn.pattern`, `tokens`), the
//! per-head value and output matrices from its weights. A check recomputes the layer's output from
//! the per-head terms against the cached `layers.0.attn.out`.

use std::time::Instant;

use ndarray::{s, Array2, Ix3, Ix4};
use serde::Serialize;
use tch::{Device, Kind};

use icl_probes::measure::Measurement;

use super::{file_list, mean, std, train_seeds, write_report, FigureOptions};
use crate::cache::{attn_out, attn_pattern, ActivationCache, TOKENS};
use crate::evaluate::sample_prompts;
use crate::models::transformer::named_weights;
use crate::plot::{render_heatmaps, Heatmap};
use crate::presets::model;

pub const NAME: &str = "vo2023-fig11";
const TASKS: usize = 2000;

/// `reports/vo2023-fig11.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Fig11Report {
    pub figure: &'static str,
    pub quick: bool,
    pub seeds: usize,
    pub wall_seconds: f64,
    pub run_name: String,
    pub tasks: usize,
    pub per_seed: Vec<HeadTerms>,
    pub figures: Vec<String>,
    pub measurements: Vec<Measurement>,
}

/// One seed's per-head decomposition of the query's y-entry (the prediction is its negative).
#[derive(Clone, Debug, Serialize)]
pub struct HeadTerms {
    pub seed: u64,
    /// mean over prompts of |c₁ + c₂| / (|c₁| + |c₂|) for the heads' constant terms c_h: 0 when they
    /// cancel exactly, 1 when they have the same sign.
    pub constant_cancellation: f64,
    /// Correlation over prompts of the two heads' constant terms (−1: mirror images).
    pub constant_correlation: f64,
    /// RMS over prompts of each head's constant term, of their sum, and of the summed linear terms.
    pub constant_rms: [f64; 2],
    pub constant_sum_rms: f64,
    pub linear_sum_rms: f64,
    /// ½·MSE of the model, and of the model with both constant terms removed.
    pub loss: f64,
    pub loss_without_constants: f64,
    /// max |Σ_h (constant + linear)_h − cached attention output| at the query's y-entry.
    pub recompute_error: f64,
}

fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb): (f64, f64) = (a.iter().map(|x| (x - ma).powi(2)).sum(), b.iter().map(|y| (y - mb).powi(2)).sum());
    cov / (va * vb).sqrt()
}

/// A 1-layer model's attention output at the query's first y-entry, split per head h and prompt b
/// into the constant term (1/N) Σⱼ uⱼ and the linear term Σⱼ (pⱼ − 1/N) uⱼ, with uⱼ = cⱼ V_h O_h[:, y]
/// what context token cⱼ contributes through head h and pⱼ its attention weight (read from the
/// activation cache).
pub struct HeadSplit {
    /// (H, B)
    pub constant: Vec<Vec<f64>>,
    pub linear: Vec<Vec<f64>>,
    /// The cached `layers.0.attn.out` at that entry, (B).
    pub cached: Vec<f64>,
    /// The model's predictions, (B, o).
    pub preds: Array2<f64>,
}

impl HeadSplit {
    /// max over prompts of |Σ_h (constant + linear) − cached output|.
    pub fn recompute_error(&self) -> f64 {
        (0..self.cached.len())
            .map(|b| {
                let total: f64 = (0..self.constant.len()).map(|h| self.constant[h][b] + self.linear[h][b]).sum();
                (total - self.cached[b]).abs()
            })
            .fold(0.0, f64::max)
    }
}

pub fn split_heads(
    net: &crate::models::Model,
    weights: &icl_probes::NamedWeights,
    prompts: &icl_tasks::Prompts,
    heads: usize,
) -> anyhow::Result<HeadSplit> {
    let get = |name: &str| weights.get(name).ok_or_else(|| anyhow::anyhow!("missing weight `{name}`"));
    let (v, out) = (get("layers.0.attn.v")?, get("layers.0.attn.o")?);
    let key = v.ncols() / heads;
    let (n, o, batch) = (prompts.context_len(), prompts.y_dim(), prompts.batch());
    let tokens = net.tokens(prompts, Kind::Float, Device::Cpu);
    let names = [TOKENS.to_string(), attn_pattern(0), attn_out(0)];
    let mut cache = ActivationCache::names(&names);
    let preds = tch::no_grad(|| net.forward(&tokens, Some(&mut cache)));
    let preds = crate::cache::tensor_to_array(&preds)?.into_dimensionality::<ndarray::Ix2>()?; // (B, o)
    let toks = cache.array(TOKENS)?.into_dimensionality::<Ix3>()?; // (B, N+1, D)
    let pattern = cache.array(&attn_pattern(0))?.into_dimensionality::<Ix4>()?; // (B, H, T, N)
    let cached_out = cache.array(&attn_out(0))?.into_dimensionality::<Ix3>()?; // (B, T, D)
    let y_col = toks.shape()[2] - o; // the first y-entry
    let query_row = pattern.shape()[2] - 1;
    let mut split = HeadSplit {
        constant: vec![vec![0.0; batch]; heads],
        linear: vec![vec![0.0; batch]; heads],
        cached: (0..batch).map(|b| cached_out[[b, query_row, y_col]]).collect(),
        preds,
    };
    for h in 0..heads {
        let v_h = v.slice(s![.., h * key..(h + 1) * key]); // (D, K)
        let o_h = out.slice(s![h * key..(h + 1) * key, y_col]); // (K)
        let vo = v_h.dot(&o_h); // (D): token → y-entry of the head's output
        for b in 0..batch {
            let contrib = toks.slice(s![b, ..n, ..]).dot(&vo); // (N)
            let weights = pattern.slice(s![b, h, query_row, ..]); // (N)
            split.constant[h][b] = contrib.sum() / n as f64;
            split.linear[h][b] = weights.iter().zip(&contrib).map(|(w, c)| (w - 1.0 / n as f64) * c).sum();
        }
    }
    Ok(split)
}

pub fn reproduce(opts: &FigureOptions) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let spec = model("softmax-2h", opts.quick)?;
    let c = &spec.config;
    let runs = train_seeds(c, opts)?;
    let prompts = sample_prompts(&c.task, TASKS, c.eval.seed)?;
    let mut per_seed = Vec::new();
    let mut maps = Vec::new();
    let mut measurements = Vec::new();
    for run in &runs {
        let (vs, net) = crate::runs::load_model(&run.dir, c, Device::Cpu)?;
        let weights = named_weights(&vs)?;
        let split = split_heads(&net, &weights, &prompts, c.model.heads)?;
        let (constant, linear, preds) = (&split.constant, &split.linear, &split.preds);
        let (heads, batch) = (constant.len(), prompts.batch());
        let mut without_constants = preds.clone();
        for b in 0..batch {
            // ŷ = −(query y-entry after the layer) = −(0 + attention output); drop the constants.
            without_constants[[b, 0]] += (0..heads).map(|h| constant[h][b]).sum::<f64>();
        }
        let recompute_error = split.recompute_error();
        let sum_const: Vec<f64> = (0..batch).map(|b| (0..heads).map(|h| constant[h][b]).sum()).collect();
        let sum_linear: Vec<f64> = (0..batch).map(|b| (0..heads).map(|h| linear[h][b]).sum()).collect();
        let cancellation = mean(
            &(0..batch)
                .map(|b| {
                    let (a, c2) = (constant[0][b], constant[heads - 1][b]);
                    (a + c2).abs() / (a.abs() + c2.abs()).max(f64::MIN_POSITIVE)
                })
                .collect::<Vec<_>>(),
        );
        let terms = HeadTerms {
            seed: run.metrics.seed,
            constant_cancellation: cancellation,
            constant_correlation: correlation(&constant[0], &constant[heads - 1]),
            constant_rms: [rms(&constant[0]), rms(&constant[heads - 1])],
            constant_sum_rms: rms(&sum_const),
            linear_sum_rms: rms(&sum_linear),
            loss: prompts.half_mse(preds),
            loss_without_constants: prompts.half_mse(&without_constants),
            recompute_error,
        };
        for (metric, value) in [
            ("constant_cancellation", terms.constant_cancellation),
            ("constant_correlation", terms.constant_correlation),
            ("loss", terms.loss),
            ("loss_without_constants", terms.loss_without_constants),
        ] {
            let mut m = Measurement::new(&c.task.name, "model", Default::default(), metric, value);
            m.model = Some(run.metrics.name.clone());
            m.seed = Some(run.metrics.seed);
            m.layer = Some(1);
            measurements.push(m);
        }
        if run.metrics.seed == runs[0].metrics.seed {
            let get = |name: &str| weights.get(name).ok_or_else(|| anyhow::anyhow!("missing weight `{name}`"));
            let (q, k, v, out) =
                (get("layers.0.attn.q")?, get("layers.0.attn.k")?, get("layers.0.attn.v")?, get("layers.0.attn.o")?);
            let (key, width) = (v.ncols() / heads, v.nrows());
            // Per-head weight products (row-vector convention): KQ_h = Q_h K_hᵀ, PV_h = V_h O_h.
            let rows_of = |a: &Array2<f64>| a.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>();
            let frob = |a: &Array2<f64>| a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let mut pv_sum = Array2::<f64>::zeros((width, width));
            for h in 0..heads {
                let cols = s![.., h * key..(h + 1) * key];
                let kq = q.slice(cols).dot(&k.slice(cols).t());
                let pv = v.slice(cols).dot(&out.slice(s![h * key..(h + 1) * key, ..]));
                pv_sum += &pv;
                maps.push(Heatmap {
                    title: format!("head {}: KQ (‖·‖ {:.3})", h + 1, frob(&kq)),
                    values: rows_of(&kq),
                });
                maps.push(Heatmap {
                    title: format!("head {}: PV (‖·‖ {:.3})", h + 1, frob(&pv)),
                    values: rows_of(&pv),
                });
            }
            maps.push(Heatmap {
                title: format!("PV₁ + PV₂ (‖·‖ {:.3})", frob(&pv_sum)), values: rows_of(&pv_sum)
            });
        }
        per_seed.push(terms);
    }
    let files = render_heatmaps(&maps, 5, &opts.figures_root.join(NAME), "heads")?;
    let report = Fig11Report {
        figure: NAME,
        quick: opts.quick,
        seeds: opts.seed_count(),
        wall_seconds: start.elapsed().as_secs_f64(),
        run_name: c.name.clone(),
        tasks: TASKS,
        per_seed,
        figures: file_list(&files),
        measurements,
    };
    write_report(&opts.reports_root, NAME, &report, &markdown(&report, opts))
}

fn markdown(s: &Fig11Report, opts: &FigureOptions) -> String {
    let col = |f: &dyn Fn(&HeadTerms) -> f64| s.per_seed.iter().map(f).collect::<Vec<_>>();
    let pm = |v: Vec<f64>| format!("{:.4} ± {:.4}", mean(&v), std(&v));
    let mut out =
        String::from("# von Oswald et al. 2023, Figure 11: two softmax heads, their constant terms cancel\n\n");
    out += &format!(
        "Made by `{}`: the 1-layer, 2-head softmax model of Fig. 12 (`{}`, the same runs), on {} evaluation prompts. Each \
         head's output at the query's y-entry is split into its constant term (1/N) Σⱼ vⱼ — the mean of the projected \
         values, which carries no in-context learning — and its linear term Σⱼ (pⱼ − 1/N) vⱼ, from the cached attention \
         pattern pⱼ and tokens and the head's V and O. Mean ± std over {} seed(s).\n\n",
        opts.command(NAME),
        s.run_name,
        s.tasks,
        s.seeds
    );
    out +=
        "The paper: the two heads learn mirror-image weights, so that their constant (off-diagonal) terms cancel and \
            the sum behaves like one linear self-attention head, i.e. a GD step.\n\n";
    out += &format!(
        "| quantity | ours |\n|---|---|\n\
         | cancellation of the constant terms, mean \\|c₁ + c₂\\| / (\\|c₁\\| + \\|c₂\\|) (0 = exact) | {} |\n\
         | correlation of c₁ and c₂ over prompts (−1 = mirror images) | {} |\n\
         | RMS of c₁, c₂ | {} , {} |\n\
         | RMS of c₁ + c₂ | {} |\n\
         | RMS of the summed linear terms | {} |\n\
         | loss (½·MSE) | {} |\n\
         | loss with both constant terms removed | {} |\n\
         | max recomputation error against `layers.0.attn.out` | {:.1e} |\n\n",
        pm(col(&|t| t.constant_cancellation)),
        pm(col(&|t| t.constant_correlation)),
        pm(col(&|t| t.constant_rms[0])),
        pm(col(&|t| t.constant_rms[1])),
        pm(col(&|t| t.constant_sum_rms)),
        pm(col(&|t| t.linear_sum_rms)),
        pm(col(&|t| t.loss)),
        pm(col(&|t| t.loss_without_constants)),
        col(&|t| t.recompute_error).iter().fold(0.0f64, |a, &b| a.max(b)),
    );
    let cancel = mean(&col(&|t| t.constant_cancellation));
    let corr = mean(&col(&|t| t.constant_correlation));
    out += &if cancel < 0.2 && corr < -0.9 {
        format!(
            "**Ours:** the constant terms cancel (they are mirror images, correlation {corr:.3}, and their sum keeps {:.0}% \
             of their size), as the paper says; removing them changes the loss from {:.4} to {:.4}.\n",
            100.0 * cancel,
            mean(&col(&|t| t.loss)),
            mean(&col(&|t| t.loss_without_constants))
        )
    } else {
        format!(
            "**Ours: the constant terms do not cancel** (cancellation {cancel:.3}, correlation {corr:.3}): the claim does not \
             hold for these runs.\n"
        )
    };
    out += "\nHeatmaps (seed 0): each head's KQ and PV and the heads' summed PV, each scaled to its own largest entry \
            (norms in the titles).\n\n";
    out += &super::figures_line(&s.figures);
    out
}
