//! Named run configs: the trained models the von Oswald et al. 2023 figures use, by key, and the
//! presets stored beside the figures (`RunConfig::preset`). Figures that use the same
//! model share its runs (`runs/<name>/seed-<s>`), so `vo2023-all` trains each model once.
//! Settings follow the official notebooks (spec §1.4): lr 5e-4, gradient clip 10 and token
//! clipping at ±10 beyond 3 layers; 5,000 steps for recurrent models, 50,000 for separate layers.
//! The `quick` variants shorten training (and the GD++ fit) to minutes on a laptop CPU and
//! carry `-quick` in their run names.

use crate::config::RunConfig;

/// A model of a figure: a key, a label for plots and reports, and its run config.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub key: &'static str,
    pub label: String,
    pub config: RunConfig,
}

/// All model keys, for error messages.
pub const KEYS: &[&str] = &[
    "lsa-1",
    "lsa-2-rec",
    "lsa-3-rec",
    "lsa-5-sep",
    "lsa-10-rec",
    "softmax-1h",
    "softmax-2h",
    "ln-1",
    "ln-2",
    "classic-2",
    "mlp-12-sep-4h",
];

pub fn model(key: &str, quick: bool) -> anyhow::Result<ModelSpec> {
    let mut c = RunConfig::preset("vo2023-fig2")?;
    c.eval.gdpp = true;
    let (label, layers, recurrent, steps, quick_steps) = match key {
        "lsa-1" => ("1 layer LSA", 1, true, 5000, 5000),
        "lsa-2-rec" => ("2 recurrent layers", 2, true, 5000, 3000),
        "lsa-3-rec" => ("3 recurrent layers", 3, true, 5000, 3000),
        "lsa-5-sep" => ("5 separate layers", 5, false, 50_000, 3000),
        "lsa-10-rec" => ("10 recurrent layers", 10, true, 5000, 3000),
        "softmax-1h" => ("softmax, 1 head", 1, true, 5000, 3000),
        "softmax-2h" => ("softmax, 2 heads", 1, true, 5000, 3000),
        "ln-1" => ("LayerNorm, 1 layer", 1, true, 5000, 3000),
        "ln-2" => ("LayerNorm, 2 layers", 2, true, 5000, 3000),
        "classic-2" => ("classic tokens, 2 layers", 2, false, 10_000, 3000),
        "mlp-12-sep-4h" => ("12 layers, MLPs, 4 heads", 12, false, 50_000, 2000),
        other => anyhow::bail!("unknown model `{other}` (known: {})", KEYS.join(", ")),
    };
    c.model.layers = layers;
    c.model.recurrent = recurrent;
    c.model.init_scale = None; // 0.002 / layers
    c.train.grad_clip = None; // 0.001 up to 2 layers, else 10
    c.train.steps = if quick { quick_steps } else { steps };
    if layers > 3 {
        c.train.lr = 5e-4;
        c.model.token_clip = Some(10.0);
    }
    if key == "lsa-10-rec" {
        // Ten GD++ steps: the optimum η is far from the GD start (≈ 22 vs 5) and noisy batches of 512
        // at lr 0.02 wander around the start; 3,000 steps at lr 0.01 with batches of 1,024 get there.
        c.eval.fit_steps = 3000;
        c.eval.fit_lr = 0.01;
        c.eval.fit_batch = 1024;
    }
    if !recurrent {
        // Per-layer η (and γ) for separate layers: the official fit runs 30,000 steps.
        c.eval.fit_steps = if quick { 2000 } else { 30_000 };
    }
    match key {
        "softmax-1h" | "softmax-2h" => {
            c.model.softmax = true;
            c.model.heads = if key == "softmax-2h" { 2 } else { 1 };
        }
        "ln-1" | "ln-2" => c.model.layer_norm = true,
        "mlp-12-sep-4h" => {
            // Fig. 8: 12 separate layers, each 4 linear heads of key size d+1 = 11 and a GELU MLP of
            // width 4·11, no LayerNorm (the notebook's `att_only_trans = False`, `num_heads = 4`);
            // lr 5e-4, clip 10 and token clipping as every model beyond 3 layers. About 1 s per
            // step at batch 2,048 on one CPU core: the quick variant trains on batches of 512.
            c.model.mlp = true;
            c.model.heads = 4;
            if quick {
                c.train.batch = 512;
            }
        }
        "classic-2" => {
            // Spec §1.4, classic tokens: x and y as separate tokens with 10 concatenated sinusoidal
            // positions (width 20, key size 20), softmax in the first layer, init 0.02/L, clip 10,
            // 10,000 steps, evaluation every 500; compared with *one* GD step (Fig. 5).
            c.model.tokens = crate::layout::TokenLayout::Classic;
            c.model.pos_enc = 10;
            c.model.key_size = None;
            c.model.first_layer_softmax = true;
            c.model.init_scale = Some(0.02 / 2.0);
            c.train.grad_clip = Some(10.0);
            c.eval.every = 500;
            c.eval.gd_steps = Some(1);
            c.eval.gdpp = false;
        }
        _ => {}
    }
    // Names say what the model is, so that figures share runs; quick runs never mix with full ones.
    c.name = if key == "lsa-1" && !quick {
        "vo2023-fig2".into()
    } else {
        format!("vo2023-{key}{}", if quick { "-quick" } else { "" })
    };
    if layers == 1 {
        c.eval.gdpp = false; // one layer: GD++ equals GD (the y-update uses the inputs before preconditioning)
    }
    Ok(ModelSpec { key: leak(key), label: label.into(), config: c.resolve()? })
}

fn leak(key: &str) -> &'static str {
    KEYS.iter().copied().find(|k| *k == key).expect("checked above")
}
