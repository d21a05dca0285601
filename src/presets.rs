//! Named run configs: the trained models the von Oswald et al. 2023 figures use, by key, and the
//! presets stored beside the figures (`RunConfig::preset`). Figures that use the same
//! model share its runs (`runs/<name>/seed-<s>`), so `vo2023-all` trains each model once.
//! Settings follow the official notebooks (spec §1.4): lr 5e-4, gradient clip 10 and token
//! clipping at ±10 beyond 3 layers; 5,000 steps for recurrent models, 50,000 for separate layers.
//! The `quick` variants shorten training (and the GD++ fit) to minutes on a laptop CPU and
//! carry `-quick` in their run names.
//!
//! Every named config lives here (one place per paper): the preset files in `presets/`, the
//! figure models, Garg et al.'s GPT sizes, Akyürek et al.'s phases models and grid, and
//! [`RunConfig::preset`] that finds them by name. The run config (`crate::config`) knows no paper.

use anyhow::Context;

use crate::config::{Curriculum, GptConfig, RunConfig};

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

// --- Named configs ------------------------------------------------------------------------------

/// Named preset files (`presets/*.toml`): the configs of figures that train one model.
pub const PRESETS: &[(&str, &str)] = &[
    ("vo2023-fig2", include_str!("../presets/vo2023-fig2.toml")),
    ("tiny", include_str!("../presets/tiny.toml")),
    ("garg2022-fig2", include_str!("../presets/garg2022-fig2.toml")),
    ("vo2023-fig4", include_str!("../presets/vo2023-fig4.toml")),
    ("vo2023-fig4-mlp-gd", include_str!("../presets/vo2023-fig4-mlp-gd.toml")),
];

impl RunConfig {
    /// A named config: a preset file ([`PRESETS`]), a figure model ([`KEYS`], full setting),
    /// Garg et al.'s sizes (`garg2022-tiny|small|standard`) or a point of Akyürek et al.'s grid
    /// (`akyurek2023-L<depth>-H<width>`). Defined here, beside every preset, so that the run
    /// config itself knows no paper.
    pub fn preset(name: &str) -> anyhow::Result<Self> {
        // Garg et al.'s model sizes on their linear-regression setting: garg2022-{tiny,small,standard}.
        if let Some(gpt) = name.strip_prefix("garg2022-").and_then(garg_size) {
            let mut c = Self::preset("garg2022-fig2")?;
            c.name = name.to_string();
            c.gpt = Some(gpt);
            return c.resolve();
        }
        // Akyürek et al.'s depth × width grid (Fig. 3): akyurek2023-L{1,2,4,8,12,16}-H{16,…,512}.
        if let Some(grid) = name.strip_prefix("akyurek2023-") {
            return akyurek_grid_preset(name, grid);
        }
        match PRESETS.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => Self::from_toml_str(text).with_context(|| format!("preset {name}")),
            None if KEYS.contains(&name) => Ok(model(name, false)?.config),
            None => {
                let names: Vec<&str> = PRESETS
                    .iter()
                    .map(|(n, _)| *n)
                    .chain(["garg2022-tiny", "garg2022-small", "garg2022-standard", "akyurek2023-L<depth>-H<width>"])
                    .chain(KEYS.iter().copied())
                    .collect();
                anyhow::bail!("unknown preset `{name}` (known: {})", names.join(", "))
            }
        }
    }
}

/// `train --preset`'s help, from the lists above (preset files, figure models, Garg et al.'s sizes,
/// Akyürek et al.'s grid), so that it names every preset there is.
pub fn preset_help() -> String {
    let files: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
    let list = |xs: &[usize]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    format!(
        "A named preset instead of a file: a preset file ({}; presets/*.toml), a figure model ({}), Garg et al.'s GPT-style model on their linear regression (garg2022-fig2 = garg2022-standard, garg2022-small, garg2022-tiny), or a point of Akyürek et al.'s depth × width grid (akyurek2023-L<{}>-H<{}>; d = 8, 4 heads)",
        files.join(", "),
        KEYS.join(", "),
        list(&AKYUREK_DEPTHS),
        list(&AKYUREK_WIDTHS)
    )
}

/// Garg et al.'s named GPT sizes (`conf/*.yaml`): tiny 3/2/64, small 6/4/128, standard 12/8/256.
pub fn garg_size(size: &str) -> Option<GptConfig> {
    match size {
        "tiny" => Some(GptConfig { layers: 3, heads: 2, width: 64 }),
        "small" => Some(GptConfig { layers: 6, heads: 4, width: 128 }),
        "standard" => Some(GptConfig { layers: 12, heads: 8, width: 256 }),
        _ => None,
    }
}

/// The run-name stem of Akyürek et al.'s phases models (`akyurek2023-phases-L<depth>[-quick]`).
pub const AKYUREK_PHASES: &str = "akyurek2023-phases";

/// Akyürek et al. 2023's phases model of one depth (Fig. 3): noiseless `gaussian_linear`, d = 8,
/// n ≤ 16, width 512 with 4 heads, 100,000 steps (the paper trains 500k); `quick`: d = 4, n ≤ 8,
/// width 32 with 2 heads, 6,000 steps at lr 1e-3.
pub fn akyurek2023(depth: usize, quick: bool) -> anyhow::Result<RunConfig> {
    let (d, n, width, heads, steps, lr) =
        if quick { (4, 8, 32, 2, 6000, 1e-3) } else { (8, 16, 512, 4, 100_000, 1e-4) };
    let mut c = RunConfig {
        name: format!("{AKYUREK_PHASES}-L{depth}{}", if quick { "-quick" } else { "" }),
        task: icl_tasks::TaskConfig::new("gaussian_linear").with("x_dim", d as i64).with("context_len", n as i64),
        ..RunConfig::default()
    };
    c.gpt = Some(GptConfig { layers: depth, heads, width });
    // A short curriculum (half the dimensions and points first) gets small models off the
    // initial plateau sooner; Akyürek et al. train without one.
    gpt_recipe(&mut c, d / 2, n, steps, lr, quick);
    c.resolve()
}

/// The training recipe of the lab's GPT-style figures beyond Garg's (Akyürek's phases and
/// probes, Fu et al.'s Newton): batch 64, Adam (β₂ 0.999 quick, Akyürek's 0.98 otherwise), a
/// curriculum from `dims_start` dimensions and n/2 + 1 points, evaluation every 1,000 (quick) or
/// 5,000 steps on 1,000 prompts.
pub fn gpt_recipe(c: &mut RunConfig, dims_start: usize, n: usize, steps: usize, lr: f64, quick: bool) {
    c.curriculum = Some(Curriculum {
        dims_start,
        dims_step: 1,
        points_start: n / 2 + 1,
        points_step: 2,
        every: if quick { 250 } else { 2000 },
    });
    c.train.steps = steps;
    c.train.batch = 64;
    c.train.lr = lr;
    c.train.beta2 = if quick { 0.999 } else { 0.98 };
    c.eval.every = if quick { 1000 } else { 5000 };
    c.eval.tasks = 1000;
}

/// Akyürek et al. 2023's depth × width grid (Fig. 3; icl-gd-spec.md §2) on the phases figure's
/// setting (d = 8, n ≤ 16, 4 heads): `akyurek2023-L<depth>-H<width>` for depth in
/// [`AKYUREK_DEPTHS`] and width in [`AKYUREK_WIDTHS`].
fn akyurek_grid_preset(name: &str, grid: &str) -> anyhow::Result<RunConfig> {
    let usage = || {
        format!(
            "unknown preset `{name}`: Akyürek's grid is akyurek2023-L<depth>-H<width> with depth in {:?} and width in {:?}",
            AKYUREK_DEPTHS, AKYUREK_WIDTHS
        )
    };
    let (depth, width) = grid
        .strip_prefix('L')
        .and_then(|g| g.split_once("-H"))
        .and_then(|(l, h)| Some((l.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!(usage()))?;
    anyhow::ensure!(AKYUREK_DEPTHS.contains(&depth) && AKYUREK_WIDTHS.contains(&width), usage());
    let mut c = akyurek2023(depth, false)?;
    c.name = name.to_string();
    c.gpt = Some(GptConfig { layers: depth, heads: 4, width });
    c.resolve()
}

/// The depths and widths of Akyürek et al.'s grid.
pub const AKYUREK_DEPTHS: [usize; 6] = [1, 2, 4, 8, 12, 16];
pub const AKYUREK_WIDTHS: [usize; 6] = [16, 32, 64, 128, 256, 512];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_resolve() {
        for (name, _) in PRESETS {
            RunConfig::preset(name).unwrap();
        }
    }

    #[test]
    fn every_paper_setting_fits_a_small_machine() {
        // The memory estimate of every preset, figure model and grid point (the paper's
        // settings included) is under 8 GiB, so none is refused on a CI-sized machine; the
        // estimate still grows with the sizes (a 1000-layer model of batch 2048 does not fit).
        let mut names: Vec<String> = PRESETS.iter().map(|(n, _)| n.to_string()).collect();
        names.extend(KEYS.iter().map(|k| k.to_string()));
        names.extend(["garg2022-tiny", "garg2022-small", "garg2022-standard"].map(String::from));
        names.extend(["akyurek2023-L16-H512", "akyurek2023-L1-H16"].map(String::from));
        for name in &names {
            let c = RunConfig::preset(name).unwrap();
            let total = c.memory().total();
            assert!(total < 8 << 30, "{name}: {}", crate::budget::gib(total));
        }
        let mut deep = RunConfig::preset("vo2023-fig2").unwrap();
        deep.model.layers = 1000;
        deep.model.init_scale = None;
        assert!(deep.memory().total() > 16 << 30, "{}", crate::budget::gib(deep.memory().total()));
    }
}
