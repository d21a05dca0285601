//! End-to-end tests of icl-lab: constructions against GD, training, probes (insta snapshots),
//! run directories and config errors. Tiny configs only; timing lives in `icl-lab bench`.

use std::path::Path;
use std::process::Command;

use icl_lab::cache::ActivationCache;
use icl_lab::config::RunConfig;
use icl_lab::construct::{check_construction, gd_model};
use icl_lab::layout;
use icl_lab::probe::probe_model;
use icl_lab::train::{train, RunMetrics, RunStatus, TrainOptions};
use rand::SeedableRng;
use tch::{Device, Kind};

fn preset(name: &str) -> RunConfig {
    RunConfig::preset(name).unwrap()
}

fn with_layers(layers: usize, recurrent: bool) -> RunConfig {
    let mut c = preset("vo2023-fig2");
    c.model.layers = layers;
    c.model.recurrent = recurrent;
    c.model.init_scale = None;
    c.train.grad_clip = None;
    c.resolve().unwrap()
}

/// Rounds every float in a JSON value to `digits` decimals, so snapshots hold stable numbers.
fn rounded(v: serde_json::Value, digits: i32) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            let p = 10f64.powi(digits);
            let r = (x * p).round() / p;
            serde_json::json!(if r == 0.0 { 0.0 } else { r })
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| rounded(x, digits)).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, x)| (k, rounded(x, digits))).collect()),
        other => other,
    }
}

// --- Proposition 1: the construction is GD -------------------------------------------------

#[test]
fn one_layer_construction_is_one_gd_step() {
    let check = check_construction(&with_layers(1, true), &[6.0], 500, 11).unwrap();
    assert!(check.max_abs_diff_f64 <= 1e-12, "{check:?}");
    assert!(check.max_abs_diff_f32 <= 1e-5, "{check:?}");
}

#[test]
fn k_recurrent_layers_are_k_gd_steps() {
    for k in [2, 3, 5] {
        let check = check_construction(&with_layers(k, true), &[4.0], 500, k as u64).unwrap();
        for (l, d) in check.per_layer_max_abs_diff_f64.iter().enumerate() {
            assert!(*d <= 1e-12, "K={k}, after layer {l}: {d:e}");
        }
        assert!(check.max_abs_diff_f32 <= 1e-5, "K={k}: {check:?}");
    }
}

#[test]
fn separate_layers_are_gd_steps_with_per_layer_eta() {
    let check = check_construction(&with_layers(3, false), &[6.0, 3.0, 9.0], 500, 3).unwrap();
    assert!(check.max_abs_diff_f64 <= 1e-12, "{check:?}");
    assert!(check.max_abs_diff_f32 <= 1e-5, "{check:?}");
}

#[test]
fn construction_on_other_shapes() {
    // d = 3, o = 2, N = 25: the construction is not tied to the paper's sizes.
    let mut c = with_layers(2, true);
    c.task.set("x_dim", 3);
    c.task.set("y_dim", 2);
    c.task.set("context_len", 25);
    c.model.key_size = None;
    let c = c.resolve().unwrap();
    let check = check_construction(&c, &[2.0], 300, 5).unwrap();
    assert!(check.max_abs_diff_f64 <= 1e-12, "{check:?}");
}

// --- The model and its activation cache ------------------------------------------------------

#[test]
fn cached_activations_agree_with_the_prediction() {
    // The last layer computes only the query row unless the cache asks for it: both paths agree.
    let config = with_layers(2, true);
    let (_vs, model) = gd_model(&config, &[5.0], Kind::Double, Device::Cpu).unwrap();
    let prompts = icl_tasks::build(&config.task).unwrap().sample(&mut icl_tasks::TaskRng::seed_from_u64(0), 64);
    let (tokens, _) = layout::tensors(config.model.tokens, &prompts, Kind::Double, Device::Cpu);
    let plain = model.forward(&tokens, None);
    let mut cache = ActivationCache::all();
    let cached = model.forward(&tokens, Some(&mut cache));
    let names: Vec<&str> = cache.names_recorded().collect();
    assert_eq!(
        names,
        [
            "layers.0.attn.out",
            "layers.0.attn.pattern",
            "layers.0.resid_post",
            "layers.1.attn.out",
            "layers.1.attn.pattern",
            "layers.1.resid_post",
            "tokens"
        ]
    );
    assert_eq!(cache.tensor("layers.1.resid_post").unwrap().size(), [64, 11, 11]);
    assert_eq!(cache.tensor("layers.0.attn.pattern").unwrap().size(), [64, 1, 11, 10]);
    let diff = f64::try_from((&plain - &cached).abs().max()).unwrap();
    assert!(diff <= 1e-12, "{diff}");
    let from_cache = model.readout(cache.tensor("layers.1.resid_post").unwrap());
    assert!(f64::try_from((&plain - &from_cache).abs().max()).unwrap() <= 1e-12);
    assert!(cache.array("nope").is_err());
}

// --- Probes, snapshotted ---------------------------------------------------------------------

#[test]
fn probe_outputs_on_the_constructed_model() {
    let mut config = with_layers(2, true);
    config.eval.tasks = 400;
    config.eval.fit_steps = 200;
    let (vs, model) = gd_model(&config, &[5.0], Kind::Double, Device::Cpu).unwrap();
    let report = probe_model(&config, &vs, &model.into(), None).unwrap();
    // The construction with η = 5 against GD with its own tuned η: near, not equal.
    let vs_gd = report.reference("gd").unwrap().vs;
    assert!(vs_gd.model_cos > 0.9, "{vs_gd:?}");
    assert!(report.reference("gd++").is_some());
    let mut json = serde_json::to_value(&report).unwrap();
    // Full weight matrices are long; the snapshot keeps their scale and residuals.
    for layer in json["weight_products"].as_array_mut().unwrap() {
        let layer = layer.as_object_mut().unwrap();
        for key in ["kq", "pv"] {
            let m = layer.remove(key).unwrap();
            let diag: Vec<f64> =
                m.as_array().unwrap().iter().enumerate().map(|(i, r)| r[i].as_f64().unwrap()).collect();
            layer.insert(format!("{key}_diagonal"), serde_json::json!(diag));
        }
    }
    insta::assert_json_snapshot!("probe_constructed_2_layer", rounded(json, 6));
}

#[test]
fn a_model_equal_to_gd_aligns_perfectly() {
    let mut config = with_layers(1, true);
    config.eval.tasks = 500;
    let p = icl_lab::evaluate::sample_prompts(&config.task, config.eval.tasks, config.eval.seed).unwrap();
    let eta = icl_lab::evaluate::tune_gd(&config, &p, &icl_probes::gd::LeastSquaresStats::new(&p)).eta;
    let (vs, model) = gd_model(&config, &[eta], Kind::Double, Device::Cpu).unwrap();
    let r = probe_model(&config, &vs, &model.into(), None).unwrap();
    let (gd, vs_gd) = (&r.reference("gd").unwrap().reference, r.reference("gd").unwrap().vs);
    assert!(vs_gd.preds_diff < 1e-12 && vs_gd.model_diff < 1e-12, "{vs_gd:?}");
    assert!((vs_gd.model_cos - 1.0).abs() < 1e-7);
    assert!((r.loss - gd.loss).abs() < 1e-12);
    assert!((r.interpolated_loss.unwrap() - gd.loss).abs() < 1e-12);
    assert!(r.weight_products[0].kq_residual < 1e-12 && r.weight_products[0].pv_residual < 1e-12);
    // The untrained control is far from GD.
    assert!(r.control_untrained.vs_gd.model_cos.abs() < 0.5, "{:?}", r.control_untrained);
}

// --- Training --------------------------------------------------------------------------------

fn tiny(name: &str) -> RunConfig {
    let mut c = preset("tiny");
    c.name = name.into();
    c
}

#[test]
fn tiny_training_learns_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("tiny-learns");
    let first = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let rows = &first.metrics.rows;
    let prompts = icl_lab::evaluate::sample_prompts(&config.task, config.eval.tasks, config.eval.seed).unwrap();
    let zero = prompts.half_mse(&ndarray::Array2::zeros(prompts.yq.raw_dim()));
    let last = rows.last().unwrap();
    assert_eq!(last.step, config.train.steps);
    assert!(last.loss < 0.5 * zero, "final loss {} vs zero predictor {zero}", last.loss);
    assert!(last.vs_gd().model_cos > 0.95, "{last:?}");
    assert!(rows[0].vs_gd().model_cos < 0.5, "the untrained model is not GD: {:?}", rows[0]);
    for file in ["config.toml", "metrics.json", "weights.safetensors"] {
        assert!(first.dir.join(file).exists(), "{file}");
    }
    assert!(!first.reused);
    // The same (config, seed) again: reused as is; forced: bit-identical numbers.
    let again = train(&config, dir.path(), TrainOptions::default()).unwrap();
    assert!(again.reused);
    // Read back from metrics.json, every number is the trained one to the last bit (serde_json's
    // default float parsing is not correctly rounded; the workspace enables `float_roundtrip`).
    let json = |m: &RunMetrics| serde_json::to_string(m).unwrap();
    assert_eq!(json(&first.metrics), json(&again.metrics));
    let forced = train(&config, dir.path(), TrainOptions { force: true, ..Default::default() }).unwrap();
    let losses = |m: &RunMetrics| m.rows.iter().map(|r| r.loss).collect::<Vec<_>>();
    assert_eq!(losses(&first.metrics), losses(&forced.metrics));
    // Another seed: other numbers.
    let other = train(&RunConfig { seed: 1, ..config.clone() }, dir.path(), TrainOptions::default()).unwrap();
    assert_ne!(losses(&first.metrics), losses(&other.metrics));
    // Nothing half-written is left behind.
    let stray: Vec<_> = std::fs::read_dir(&first.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.') && n != ".lock")
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn training_on_a_task_pool_records_the_pool_loss_and_memorises_a_single_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-pool");
    config.train.task_pool = Some(1);
    let config = config.resolve().unwrap();
    let run = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let rows = &run.metrics.rows;
    assert!(rows[0].train_loss.is_none(), "no training steps before the first evaluation");
    let last = rows.last().unwrap();
    let on_pool = last.train_loss.expect("pooled runs record their training loss");
    // One task: its W is learnable from the weights alone, so the training loss falls far below
    // the loss on fresh tasks, which the model has not learned to solve in context.
    assert!(on_pool < 0.5 * last.loss, "pool {on_pool} vs fresh {}", last.loss);
    // A fixed training set of 4 whole prompts (inputs repeat too): fitted far better than fresh tasks.
    let mut fixed = tiny("tiny-fixed");
    fixed.train.task_pool = Some(4);
    fixed.train.pool_inputs = icl_lab::config::PoolInputs::Fixed;
    let fixed = train(&fixed.resolve().unwrap(), dir.path(), TrainOptions::default()).unwrap();
    let fixed_last = fixed.metrics.rows.last().unwrap();
    assert!(fixed_last.train_loss.unwrap() < 0.5 * fixed_last.loss, "{fixed_last:?}");
    // The same model trained on a new task per prompt learns to solve fresh tasks.
    let fresh = train(&tiny("tiny-fresh"), dir.path(), TrainOptions::default()).unwrap();
    assert!(fresh.metrics.rows.iter().all(|r| r.train_loss.is_none()));
    assert!(fresh.metrics.rows.last().unwrap().loss < last.loss);
}

#[test]
fn a_pooled_run_meets_the_posterior_mean_over_its_own_pool() {
    // A run trained on one task: its comparison includes dMMSE over that pool (rebuilt from the
    // run's config and seed), and on the pool's prompts the model is near it.
    icl_lab::learners::register();
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-pool-dmmse");
    config.train.task_pool = Some(1);
    let config = config.resolve().unwrap();
    let run = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let (entrants, _) = icl_lab::tournament::load_entrants(std::slice::from_ref(&run.dir), &[], false).unwrap();
    let specs = icl_lab::tournament::default_candidates(&entrants);
    let dmmse = specs.iter().find(|s| s.name == "dmmse").expect("a pooled run's candidates include dmmse");
    assert_eq!(dmmse.params["pool_seed"], 0);
    assert_eq!(dmmse.params["pool_size"], 1);
    let pool_prompts = icl_lab::rng::prompts(config.training_task().as_ref(), 500, 3);
    let model = icl_lab::learners::ModelLearner::from_run(&run.dir, &config).unwrap().without_sensitivity();
    use icl_probes::learner::Learner;
    let preds = model.predict(&pool_prompts).unwrap().preds;
    let posterior = icl_probes::learner::fit(dmmse, None).unwrap().predict(&pool_prompts).unwrap().preds;
    // dMMSE over one task is that task: the targets themselves (noise-free).
    assert!((&posterior - &pool_prompts.yq).iter().all(|e| e.abs() < 1e-9));
    let to = |b: &ndarray::Array2<f64>| (&preds - b).iter().map(|e| e * e).sum::<f64>();
    assert!(
        to(&posterior) < 0.5 * to(&ndarray::Array2::zeros(preds.raw_dim())),
        "{} vs {}",
        to(&posterior),
        to(&ndarray::Array2::zeros(preds.raw_dim()))
    );
    // Two seeds draw two pools: no one dMMSE applies to both, so it is left out.
    let other = train(&RunConfig { seed: 1, ..config.clone() }, dir.path(), TrainOptions::default()).unwrap();
    let both = vec![run.dir.clone(), other.dir.clone()];
    let entrants =
        vec![icl_lab::tournament::LoadedEntrant::from_dirs(both, icl_lab::tournament::Role::Trained).unwrap()];
    assert!(!icl_lab::tournament::default_candidates(&entrants).iter().any(|s| s.name == "dmmse"));
}

#[test]
fn the_per_head_split_of_a_softmax_layer_adds_up_to_its_cached_output() {
    // A 2-head softmax model at a large random initialisation (so both terms are far from zero).
    let mut config = tiny("tiny-heads");
    config.model.softmax = true;
    config.model.heads = 2;
    config.model.init_scale = Some(2.0);
    let config = config.resolve().unwrap();
    let (vs, net) = icl_lab::runs::initial_model(&config, tch::Device::Cpu).unwrap();
    let weights = icl_lab::models::transformer::named_weights(&vs).unwrap();
    let prompts = icl_lab::evaluate::sample_prompts(&config.task, 64, 3).unwrap();
    let split = icl_lab::figures::vo2023_fig11::split_heads(&net, &weights, &prompts, 2).unwrap();
    assert!(split.recompute_error() < 1e-5, "{}", split.recompute_error());
    for b in 0..prompts.batch() {
        // One layer: the prediction is minus the query's y-entry, 0 + the attention output.
        let total: f64 = (0..2).map(|h| split.constant[h][b] + split.linear[h][b]).sum();
        assert!((split.preds[[b, 0]] + total).abs() < 1e-5, "prompt {b}");
    }
    assert!(split.constant[0].iter().chain(&split.linear[1]).any(|v| v.abs() > 1e-3), "terms are not trivially zero");
}

#[test]
fn run_directories_cannot_lie() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-manifest");
    config.train.steps = 20;
    config.eval.every = 10;
    config.eval.tasks = 100;
    let first = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let manifest = icl_lab::runs::verify(&first.dir, &config).unwrap();
    assert_eq!(manifest.weights_step, 20);
    assert!(train(&config, dir.path(), TrainOptions::default()).unwrap().reused);

    // Truncated weights: not reused, trained again, consistent afterwards.
    let weights = first.dir.join("weights.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(icl_lab::runs::verify(&first.dir, &config).unwrap_err().contains("weights.safetensors"));
    // Leftovers of a killed writer and a probe of the old weights are cleared by retraining.
    std::fs::write(first.dir.join(".partial-x.safetensors"), b"half").unwrap();
    std::fs::write(first.dir.join(".tmpABC"), b"half").unwrap();
    // Every file derived from the old weights goes too (probe, activations, interventions).
    for derived in icl_lab::runs::DERIVED_FILES {
        std::fs::write(first.dir.join(derived), b"{}").unwrap();
    }
    assert_eq!(icl_lab::runs::DERIVED_FILES.len(), 3);
    let again = train(&config, dir.path(), TrainOptions::default()).unwrap();
    assert!(!again.reused);
    assert!(icl_lab::runs::verify(&again.dir, &config).is_ok());
    for gone in [".partial-x.safetensors", ".tmpABC"].iter().chain(icl_lab::runs::DERIVED_FILES) {
        assert!(!again.dir.join(gone).exists(), "{gone}");
    }

    // Another config under the same name and seed never passes for this run.
    let mut other = config.clone();
    other.train.lr *= 2.0;
    assert!(icl_lab::runs::verify(&again.dir, &other).unwrap_err().contains("another config"));

    // A second process on the same run directory waits for the lock, then decides: here it
    // reuses what the first left (two `train` runs started together train once).
    let held = icl_lab::runs::lock(&again.dir).unwrap();
    let err = format!("{:#}", icl_lab::runs::try_lock(&again.dir).err().unwrap());
    assert!(err.contains("in use by another icl-lab process") && !err.contains('\n'), "{err}");
    let waiter = {
        let (config, root) = (config.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let out = train(&config, &root, TrainOptions::default()).unwrap();
            (out.reused, start.elapsed())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(400));
    drop(held);
    let (reused, waited) = waiter.join().unwrap();
    assert!(reused && waited >= std::time::Duration::from_millis(350), "reused {reused}, waited {waited:?}");
    assert!(icl_lab::runs::verify(&again.dir, &config).is_ok());

    // Only a holder of the run's lock writes its manifest; a run without one is adopted (under
    // the lock) only if its weights are the config's model.
    let lock = icl_lab::runs::lock(&again.dir).unwrap();
    let other_dir = dir.path().join("elsewhere");
    std::fs::create_dir_all(&other_dir).unwrap();
    assert!(icl_lab::runs::write_manifest(&other_dir, &config, 20, 20, &lock).is_err(), "another directory's lock");
    drop(lock);
}

// --- A learned feature map under fixed attention (von Oswald et al. Fig. 4) -----------------

fn feature_map_config(name: &str, embed: Option<usize>, eta: f64) -> RunConfig {
    let mut c = tiny(name);
    c.model.embed = embed;
    c.model.input_mlp = true;
    c.model.fixed_attention = Some(icl_lab::config::FixedAttention { learner: "gd".into(), eta });
    c.model.key_size = None;
    c.resolve().unwrap()
}

#[test]
fn fixed_gd_attention_on_identity_features_is_one_gd_step() {
    // No embedding and the input MLP zeroed: the features are the tokens, so the model must be
    // exactly one GD step (Proposition 1) with the fixed η, and its pre-attention readout zero.
    let config = feature_map_config("fixed-gd-identity", None, 0.7);
    let dims = config.dims();
    let (vs, model) = icl_lab::models::Transformer::new_in_store(&config.model, dims, Kind::Double, Device::Cpu);
    icl_lab::models::Transformer::init(&vs, 0.002, &mut icl_tasks::TaskRng::seed_from_u64(3));
    model.load_fixed_attention(&vs).unwrap();
    let mut zeros = icl_probes::NamedWeights::new();
    let width = dims.x_dim + dims.y_dim;
    zeros.insert("input_mlp.w1".into(), ndarray::Array2::zeros((width, 4 * width)));
    zeros.insert("input_mlp.w2".into(), ndarray::Array2::zeros((4 * width, width)));
    icl_lab::models::transformer::load_weights(&vs, &zeros).unwrap();
    let prompts = icl_tasks::build(&config.task).unwrap().sample(&mut icl_tasks::TaskRng::seed_from_u64(5), 300);
    let (tokens, _) = layout::tensors(config.model.tokens, &prompts, Kind::Double, Device::Cpu);
    let mut cache = ActivationCache::names(&[icl_lab::cache::FEATURES]);
    let preds = model.forward(&tokens, Some(&mut cache));
    let preds = icl_lab::cache::tensor_to_array(&preds).unwrap().into_dimensionality::<ndarray::Ix2>().unwrap();
    let stats = icl_probes::gd::LeastSquaresStats::new(&prompts);
    let gd = icl_probes::gd::predict(&icl_probes::gd::gd_weights(&stats, &[0.7])[0], &prompts.xq);
    let worst = (&preds - &gd).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(worst <= 1e-12, "fixed GD attention vs one GD step: {worst:e}");
    assert!(gd.iter().any(|v| v.abs() > 0.1), "GD predictions are not trivially zero");
    let features = cache.tensor(icl_lab::cache::FEATURES).unwrap();
    assert_eq!(f64::try_from((features - &tokens).abs().max()).unwrap(), 0.0, "features are the tokens");
}

#[test]
fn fixed_attention_does_not_train_and_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = feature_map_config("fixed-gd-train", Some(12), 0.4);
    config.train.steps = 20;
    config.train.snapshots = true;
    config.eval.every = 10;
    config.eval.tasks = 100;
    let config = config.resolve().unwrap();
    assert_eq!(config.engine(), icl_lab::config::Engine::Libtorch);
    let run = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let (vs, _) = icl_lab::runs::load_run(&run.dir, &config, Device::Cpu).unwrap();
    let weights = icl_lab::models::transformer::named_weights(&vs).unwrap();
    // The attention is still the construction (width 12: 11 feature dims, 1 target dim).
    let construction = icl_probes::construct::gd_construction(11, 1, config.dims().context_len, &[0.4]);
    for (name, want) in &construction {
        let got = &weights[name];
        let worst = (got - want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(worst <= 1e-7, "{name} moved by {worst:e}");
    }
    // Snapshots at steps 0, 10, 20; the feature map moved between them, the last is the final weights.
    let snaps = icl_lab::runs::load_snapshots(&run.dir, &config, Device::Cpu).unwrap();
    assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 10, 20]);
    let first = icl_lab::models::transformer::named_weights(&snaps[0].1).unwrap();
    let last = icl_lab::models::transformer::named_weights(&snaps[2].1).unwrap();
    assert_ne!(first["embed.w"], last["embed.w"], "the embedding trained");
    for (name, w) in &weights {
        assert_eq!(&last[name], w, "{name}: last snapshot vs weights.safetensors");
    }
    // The snapshots are part of the run: a damaged file is caught by the manifest.
    let manifest = icl_lab::runs::verify(&run.dir, &config).unwrap();
    assert!(manifest.files.contains_key(icl_lab::runs::SNAPSHOTS));
    let path = run.dir.join(icl_lab::runs::SNAPSHOTS);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
    assert!(icl_lab::runs::verify(&run.dir, &config).unwrap_err().contains(icl_lab::runs::SNAPSHOTS));
    // Configs without the new keys serialise as before (their run hashes do not move).
    let plain = tiny("plain").to_toml();
    for key in ["embed", "input_mlp", "fixed_attention", "snapshots"] {
        assert!(!plain.contains(key), "{key} in {plain}");
    }
}

#[test]
fn tiny_multi_layer_training_learns() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-2-layers");
    config.model.layers = 2;
    config.model.init_scale = None;
    config.train.steps = 600;
    config.train.lr = 0.003;
    let config = config.resolve().unwrap();
    let out = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let last = out.metrics.rows.last().unwrap();
    assert_eq!(out.metrics.reference("gd").unwrap().etas.len(), 2);
    // Two recurrent layers reach (here: beat) two tuned GD steps, as GD++ does (von Oswald et al. §4).
    assert!(last.loss < 1.2 * out.metrics.reference("gd").unwrap().loss, "{last:?}");
}

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-diverges");
    config.train.lr = 1e20;
    config.train.grad_clip = Some(1e12);
    config.train.steps = 50;
    config.eval.every = 1;
    config.eval.tasks = 100;
    let err = train(&config, dir.path(), TrainOptions::default()).err().expect("lr 1e20 must diverge");
    let msg = format!("{err:#}");
    assert!(msg.starts_with("training diverged: ") && msg.contains("kept in"), "{msg}");
    let run = dir.path().join("tiny-diverges/seed-0");
    let metrics: RunMetrics = serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics.status, RunStatus::Diverged);
    assert!(run.join("weights.safetensors").exists());
    let last_good = metrics.rows.last().unwrap();
    assert!(last_good.loss.is_finite());
    assert_eq!(last_good.step, metrics.weights_step);
}

// --- Configs and the command line ------------------------------------------------------------

#[test]
fn bad_configs_are_one_line_errors_naming_the_field() {
    // The corpus's configs, parsed in process (the corpus test runs them through the binary).
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inputs/configs");
    for entry in std::fs::read_dir(corpus).unwrap() {
        let path = entry.unwrap().path();
        let toml = std::fs::read_to_string(&path).unwrap();
        let field = toml.lines().next().and_then(|l| l.strip_prefix("# expect: ")).unwrap();
        let err = format!("{:#}", RunConfig::from_toml_str(&toml).unwrap_err());
        assert!(err.contains(field), "{} → {err}", path.display());
        assert!(!err.contains('\n'), "{} → multi-line error {err}", path.display());
    }
}

fn icl_lab(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_icl-lab"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// Runs `icl-lab tournament <args>` in `dir`, writing report `name` to `r/` and its figure to
/// `f/`, and reads the report's JSON back.
fn tournament(dir: &Path, name: &str, args: &[&str]) -> icl_lab::tournament::TournamentReport {
    let mut all = vec!["tournament"];
    all.extend_from_slice(args);
    all.extend(["--name", name, "--reports", "r", "--figures", "f"]);
    let out = icl_lab(&all, dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&std::fs::read(dir.join("r").join(format!("{name}.json"))).unwrap()).unwrap()
}

#[test]
fn the_cli_reports_bad_configs_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[train]\nlr = -1.0\n").unwrap();
    let out = icl_lab(&["train", "--config", "bad.toml"], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error:") && stderr.contains("train.lr"), "{stderr}");
    assert!(!dir.path().join("runs").exists(), "nothing written for a bad config");
}

#[test]
fn cli_misuse_is_a_one_line_error_and_huge_seeds_work() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["construct", "--layers", "3", "--separate", "--eta", "1,2"][..],
        &["construct", "--tasks", "100000000"][..],
        &["reproduce", "vo2023-fig2", "--steps", "10"][..],
    ] {
        let out = icl_lab(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:") && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // Seeds span the whole u64 range (TOML integers stop at 2⁶³ − 1: larger ones are strings).
    let huge = u64::MAX.to_string();
    let out = icl_lab(&["train", "--preset", "tiny", "--seed", &huge, "--steps", "3"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.path().join(format!("runs/tiny/seed-{huge}"));
    let stored = RunConfig::from_file(&run.join("config.toml")).unwrap();
    assert_eq!(stored.seed, u64::MAX);
    // A loss that explodes without turning NaN is divergence too: stopped, last good weights kept.
    std::fs::write(
        dir.path().join("hot.toml"),
        "name = \"hot\"\n[train]\nsteps = 300\nlr = 100.0\ngrad_clip = 1e9\n[eval]\nevery = 10\ntasks = 200\n",
    )
    .unwrap();
    let out = icl_lab(&["train", "--config", "hot.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("diverged"), "{stderr}");
    let metrics: RunMetrics =
        serde_json::from_slice(&std::fs::read(dir.path().join("runs/hot/seed-0/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics.status, RunStatus::Diverged);
    assert!(metrics.rows.iter().all(|r| r.loss <= icl_lab::train::DIVERGED_LOSS));
}

/// The arguments of a `--help` text that have no description of their own (only a default).
fn arguments_without_help(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut bare = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if !(2..=6).contains(&indent) || !(t.starts_with('-') || t.starts_with('<') || t.starts_with('[')) {
            continue;
        }
        // Short layout: the description follows on the same line after two spaces; long layout:
        // on the next, indented further.
        let same_line = t.split_once("  ").map(|(_, rest)| rest.trim()).unwrap_or("");
        let next =
            lines.get(i + 1).map_or("", |l| if l.len() - l.trim_start().len() > indent + 2 { l.trim() } else { "" });
        let text = if same_line.is_empty() { next } else { same_line };
        if text.is_empty() || text.starts_with("[default") || text.starts_with("[possible") {
            bare.push(t.split("  ").next().unwrap_or(t).to_string());
        }
    }
    bare
}

#[test]
fn every_command_and_argument_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &["train"],
        &["reproduce"],
        &["construct"],
        &["probe"],
        &["activations"],
        &["index"],
        &["bench"],
        &["curve"],
        &["tournament"],
        &["probe-layers"],
        &["list"],
        &["sweep", "plan"],
        &["sweep", "run"],
        &["sweep", "slurm"],
        &["sweep", "collect"],
    ];
    for cmd in commands {
        let out = icl_lab(&[cmd, &["--help"][..]].concat(), dir.path());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("Usage:"), "{cmd:?}");
        assert_eq!(arguments_without_help(&help), Vec::<String>::new(), "{cmd:?}: arguments without help");
    }
    // The shift help names every kind there is.
    let out = icl_lab(&["curve", "--help"], dir.path());
    for kind in icl_tasks::ShiftKind::ALL {
        assert!(String::from_utf8_lossy(&out.stdout).contains(kind.name()), "curve --help lacks {}", kind.name());
    }
    // The detector finds a bare argument.
    assert_eq!(arguments_without_help("Options:\n      --seed <SEED>  [default: 0]\n"), ["--seed <SEED>"]);
}

#[test]
fn construct_and_probe_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = icl_lab(&["construct", "--layers", "2", "--eta", "5", "--tasks", "200", "--out", "cons"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(check["max_abs_diff_f64"].as_f64().unwrap() <= 1e-12);
    let out = icl_lab(&["probe", "cons", "--json"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probe["per_layer_loss"].as_array().unwrap().len(), 2);
    assert!(dir.path().join("cons/probe.json").exists());
}

#[test]
fn the_tournament_ranks_gd_first_for_the_gd_construction_and_zero_for_its_untrained_twin() {
    let dir = tempfile::tempdir().unwrap();
    let out = icl_lab(&["construct", "--layers", "2", "--eta", "5", "--tasks", "100", "--out", "cons"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = tournament(
        dir.path(),
        "t",
        &[
            "cons",
            "--learners",
            "gd(steps=1,eta=5),ridge,zero",
            "--n",
            "10",
            "--prompts",
            "64",
            "--tuning-prompts",
            "256",
            "--orders",
            "3",
        ],
    );
    for layer in [1, 2] {
        let spd = report
            .ranking
            .iter()
            .find(|r| r.layer == Some(layer) && r.metric == "spd" && !r.model.contains("untrained"))
            .unwrap();
        // Layer l of the construction is l GD steps with η = 5, to f32 rounding (at n = N only: the
        // construction's step is η/N with the training N, GD's is η/n).
        assert_eq!(spd.order[0].learner, "gd(eta=5, steps=1)", "layer {layer}: {:?}", spd.order);
        assert!(spd.order[0].value < 1e-10, "layer {layer}: SPD/d {}", spd.order[0].value);
        assert!(spd.margin > 1e-4, "layer {layer}: margin {}", spd.margin);
        let twin = report
            .ranking
            .iter()
            .find(|r| r.layer == Some(layer) && r.metric == "spd" && r.model.contains("untrained"))
            .unwrap();
        assert_eq!(twin.order[0].learner, "zero", "the untrained twin predicts ~0: {:?}", twin.order);
    }
    let cos = report
        .ranking
        .iter()
        .find(|r| r.layer == Some(2) && r.metric == "model_cos" && !r.model.contains("untrained"))
        .unwrap();
    assert_eq!(cos.order[0].learner, "gd(eta=5, steps=1)");
    assert!(cos.order[0].value > 1.0 - 1e-6);
    // Its influence profile ∂ŷ/∂y is GD's smoother after each layer (not least squares' or averaging's).
    for layer in [1, 2] {
        let influence = report
            .ranking
            .iter()
            .find(|r| r.layer == Some(layer) && r.metric == "influence_cos" && !r.model.contains("untrained"))
            .unwrap();
        assert_eq!(influence.order[0].learner, "gd(eta=5, steps=1)", "layer {layer}: {:?}", influence.order);
        assert!(influence.order[0].value > 1.0 - 1e-5, "layer {layer}: {:?}", influence.order);
        assert!(influence.order[1].value < 0.999, "layer {layer}: {:?}", influence.order);
    }
    // The construction sees its context as a set: no order sensitivity beyond f32 rounding.
    let spread = report
        .measurements
        .iter()
        .filter(|m| m.metric == "permutation_spread" && m.model.as_deref() == Some("construction"));
    assert!(spread.clone().count() == 2 && spread.clone().all(|m| m.value < 1e-5));
    for metric in ["spd", "ilwd", "model_cos", "preds_diff"] {
        assert!(report.measurements.iter().any(|m| m.metric == metric && m.n_context == Some(10)), "{metric}");
    }
    insta::assert_json_snapshot!("tournament_gd_construction", spd_rankings(&report));
    assert!(
        dir.path().join("r/t.md").exists()
            && dir.path().join("f/t/spd.png").exists()
            && dir.path().join("f/t/spd.svg").exists()
    );
}

/// The SPD rankings of a tournament, rounded for a snapshot: per (model, layer) the candidates in
/// order with SPD/d to 4 decimals (the winners' ≈ 1e-12 rounds to 0; candidates that round to
/// the same value are listed by name, so float noise cannot reorder a tie).
fn spd_rankings(report: &icl_lab::tournament::TournamentReport) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = report
        .ranking
        .iter()
        .filter(|r| r.metric == "spd")
        .map(|r| {
            let mut order: Vec<(f64, String)> =
                r.order.iter().map(|c| ((c.value * 1e4).round() / 1e4, c.learner.clone())).collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            let order: Vec<serde_json::Value> = order.into_iter().map(|(v, l)| serde_json::json!([l, v])).collect();
            serde_json::json!({ "model": r.model, "layer": r.layer, "order": order })
        })
        .collect();
    rounded(serde_json::Value::Array(rows), 4)
}

#[test]
fn the_tournament_ranks_gdpp_first_for_the_gdpp_construction() {
    use icl_probes::construct::gdpp_construction;
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_layers(2, true);
    config.name = "gdpp-construction".into();
    let dims = config.dims();
    let (vs, _) = icl_lab::models::Transformer::new_in_store(&config.model, dims, Kind::Float, Device::Cpu);
    icl_lab::models::transformer::load_weights(&vs, &gdpp_construction(10, 1, 10, &[13.0], &[0.17])).unwrap();
    let run = dir.path().join("gdpp");
    icl_lab::construct::write_run(&run, &config.resolve().unwrap(), &vs).unwrap();
    let report = tournament(
        dir.path(),
        "t",
        &[
            "gdpp",
            "--no-untrained",
            "--learners",
            "gd++(steps=1,eta=13,gamma=0.17),gd(steps=1,eta=13),ridge,zero",
            "--n",
            "10",
            "--prompts",
            "64",
            "--tuning-prompts",
            "256",
            "--orders",
            "2",
        ],
    );
    // One GD++ step equals one GD step (the y-update reads the inputs before preconditioning), so
    // layer 1 is a tie of the two at SPD ≈ 0 and layer 2 separates them.
    let first = report.ranking.iter().find(|r| r.layer == Some(1) && r.metric == "spd").unwrap();
    let mut tied: Vec<&str> = first.order[..2].iter().map(|c| c.learner.as_str()).collect();
    tied.sort();
    assert_eq!(tied, ["gd(eta=13, steps=1)", "gd++(eta=13, gamma=0.17, steps=1)"], "layer 1: {:?}", first.order);
    assert!(first.order[..2].iter().all(|c| c.value < 1e-10), "layer 1: {:?}", first.order);
    // The report names the tie and measures the margin to the first different learner.
    assert_eq!(first.tied_with_best, [first.order[1].learner.clone()], "layer 1: {:?}", first.order);
    let beyond = first.beyond_tie.as_ref().expect("ridge and zero are not tied with GD");
    assert_eq!(beyond.against, "ridge");
    assert!(beyond.min > 1e-3, "layer 1: margin beyond the tie {beyond:?}");
    let md = std::fs::read_to_string(dir.path().join("r/t.md")).unwrap();
    let (gdpp, gd) = ("gd++(eta=13, gamma=0.17) (1 step)", "gd(eta=13) (1 step)");
    assert!(md.contains(&format!("{gdpp} = {gd}")) || md.contains(&format!("{gd} = {gdpp}")), "{md}");
    let second = report.ranking.iter().find(|r| r.layer == Some(2) && r.metric == "spd").unwrap();
    assert_eq!(second.order[0].learner, "gd++(eta=13, gamma=0.17, steps=1)", "layer 2: {:?}", second.order);
    assert!(second.order[0].value < 1e-10, "layer 2: SPD/d {}", second.order[0].value);
    assert!(second.margin > 1e-6, "GD++ vs GD at layer 2: margin {}", second.margin);
    insta::assert_json_snapshot!("tournament_gdpp_construction", spd_rankings(&report));
}

#[test]
fn probe_layers_writes_a_row_per_model_layer_target_and_feature_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = icl_lab(&["construct", "--layers", "1", "--eta", "5", "--tasks", "100", "--out", "cons"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = [
        "probe-layers",
        "cons",
        "--fit-prompts",
        "300",
        "--test-prompts",
        "200",
        "--mlp-steps",
        "30",
        "--pool-steps",
        "30",
        "--name",
        "p",
        "--reports",
        "r",
        "--figures",
        "f",
    ];
    let out = icl_lab(&args, dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("layer 1: w "));
    let report: icl_lab::layer_probes::LayerProbeReport =
        serde_json::from_slice(&std::fs::read(dir.path().join("r/p.json")).unwrap()).unwrap();
    // 2 models (construction, untrained twin) × layers 0–1 × (2 linear + 1 MLP + 1 attention-pooling
    // probe) × 4 targets × 2 metrics.
    assert_eq!(report.measurements.len(), 2 * 2 * 4 * 4 * 2);
    let (pooled, _, _) = report.value("construction", 1, "pooled_probe", "w", "attention_pool", "r2");
    assert!(pooled.is_finite(), "the pooled probe has rows");
    // y = w·x is bilinear in (w, x): no linear map of the raw tokens recovers w.
    let (r2, _, _) = report.value("construction", 0, "linear_probe", "w", "all_tokens", "r2");
    assert!(r2 < 0.1, "w linearly decoded from raw tokens: R² {r2}");
    assert!(dir.path().join("f/p/r2.png").exists() && dir.path().join("r/p.md").exists());
}

// --- GD++ and per-layer references -----------------------------------------------------------

#[test]
fn fitted_gdpp_matches_the_paper_for_two_recurrent_layers() {
    use icl_lab::references::{fit_references, FitOptions};
    let config = with_layers(2, true);
    let eval = icl_lab::evaluate::sample_prompts(&config.task, 4000, 10).unwrap();
    let refs = fit_references(&config, &eval, FitOptions::default()).unwrap();
    let (gd, pp) = (&refs[0], &refs[1]);
    // spec §6: 2-step GD ≈ 0.158, 2-step GD++ ≈ 0.114 at η ≈ 13, γ ≈ 0.17 (paper's learned γ: 0.179).
    assert!((gd.loss - 0.158).abs() < 0.01, "{gd:?}");
    assert!((pp.loss - 0.114).abs() < 0.008, "{pp:?}");
    assert!((pp.gammas[0] - 0.175).abs() < 0.03, "{pp:?}");
    assert_eq!(pp.etas[0], pp.etas[1], "recurrent: one (η, γ)");
}

#[test]
fn gdpp_construction_is_exact_in_the_transformer() {
    use icl_probes::construct::gdpp_construction;
    use icl_probes::gdpp::gdpp_weights;
    for (recurrent, etas, gammas) in
        [(true, vec![13.0], vec![0.17]), (false, vec![6.0, 9.0, 12.0], vec![0.1, 0.2, 0.05])]
    {
        let config = with_layers(3, recurrent);
        let dims = icl_tasks::build(&config.task).unwrap().dims();
        let (vs, model) = icl_lab::models::Transformer::new_in_store(&config.model, dims, Kind::Double, Device::Cpu);
        icl_lab::models::transformer::load_weights(&vs, &gdpp_construction(10, 1, 10, &etas, &gammas)).unwrap();
        let p = icl_tasks::build(&config.task).unwrap().sample(&mut icl_tasks::TaskRng::seed_from_u64(9), 300);
        let (tokens, _) = layout::tensors(config.model.tokens, &p, Kind::Double, Device::Cpu);
        let per_layer = icl_lab::probe::per_layer_predictions(&model, &tokens, Default::default()).unwrap();
        let applied = |v: &Vec<f64>| if recurrent { vec![v[0]; 3] } else { v.clone() };
        let refs = gdpp_weights(&p, &applied(&etas), &applied(&gammas));
        for (l, (got, w)) in per_layer.iter().zip(&refs).enumerate() {
            let want = icl_probes::gd::predict(w, &p.xq);
            let err = (got - &want).iter().fold(0.0f64, |m, e| m.max(e.abs()));
            assert!(err <= 1e-12, "recurrent={recurrent} layer {l}: {err:e}");
        }
        // Not only the readout: every token after layer l holds what l GD++ steps say
        // (preconditioned context inputs, residual labels, the query's M x_q and −W x_q).
        let all = applied(&etas);
        let all_gammas = applied(&gammas);
        for l in 1..=3 {
            let (max_abs, rel) =
                icl_lab::probe::token_residual(&model, &tokens, &p, l, &all[..l], &all_gammas[..l]).unwrap();
            assert!(max_abs <= 1e-10, "recurrent={recurrent} layer {l}: tokens off by {max_abs:e}");
            assert!(rel <= 1e-12, "recurrent={recurrent} layer {l}: relative {rel:e}");
        }
        // The statement is specific: the same tokens are far from plain GD's (γ = 0).
        let (_, rel_gd) = icl_lab::probe::token_residual(&model, &tokens, &p, 3, &all, &[0.0; 3]).unwrap();
        assert!(rel_gd > 1e-3, "GD++ tokens should not match GD's: {rel_gd:e}");
    }
}

#[test]
fn a_rolled_out_construction_is_gd_with_the_dampened_rate() {
    // Fig. 10's premise: repeating a GD layer with y-only updates and dampening λ is GD with λ·η.
    let config = with_layers(1, true);
    let (_vs, model) = gd_model(&config, &[6.0], Kind::Double, Device::Cpu).unwrap();
    let p = icl_tasks::build(&config.task).unwrap().sample(&mut icl_tasks::TaskRng::seed_from_u64(4), 200);
    let (tokens, _) = layout::tensors(config.model.tokens, &p, Kind::Double, Device::Cpu);
    let opts = icl_lab::models::transformer::ForwardOptions { repeats: Some(7), dampening: 0.75, y_update: true };
    let per_layer = icl_lab::probe::per_layer_predictions(&model, &tokens, opts).unwrap();
    let gd = icl_probes::gd::gd_weights(&icl_probes::gd::LeastSquaresStats::new(&p), &[4.5; 7]);
    assert_eq!(per_layer.len(), 7);
    for (l, (got, w)) in per_layer.iter().zip(&gd).enumerate() {
        let err = (got - &icl_probes::gd::predict(w, &p.xq)).iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(err <= 1e-12, "step {l}: {err:e}");
    }
}

#[test]
fn classic_tokens_with_positions_train_and_probe() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-classic");
    config.model.tokens = icl_lab::layout::TokenLayout::Classic;
    config.model.pos_enc = 4;
    config.model.layers = 2;
    config.model.recurrent = false;
    config.model.first_layer_softmax = true;
    config.model.key_size = None;
    config.model.init_scale = None;
    config.train.steps = 100;
    config.eval.gd_steps = Some(1);
    let config = config.resolve().unwrap();
    assert_eq!(config.model.key_size, Some(4 + 4), "width = d + positional encoding");
    let out = train(&config, dir.path(), TrainOptions::default()).unwrap();
    assert_eq!(out.metrics.reference("gd").unwrap().etas.len(), 1, "compared with one GD step");
    assert!(out.metrics.rows.last().unwrap().loss.is_finite());
    let (_, net) = icl_lab::runs::load_run(&out.dir, &config, Device::Cpu).unwrap();
    let p = icl_lab::evaluate::sample_prompts(&config.task, 50, 1).unwrap();
    let (tokens, _) = layout::tensors(config.model.tokens, &p, Kind::Float, Device::Cpu);
    assert_eq!(tokens.size(), [50, 17, 4], "2N+1 tokens of width d");
    let copy = icl_lab::probe::copy_analysis(&net, &tokens).unwrap();
    assert_eq!(copy.own.len(), 15);
    assert!(copy.own.iter().chain(&copy.next).chain(&copy.other).all(|v| v.is_finite() && *v >= 0.0));
}

// --- The spine: tasks own their parameters, learners, curves, rows -----------------------------

#[path = "support/quadratic.rs"]
mod quadratic;

#[test]
fn a_task_defined_in_one_file_trains_probes_and_draws_its_curve() {
    // The README's "Adding a task": one file (tests/support/quadratic.rs) and its registry entry.
    icl_tasks::register(quadratic::ENTRY).unwrap();
    let config = RunConfig::from_toml_str(
        "name = \"quad\"\n[task]\nname = \"quadratic\"\nx_dim = 3\ncontext_len = 8\n\
         [train]\nsteps = 120\nbatch = 256\nlr = 0.01\ngrad_clip = 1.0\n[eval]\nevery = 60\ntasks = 300\n",
    )
    .unwrap();
    // The task's own keys were parsed and its defaults stored in the resolved config.
    assert_eq!(config.task.params["input_scale"], 1.0);
    assert!(format!("{:#}", RunConfig::from_toml_str("[task]\nname = \"quadratic\"\nsparsity = 2").unwrap_err())
        .contains("task.sparsity: unknown key for task `quadratic`"));
    let dir = tempfile::tempdir().unwrap();
    let run = train(&config, dir.path(), TrainOptions::default()).unwrap();
    assert!(run.metrics.rows.last().unwrap().loss.is_finite());
    // Probe it through the CLI.
    let out = icl_lab(&["probe", run.dir.to_str().unwrap()], dir.path());
    // The CLI is another process: it does not know a task registered here, and says so in one line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unknown task `quadratic`"), "{stderr}");
    // In-process, the curve has every learner the task names and the trained run, at every n.
    let task = config.task();
    let opts = icl_probes::curve::CurveOptions {
        prompts: 200,
        tuning_prompts: 200,
        n_values: vec![0, 4, 8],
        ..Default::default()
    };
    let runs = [icl_lab::curve::RunOnCurve::load(&run.dir).unwrap()];
    let rows = icl_lab::curve::measure(task.as_ref(), &task.learners(), &runs, true, &opts).unwrap();
    let learners: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(learners.into_iter().collect::<Vec<_>>(), ["knn", "least_squares", "model", "zero"]);
    assert_eq!(rows.len(), (3 + 1) * 3, "3 learners and the 1-layer model at 3 values of n");
    assert!(rows.iter().all(|r| r.value.is_finite() && r.task == "quadratic" && r.metric == "normalised_error"));
    let files = icl_lab::curve::write(
        dir.path(),
        &icl_lab::curve::CurveFile {
            task: config.task.clone(),
            prompts: 200,
            tuning_prompts: 200,
            seed: 0,
            shift: None,
            runs: vec![],
            measurements: rows,
        },
        "quadratic",
    )
    .unwrap();
    assert!(files.iter().all(|f| f.exists()));
}

#[test]
fn probe_runs_on_every_preset() {
    // Every named preset and every figure model, trained a few steps, then probed by the CLI.
    let dir = tempfile::tempdir().unwrap();
    let mut configs: Vec<RunConfig> = icl_lab::presets::PRESETS.iter().map(|(n, _)| preset(n)).collect();
    for key in icl_lab::presets::KEYS {
        configs.push(icl_lab::presets::model(key, true).unwrap().config);
    }
    for mut c in configs {
        c.train.steps = 3;
        c.train.batch = 64;
        c.eval.every = 3;
        c.eval.tasks = 200;
        c.eval.fit_steps = 20;
        let c = c.resolve().unwrap();
        let path = dir.path().join(format!("{}.toml", c.name));
        std::fs::write(&path, c.to_toml()).unwrap();
        let out = icl_lab(&["train", "--config", path.to_str().unwrap()], dir.path());
        assert!(out.status.success(), "train {}: {}", c.name, String::from_utf8_lossy(&out.stderr));
        let run_dir = dir.path().join("runs").join(&c.name).join("seed-0");
        let out = icl_lab(&["probe", run_dir.to_str().unwrap()], dir.path());
        assert!(out.status.success(), "probe {}: {}", c.name, String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("probe.json")).unwrap()).unwrap();
        assert_eq!(report["per_layer_loss"].as_array().unwrap().len(), c.layers(), "{}", c.name);
    }
}

#[test]
fn the_curve_command_writes_rows_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "curve",
        "--task",
        "gaussian_linear",
        "--set",
        "x_dim=3",
        "--set",
        "context_len=6",
        "--prompts",
        "200",
        "--tuning-prompts",
        "300",
        "--learners",
        "least_squares,gd(steps=2),knn(k=1)",
        "--out",
        "c",
    ];
    let out = icl_lab(&args, dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("least_squares") && stdout.contains("knn(k=1)"), "{stdout}");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("c/curve.json")).unwrap()).unwrap();
    let rows = file["measurements"].as_array().unwrap();
    assert_eq!(rows.len(), 3 * 7, "3 learners at n = 0…6");
    // least squares is exact from n = d = 3 on (noise-free)
    let ls6 = rows.iter().find(|r| r["learner"] == "least_squares" && r["n_context"] == 6).unwrap();
    assert!(ls6["value"].as_f64().unwrap() < 1e-12, "{ls6}");
    let gd = rows.iter().find(|r| r["learner"] == "gd" && r["n_context"] == 4).unwrap();
    assert_eq!(gd["params"]["steps"], 2);
    assert!(gd["params"]["eta"].as_f64().unwrap() > 0.0, "tuned η is recorded");
    for f in ["c/curve.png", "c/curve.svg"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    // Bad input is one line naming the flag or the key.
    for (args, needle) in [
        (vec!["curve", "--task", "gaussian_linear", "--set", "x_dimm=3"], "task.x_dimm: unknown key"),
        (vec!["curve", "--task", "gaussian_linear", "--learners", "gd(steps=0)"], "steps must be in 1..=10000"),
        (vec!["curve", "--task", "linear", "--shift", "condition_number=3"], "has no shift"),
        (vec!["curve", "--task", "nope"], "unknown task `nope`"),
    ] {
        let out = icl_lab(&args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.trim().lines().count() == 1 && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_one_layer_preconditioner_is_read_from_weights_and_from_predictions() {
    // Load a construction whose KQ x-block is a chosen P (W_q = P, W_k = I) with the GD value path
    // (PV_yy = −1/N): the model computes ŷ = x_qᵀ P (1/N) Σ yᵢxᵢ exactly, and both readings of A
    // return P.
    use icl_lab::figures::ahn2023::{closed_form_preconditioner, preconditioner_from_weights, run_config};
    let config = run_config(1, true).unwrap();
    let (d, n) = (5, 20);
    let p =
        ndarray::Array2::from_shape_fn(
            (d, d),
            |(i, j)| if i == j { 0.3 + 0.1 * i as f64 } else { 0.02 * (i + 2 * j) as f64 },
        );
    let mut w = icl_probes::construct::gd_construction(d, 1, n, &[1.0]); // PV_yy = −1/N
    w.get_mut("layers.0.attn.q").unwrap().slice_mut(ndarray::s![..d, ..d]).assign(&p);
    let (vs, model) =
        icl_lab::models::Transformer::new_in_store(&config.model, config.dims(), Kind::Double, Device::Cpu);
    icl_lab::models::transformer::load_weights(&vs, &w).unwrap();
    let a = preconditioner_from_weights(&vs, d, n).unwrap();
    assert!((&a - &p).iter().all(|e| e.abs() < 1e-12), "{a}");
    let learner = icl_lab::learners::ModelLearner::new("construction", None, vs, model);
    let prompts = icl_lab::rng::prompts(config.task().as_ref(), 500, 3);
    let preds = icl_probes::learner::Learner::predict(&learner, &prompts).unwrap().preds;
    let reference = icl_probes::learners::PrecondGd::new(1, vec![p.clone()]).unwrap();
    let want = icl_probes::learner::Learner::predict(&reference, &prompts).unwrap().preds;
    assert!((&preds - &want).iter().all(|e| e.abs() < 1e-10));
    let fitted = icl_probes::learners::PrecondGd::fit_one_step(&icl_tasks::Prompts { yq: preds, ..prompts }).unwrap();
    assert!((&fitted - &p).iter().all(|e| e.abs() < 1e-8), "{fitted}");
    // Γ⁻¹ for Λ = diag(4, 2, 1, ½, ¼), N = 20: 1/((1 + 1/20)λ + 7.75/20)
    let g = closed_form_preconditioner(&[4.0, 2.0, 1.0, 0.5, 0.25], 20);
    assert!((g[[0, 0]] - 1.0 / (4.2 + 0.3875)).abs() < 1e-12 && (g[[4, 4]] - 1.0 / (0.2625 + 0.3875)).abs() < 1e-12);
}

#[test]
fn reports_rows_are_long_format() {
    // The rows a figure writes: the final evaluation of a run as rows with model, seed and learner.
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-rows");
    config.train.steps = 50;
    config.eval.every = 50;
    let run = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let rows = icl_lab::measure::run_rows(&run, "linear");
    let find = |learner: &str, metric: &str, step: usize| {
        rows.iter().find(|m| m.learner == learner && m.metric == metric && m.params.get("step") == Some(&step.into()))
    };
    let last = run.metrics.rows.last().unwrap();
    assert_eq!(find("model", "loss", 50).unwrap().value, last.loss);
    assert_eq!(find("gd", "model_cos", 50).unwrap().value, last.vs_gd().model_cos);
    let untrained = find("model", "loss", 0).unwrap();
    assert_eq!((untrained.model.as_deref(), untrained.seed), (Some("tiny-rows"), Some(0)));
    let json = serde_json::to_value(&rows[0]).unwrap();
    for key in
        ["task", "learner", "params", "model", "seed", "layer", "n_context", "shift", "metric", "value", "lo", "hi"]
    {
        assert!(json.get(key).is_some(), "row lacks `{key}`: {json}");
    }
}

/// A GPT-style run small enough for CI: d = 3, n ≤ 6, 2 layers of width 16, a short curriculum.
fn tiny_gpt(name: &str, steps: usize) -> RunConfig {
    let text = format!(
        r#"
name = "{name}"
[task]
name = "gaussian_linear"
x_dim = 3
context_len = 6
[gpt]
layers = 2
heads = 2
width = 16
[curriculum]
dims_start = 2
dims_step = 1
points_start = 4
points_step = 3
every = 100
[train]
steps = {steps}
batch = 64
lr = 0.01
beta2 = 0.999
[eval]
every = 200
tasks = 500
"#
    );
    RunConfig::from_toml_str(&text).unwrap()
}

#[test]
fn the_fused_gpt_engine_trains_as_libtorch_does_and_is_recorded() {
    // The same tiny GPT-style run (curriculum included) by both engines: the fused step agrees
    // with autograd to float rounding (its unit tests check every gradient), so the two runs'
    // evaluation losses stay close over 400 steps; the manifest says which engine trained which.
    let dir = tempfile::tempdir().unwrap();
    let libtorch = tiny_gpt("gpt-engines", 400);
    let mut fused = tiny_gpt("gpt-engines-fused", 400);
    fused.train.engine = icl_lab::config::Engine::Fused;
    let fused = fused.resolve().unwrap();
    assert_eq!(libtorch.engine(), icl_lab::config::Engine::Libtorch, "auto keeps libtorch for GPT-style runs");
    let a = train(&libtorch, dir.path(), TrainOptions::default()).unwrap();
    let b = train(&fused, dir.path(), TrainOptions::default()).unwrap();
    assert_eq!(a.metrics.rows.len(), b.metrics.rows.len());
    let (first, last) = (&b.metrics.rows[0], b.metrics.rows.last().unwrap());
    assert!(last.loss < 0.9 * first.loss, "the fused run learns: {} → {}", first.loss, last.loss);
    for (x, y) in a.metrics.rows.iter().zip(&b.metrics.rows) {
        let rel = (x.loss - y.loss).abs() / x.loss;
        assert!(rel < 0.02, "step {}: libtorch {} vs fused {}", x.step, x.loss, y.loss);
    }
    let manifest = |d: &Path| std::fs::read_to_string(d.join("manifest.json")).unwrap();
    assert!(manifest(&b.dir).contains("\"engine\": \"fused\""), "{}", manifest(&b.dir));
    assert!(manifest(&a.dir).contains("\"engine\": \"libtorch\""), "{}", manifest(&a.dir));
}

#[test]
fn a_gpt_run_on_device_drawn_batches_learns_is_reproducible_and_says_so() {
    // `train.data = "device"`: batches drawn by libtorch on the training device (the CPU here).
    // The run learns; trained again from scratch it gives the same weights bit for bit (a
    // function of config and seed); its manifest records the data path; the host path's
    // config does not change.
    let dir = tempfile::tempdir().unwrap();
    let host = tiny_gpt("gpt-device-data", 400);
    assert!(!host.to_toml().contains("data ="), "host batches are the default and not written");
    let mut c = host.clone();
    c.name = "gpt-device-data".into();
    c.train.data = icl_lab::config::DataPath::Device;
    let c = c.resolve().unwrap();
    let a = train(&c, dir.path(), TrainOptions::default()).unwrap();
    let (first, last) = (&a.metrics.rows[0], a.metrics.rows.last().unwrap());
    assert!(last.loss < 0.9 * first.loss, "learns on device batches: {} → {}", first.loss, last.loss);
    let weights = std::fs::read(a.dir.join("weights.safetensors")).unwrap();
    let b = train(&c, dir.path(), TrainOptions { force: true, ..TrainOptions::default() }).unwrap();
    assert!(weights == std::fs::read(b.dir.join("weights.safetensors")).unwrap(), "retrained: other weights");
    let manifest = std::fs::read_to_string(a.dir.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"data\": \"device\""), "{manifest}");
    // Refused in one line where there is no device sampler.
    let mut bad = host.clone();
    bad.task = icl_tasks::TaskConfig::new("sparse_linear").with("x_dim", 3).with("context_len", 6);
    bad.train.data = icl_lab::config::DataPath::Device;
    let err = format!("{:#}", bad.resolve().unwrap_err());
    assert!(err.starts_with("train.data") && err.contains("gaussian_linear") && !err.contains('\n'), "{err}");
}

#[test]
fn a_gpt_run_learns_resumes_bit_identically_and_plugs_into_curve_and_tournament() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_gpt("gpt-tiny", 1200);
    assert_eq!(RunConfig::from_toml_str(&config.to_toml()).unwrap(), config, "the resolved config round-trips");
    let whole = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let rows = &whole.metrics.rows;
    // The zero predictor scores ½·E[y²] = ½·d = 1.5 at the query; 1,200 steps leave the plateau
    // GPT-style models start on (Garg's take hundreds of thousands).
    let losses_seen: Vec<f64> = rows.iter().map(|r| r.loss).collect();
    assert!(rows[0].loss > 1.2, "untrained: {losses_seen:?}");
    assert!(rows.last().unwrap().loss < 0.75 * 1.5, "trained: {losses_seen:?}");

    // Killed (SIGKILL) mid-run, then started again: it resumes from its last checkpoint and ends
    // with the same weights as the uninterrupted run, bit for bit.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("gpt.toml"), config.to_toml()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_icl-lab"))
        .args(["train", "--config", "gpt.toml"])
        .current_dir(other.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics_path = other.path().join("runs/gpt-tiny/seed-0/metrics.json");
    let started = std::time::Instant::now();
    loop {
        let done = std::fs::read(&metrics_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<RunMetrics>(&b).ok())
            .map_or(0, |m| m.weights_step);
        if done >= 400 {
            break;
        }
        assert!(started.elapsed().as_secs() < 600, "no checkpoint at step 400 after 10 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed: RunMetrics = serde_json::from_slice(&std::fs::read(&metrics_path).unwrap()).unwrap();
    assert_eq!(killed.status, RunStatus::Running);
    assert!(killed.weights_step >= 400 && killed.weights_step < 1200, "{}", killed.weights_step);
    let resumed = train(&config, &other.path().join("runs"), TrainOptions::default()).unwrap();
    assert!(!resumed.reused);
    assert_eq!(resumed.metrics.status, RunStatus::Complete);
    let bytes = |d: &Path| std::fs::read(d.join("weights.safetensors")).unwrap();
    assert!(bytes(&whole.dir) == bytes(&resumed.dir), "resumed weights differ from the uninterrupted run's");
    // The evaluation rows agree too (to the last bits: MKL's kernel choice for the f32 evaluation can
    // depend on the buffers' alignment, while the training arithmetic above matched exactly).
    assert_eq!(whole.metrics.rows.len(), resumed.metrics.rows.len());
    for (a, b) in whole.metrics.rows.iter().zip(&resumed.metrics.rows) {
        assert_eq!(a.step, b.step);
        assert!((a.loss - b.loss).abs() <= 1e-12 * a.loss.abs(), "step {}: {} vs {}", a.step, a.loss, b.loss);
    }

    // The run is a learner like any other: the curve and the tournament take it with no special case.
    let out = icl_lab(
        &[
            "curve",
            "--learners",
            "least_squares,averaging",
            "--run",
            whole.dir.to_str().unwrap(),
            "--prompts",
            "200",
            "--out",
            "c",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let curve: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("c/curve.json")).unwrap()).unwrap();
    let model_rows: Vec<&serde_json::Value> = curve["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["learner"] == "model" && m["metric"] == "normalised_error")
        .collect();
    assert!(!model_rows.is_empty());
    let at = |n: u64| model_rows.iter().find(|m| m["n_context"] == n).unwrap()["value"].as_f64().unwrap();
    assert!(at(6) < at(0), "more examples help: n = 0 {} vs n = 6 {}", at(0), at(6));
    let report = tournament(
        dir.path(),
        "g",
        &[
            whole.dir.to_str().unwrap(),
            "--learners",
            "least_squares,averaging,zero",
            "--n",
            "6",
            "--prompts",
            "64",
            "--tuning-prompts",
            "128",
            "--orders",
            "2",
        ],
    );
    for layer in [1, 2] {
        assert!(report.ranking.iter().any(|r| r.layer == Some(layer) && r.metric == "spd"), "layer {layer}");
    }
    // `probe`: loss, a readout per layer, GD's alignment and the untrained control.
    let out = icl_lab(&["probe", whole.dir.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.lines().count() <= 8 && summary.contains("untrained control"), "{summary}");
    let probe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.dir.join("probe.json")).unwrap()).unwrap();
    assert_eq!(probe["per_layer_loss"].as_array().unwrap().len(), 2);
    let (loss, untrained) = (probe["loss"].as_f64().unwrap(), probe["control_untrained"]["loss"].as_f64().unwrap());
    assert!(loss < 0.8 * untrained, "trained {loss} vs untrained {untrained}");
    assert!(probe["weight_products"].as_array().unwrap().is_empty());
}

#[test]
fn the_gpt_figures_configs_resolve_and_say_what_they_train() {
    use icl_lab::figures::{fu2023_newton, garg2022_families, garg2022_fig2};
    for quick in [false, true] {
        let mut configs = vec![garg2022_fig2::config(quick).unwrap(), fu2023_newton::config(quick).unwrap()];
        configs.extend(garg2022_families::configs(quick).unwrap());
        configs.extend(
            icl_lab::figures::shared::AKYUREK_DEPTHS.iter().map(|&l| icl_lab::presets::akyurek2023(l, quick).unwrap()),
        );
        for c in configs {
            assert!(c.gpt.is_some(), "{}", c.name);
            assert_eq!(RunConfig::from_toml_str(&c.to_toml()).unwrap(), c, "{} round-trips", c.name);
            assert_eq!(c.name.ends_with("-quick"), quick, "{}", c.name);
        }
    }
    // Garg's sizes as presets.
    for (name, size) in
        [("garg2022-tiny", (3, 2, 64)), ("garg2022-small", (6, 4, 128)), ("garg2022-standard", (12, 8, 256))]
    {
        let g = RunConfig::preset(name).unwrap().gpt.unwrap();
        assert_eq!((g.layers, g.heads, g.width), size, "{name}");
    }
    // Fu's inputs: condition number κ, trace d.
    let fu = fu2023_newton::config(true).unwrap();
    let spectrum: Vec<f64> = serde_json::from_value(fu.task.params["spectrum"].clone()).unwrap();
    assert!((spectrum[0] / spectrum[spectrum.len() - 1] - fu2023_newton::KAPPA).abs() < 1e-9);
    assert!((spectrum.iter().sum::<f64>() - spectrum.len() as f64).abs() < 1e-9);
    // Akyürek's grid: every depth × width, the phases figure's setting otherwise; bad points named.
    for depth in icl_lab::presets::AKYUREK_DEPTHS {
        for width in icl_lab::presets::AKYUREK_WIDTHS {
            let c = RunConfig::preset(&format!("akyurek2023-L{depth}-H{width}")).unwrap();
            let g = c.gpt.as_ref().unwrap();
            assert_eq!((g.layers, g.heads, g.width), (depth, 4, width));
            assert_eq!((c.dims().x_dim, c.dims().context_len), (8, 16));
            assert_eq!(c.train.steps, icl_lab::presets::akyurek2023(depth, false).unwrap().train.steps);
        }
    }
    for bad in ["akyurek2023-L3-H64", "akyurek2023-L8-H100", "akyurek2023-L8", "akyurek2023-phases"] {
        let e = RunConfig::preset(bad).unwrap_err().to_string();
        assert!(e.contains("akyurek2023-L<depth>-H<width>"), "{bad}: {e}");
    }
    // The paper's setting is Garg's.
    let full = garg2022_fig2::config(false).unwrap();
    let g = full.gpt.as_ref().unwrap();
    assert_eq!((g.layers, g.heads, g.width, full.train.steps, full.train.batch), (12, 8, 256, 500_000, 64));
    assert_eq!((full.dims().x_dim, full.dims().context_len), (20, 40));
}

/// The Python interpreter of the set-up (`scripts/setup.sh` puts numpy and safetensors in .venv);
/// `ICL_LAB_PYTHON` overrides it.
fn python() -> std::path::PathBuf {
    std::env::var_os("ICL_LAB_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

#[test]
fn python_recomputes_the_prediction_from_weights_and_exported_activations() {
    let python = python();
    let has_numpy =
        Command::new(&python).args(["-c", "import numpy, safetensors"]).output().is_ok_and(|o| o.status.success());
    assert!(has_numpy, "{} cannot import numpy and safetensors: run scripts/setup.sh", python.display());
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lsa_numpy.py");
    // One layer (the tiny preset), and two recurrent layers of two heads.
    std::fs::write(
        dir.path().join("deep.toml"),
        "name = \"deep\"\n[task]\nname = \"linear\"\nx_dim = 4\ncontext_len = 8\n[model]\nlayers = 2\nheads = 2\n\
         [train]\nsteps = 40\nbatch = 128\nlr = 0.01\ngrad_clip = 1.0\n[eval]\nevery = 20\ntasks = 200\n",
    )
    .unwrap();
    for (args, run) in [
        (&["train", "--preset", "tiny", "--steps", "40"][..], "runs/tiny/seed-0"),
        (&["train", "--config", "deep.toml"][..], "runs/deep/seed-0"),
    ] {
        let out = icl_lab(args, dir.path());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = icl_lab(&["activations", run, "--prompts", "32", "--seed", "5"], dir.path());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        for key in ["tokens", "layers.0.attn.pattern", "layers.0.resid_post", "prompt.xs", "prediction"] {
            assert!(listing.contains(key), "{key} missing from\n{listing}");
        }
        let out = Command::new(&python).arg(&example).arg(run).current_dir(dir.path()).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{run}: {said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("32 prompts"), "{said}");
    }
    // Retraining removes the export, which would describe the old weights.
    let out = icl_lab(&["train", "--preset", "tiny", "--steps", "40", "--force"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("runs/tiny/seed-0/activations.safetensors").exists());
}

// --- The bad-input corpus and the crash test --------------------------------------------------

/// Runs `icl-lab args` in `cwd` and checks it failed the way a person can act on: exit code 1, no
/// panic or abort, one line on stderr containing `expect`.
fn assert_one_line_error(args: &[&str], cwd: &Path, expect: &str, case: &str) {
    let out = icl_lab(args, cwd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{case}: {args:?} exited {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{case}: panic: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{case}: {args:?} printed several lines:\n{stderr}");
    assert!(stderr.starts_with("error:") && stderr.contains(expect), "{case}: {args:?} → {stderr} (wanted `{expect}`)");
}

#[test]
fn the_bad_input_corpus_gets_one_line_errors() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inputs");
    let dir = tempfile::tempdir().unwrap();
    // Configs: each file's first line is `# expect: <text the error must contain>`.
    let mut configs: Vec<_> = std::fs::read_dir(corpus.join("configs")).unwrap().map(|e| e.unwrap().path()).collect();
    configs.sort();
    assert!(configs.len() >= 25, "the corpus lost configs: {}", configs.len());
    for path in &configs {
        let text = std::fs::read_to_string(path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("an `# expect:` line");
        let arg = path.to_str().unwrap();
        assert_one_line_error(&["train", "--config", arg], dir.path(), expect, &path.display().to_string());
    }
    // Command lines.
    let lines = std::fs::read_to_string(corpus.join("cli.txt")).unwrap();
    let mut count = 0;
    for line in lines.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (expect, args) = line.split_once(" :: ").expect("`<expected> :: <arguments>`");
        let args: Vec<&str> = args.split_whitespace().collect();
        assert_one_line_error(&args, dir.path(), expect.trim(), line);
        count += 1;
    }
    assert!(count >= 20, "the corpus lost command lines: {count}");
    assert!(!dir.path().join("runs").exists(), "a refused command wrote a run");

    // `intervene` on a run: a construction, then each bad intervention (nothing written).
    let run_dir = tempfile::tempdir().unwrap();
    let run = run_dir.path().join("gd2");
    let out = icl_lab(&["construct", "--layers", "2", "--out", run.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tensors = corpus.join("tensors");
    let lines = std::fs::read_to_string(corpus.join("intervene.txt")).unwrap();
    let mut count = 0;
    for line in lines.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (expect, args) = line.split_once(" :: ").expect("`<expected> :: <arguments>`");
        let args = args.replace("{run}", run.to_str().unwrap()).replace("{tensors}", tensors.to_str().unwrap());
        let args: Vec<&str> = args.split_whitespace().collect();
        assert_one_line_error(&args, dir.path(), expect.trim(), line);
        count += 1;
    }
    assert!(count >= 15, "the intervene corpus lost lines: {count}");
    assert!(!run.join("intervened.safetensors").exists(), "a refused intervention wrote a file");
    assert!(!dir.path().join("results").exists(), "a refused `interventions` wrote a report");

    // Damaged run directories: a good tiny run, then one damage at a time, read by every command
    // that loads a run.
    let out = icl_lab(&["train", "--preset", "tiny", "--steps", "40"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = dir.path().join("runs/tiny/seed-0");
    let weights = std::fs::read(good.join("weights.safetensors")).unwrap();
    let config_text = std::fs::read_to_string(good.join("config.toml")).unwrap();
    type Damage = Box<dyn Fn(&Path)>;
    let write = |name: &'static str, bytes: Vec<u8>| -> Damage {
        Box::new(move |d: &Path| std::fs::write(d.join(name), &bytes).unwrap())
    };
    let nan_weights = {
        // The same file with one parameter's first value replaced by NaN (f32, little-endian).
        let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
        let mut bytes = weights.clone();
        bytes[8 + header_len..8 + header_len + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        bytes
    };
    let metrics_text = std::fs::read_to_string(good.join("metrics.json")).unwrap();
    let other_seed = {
        let out = icl_lab(&["train", "--preset", "tiny", "--steps", "40", "--seed", "1"], dir.path());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(dir.path().join("runs/tiny/seed-1/weights.safetensors")).unwrap()
    };
    // (what, damage, what the error names as the run is, what it names once the manifest is
    // resealed over the damage: the weights' own checks behind the manifest's)
    let damages: Vec<(&str, Damage, &str, Option<&str>)> = vec![
        (
            "truncated weights",
            write("weights.safetensors", weights[..weights.len() / 3].to_vec()),
            "weights.safetensors differs from manifest.json",
            Some("not a readable safetensors file"),
        ),
        ("empty weights", write("weights.safetensors", Vec::new()), "weights.safetensors", Some("weights.safetensors")),
        (
            "missing weights",
            Box::new(|d: &Path| std::fs::remove_file(d.join("weights.safetensors")).unwrap()),
            "weights.safetensors is missing",
            None,
        ),
        (
            "NaN in the weights",
            write("weights.safetensors", nan_weights),
            "weights.safetensors differs",
            Some("non-finite"),
        ),
        ("the weights of another seed", write("weights.safetensors", other_seed), "weights.safetensors differs", None),
        (
            "weights of another shape",
            write("config.toml", config_text.replace("x_dim = 4", "x_dim = 5").into_bytes()),
            "trained with another config",
            Some("disagree"),
        ),
        (
            "weights of another model",
            write("config.toml", format!("{config_text}\n[gpt]\n").into_bytes()),
            "config.toml",
            None,
        ),
        ("config that is not TOML", write("config.toml", b"\x00\x01 not toml".to_vec()), "config.toml", None),
        (
            "missing config",
            Box::new(|d: &Path| std::fs::remove_file(d.join("config.toml")).unwrap()),
            "config.toml",
            None,
        ),
        (
            "a run still training (or killed)",
            write("metrics.json", metrics_text.replace("\"complete\"", "\"running\"").into_bytes()),
            "not complete (metrics.json says `running`",
            None,
        ),
        (
            "a diverged run",
            write("metrics.json", metrics_text.replace("\"complete\"", "\"diverged\"").into_bytes()),
            "diverged at step",
            None,
        ),
        (
            "no manifest",
            Box::new(|d: &Path| std::fs::remove_file(d.join("manifest.json")).unwrap()),
            "no manifest.json",
            None,
        ),
        ("metrics that are not JSON", write("metrics.json", b"{".to_vec()), "metrics.json: not a run's metrics", None),
    ];
    let damaged = dir.path().join("damaged");
    let fresh_copy = || {
        let _ = std::fs::remove_dir_all(&damaged);
        std::fs::create_dir_all(&damaged).unwrap();
        for f in ["config.toml", "metrics.json", "weights.safetensors", "manifest.json"] {
            std::fs::copy(good.join(f), damaged.join(f)).unwrap();
        }
    };
    let readers: [&[&str]; 6] = [
        &["probe", "damaged"],
        &["activations", "damaged"],
        &["curve", "--run", "damaged", "--n-max", "2", "--prompts", "10"],
        &["tournament", "damaged"],
        &["intervene", "damaged", "--hook", "tokens", "--op", "zero"],
        &["interventions", "damaged"],
    ];
    for (what, damage, expect, resealed) in &damages {
        fresh_copy();
        damage(&damaged);
        for command in readers {
            assert_one_line_error(command, dir.path(), expect, what);
        }
        assert!(
            !damaged.join("activations.safetensors").exists()
                && !damaged.join("probe.json").exists()
                && !damaged.join("intervened.safetensors").exists(),
            "{what}"
        );
        if let Some(expect) = resealed {
            // Someone rewrote the manifest over the damage: the weights' own checks still refuse.
            let config = RunConfig::from_file(&damaged.join("config.toml")).unwrap();
            let lock = icl_lab::runs::lock(&damaged).unwrap();
            icl_lab::runs::write_manifest(&damaged, &config, 40, 40, &lock).unwrap();
            drop(lock);
            for command in readers {
                assert_one_line_error(command, dir.path(), expect, &format!("{what}, manifest resealed"));
            }
        }
    }
    // A folder of seeds: an incomplete seed is refused by name, not skipped; a seed twice is refused.
    fresh_copy();
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    let copy_run = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in ["config.toml", "metrics.json", "weights.safetensors", "manifest.json"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    };
    copy_run(&good, &folder.join("seed-0"));
    copy_run(&good, &folder.join("seed-0-again"));
    assert_one_line_error(&["tournament", "folder"], dir.path(), "are both seed 0", "a seed twice");
    std::fs::remove_dir_all(folder.join("seed-0-again")).unwrap();
    copy_run(&dir.path().join("runs/tiny/seed-1"), &folder.join("seed-1"));
    std::fs::remove_file(folder.join("seed-1/manifest.json")).unwrap();
    assert_one_line_error(&["tournament", "folder"], dir.path(), "seed-1: no manifest.json", "an incomplete seed");
    // Candidates and sizes that cannot work stop the tournament before it measures anything.
    for (args, expect) in [
        (&["tournament", "damaged", "--learners", "knn(k=0)"][..], "k must be at least 1"),
        (&["tournament", "damaged", "--learners", "gd(steps=1),gd(steps=1)"], "given twice"),
        (&["tournament", "damaged", "--n", "100000"], "--n: every value must be in 1..=8"),
        (&["tournament", "damaged", "--n", "2,2"], "--n: 2 is given twice"),
    ] {
        assert_one_line_error(args, dir.path(), expect, &format!("{args:?}"));
    }
    assert!(!dir.path().join("results").exists(), "a refused tournament wrote a report");
}

#[test]
fn a_run_killed_at_random_moments_is_complete_and_consistent_or_refused() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("crash");
    config.train.steps = 1500;
    config.eval.every = 100;
    config.eval.tasks = 200;
    let config = config.resolve().unwrap();
    std::fs::write(dir.path().join("crash.toml"), config.to_toml()).unwrap();
    let run = dir.path().join("runs/crash/seed-0");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let (mut complete, mut refused) = (0, 0);
    for kill in 0..10 {
        let _ = std::fs::remove_dir_all(&run); // every kill lands in a fresh training
        let mut child = Command::new(env!("CARGO_BIN_EXE_icl-lab"))
            .args(["train", "--config", "crash.toml"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Up to ~3 s: before the first write, mid-training, during the final writes, after the end.
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(20..3000)));
        let _ = child.kill();
        child.wait().unwrap();
        match icl_lab::train::load_complete_run(&run, &config) {
            Some(metrics) => {
                // Complete: the manifest matches every file, the weights are the final step's and load.
                complete += 1;
                assert!(icl_lab::runs::verify(&run, &config).is_ok(), "kill {kill}: complete without a valid manifest");
                assert_eq!((metrics.status, metrics.weights_step), (RunStatus::Complete, 1500), "kill {kill}");
                icl_lab::runs::load_run(&run, &config, Device::Cpu).unwrap();
            }
            None => {
                // Refused: never reused; training it again completes it.
                refused += 1;
                let again = train(&config, &dir.path().join("runs"), TrainOptions::default()).unwrap();
                assert!(!again.reused, "kill {kill}: an incomplete run was reused");
                assert!(icl_lab::runs::verify(&run, &config).is_ok(), "kill {kill}");
            }
        }
        let leftovers: Vec<String> = std::fs::read_dir(&run)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let complete_now = icl_lab::train::load_complete_run(&run, &config).is_some();
        assert!(
            !complete_now || leftovers.iter().all(|f| !f.starts_with(".tmp") && !f.starts_with(".partial")),
            "kill {kill}: temp files beside a complete run: {leftovers:?}"
        );
    }
    assert!(complete + refused == 10 && refused > 0, "complete {complete}, refused {refused}");
}

#[test]
fn a_sweep_expands_runs_here_writes_a_slurm_array_and_collects_only_complete_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        "name = \"s\"\npreset = \"tiny\"\nseeds = 2\n[grid]\n\"train.steps\" = [30]\n\"train.lr\" = [0.003, 0.01]\n\"model.layers\" = [1, 2]\n",
    )
    .unwrap();
    let sweep = icl_lab::sweep::Sweep::load(&dir.path().join("s.toml")).unwrap();
    let runs = sweep.runs();
    assert_eq!(runs.len(), 8);
    let (_, third) = &runs[2]; // point 1 (grid keys in order: model.layers, train.lr, train.steps), seed 0
    assert_eq!((third.name.as_str(), third.seed, third.model.layers, third.train.lr), ("s-1", 0, 1, 0.01));
    // Collect refuses an untrained sweep, in one line.
    assert_one_line_error(&["sweep", "collect", "s.toml"], dir.path(), "8 of 8 runs are not complete", "collect");
    // The Slurm array: one config per run, the array's size, each config the run it names.
    let out = icl_lab(&["sweep", "slurm", "s.toml", "--out", "job", "--limit", "4"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = std::fs::read_to_string(dir.path().join("job/sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-7%4") && script.contains("${SLURM_ARRAY_TASK_ID}.toml"), "{script}");
    for (k, (_, config)) in runs.iter().enumerate() {
        assert_eq!(&RunConfig::from_file(&dir.path().join(format!("job/configs/{k}.toml"))).unwrap(), config);
    }
    // One array task, as Slurm would run it: a run directory under the manifest rules.
    let exec = script.lines().last().unwrap().replace("${SLURM_ARRAY_TASK_ID}", "3");
    let status = Command::new("bash").args(["-c", &exec.replacen("exec ", "", 1)]).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(icl_lab::runs::verify(&dir.path().join("runs/s-1/seed-1"), &runs[3].1).is_ok());
    // The rest here, two at a time (the one above is reused), then the report.
    let out = icl_lab(&["sweep", "run", "s.toml", "--jobs", "2"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 runs complete (1 reused)"));
    let out = icl_lab(&["sweep", "collect", "s.toml", "--json"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r["final_loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0)));
    assert!(
        dir.path().join("results/reports/s.md").exists()
            && dir.path().join("results/figures/s/final-loss.png").exists()
    );
    // A bad grid is one line naming the point and the field.
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"b\"\npreset = \"tiny\"\n[grid]\n\"train.lr\" = [0.01, -1.0]\n",
    )
    .unwrap();
    assert_one_line_error(&["sweep", "plan", "bad.toml"], dir.path(), "train.lr", "bad grid");
}

#[test]
fn several_step_preconditioned_gd_is_fitted_and_beats_gd_on_skewed_inputs() {
    // x ~ N(0, diag(4, 2, 1, ½, ¼)) (Ahn et al. 2023): with a P per step fitted on tuning prompts
    // (and chosen on a held-out fifth of them), L-step preconditioned GD starts from the tuned
    // L-step GD (P = ηI) and must do better on fresh prompts, since the best preconditioner
    // whitens the inputs.
    icl_lab::learners::register();
    let task = icl_tasks::TaskConfig::new("gaussian_linear")
        .with("x_dim", 5)
        .with("context_len", 20)
        .with("covariance", "diagonal")
        .with("spectrum", vec![4.0, 2.0, 1.0, 0.5, 0.25])
        .build()
        .unwrap();
    let tuning = task.sample(&mut icl_tasks::TaskRng::seed_from_u64(1), 512);
    let eval = task.sample(&mut icl_tasks::TaskRng::seed_from_u64(2), 2000);
    let loss = |name: &str, prompts: &icl_tasks::Prompts| {
        let learner =
            icl_probes::learner::fit(&icl_tasks::LearnerSpec::new(name).with("steps", 2), Some(&tuning)).unwrap();
        (prompts.half_mse(&learner.predict(prompts).unwrap().preds), learner.params())
    };
    let (_, params) = loss("precond_gd", &tuning);
    assert_eq!(params["p"].as_array().unwrap().len(), 2, "one P per step: {params:?}");
    let (gd_eval, _) = loss("gd", &eval);
    let (pgd_eval, _) = loss("precond_gd", &eval);
    assert!(pgd_eval < 0.8 * gd_eval, "fresh prompts: precond_gd {pgd_eval} vs GD {gd_eval}");
    // With isotropic inputs and two examples (d = 10) there is nothing to precondition: the fit
    // must not overfit its 200 parameters to the tuning prompts (it did before the held-out choice:
    // twice GD's loss on fresh prompts).
    let task = icl_tasks::TaskConfig::new("linear").with("x_dim", 10).build().unwrap();
    let tuning = task.sample_n(&mut icl_tasks::TaskRng::seed_from_u64(3), 1024, 2);
    let eval = task.sample_n(&mut icl_tasks::TaskRng::seed_from_u64(4), 2000, 2);
    let loss = |name: &str| {
        let learner =
            icl_probes::learner::fit(&icl_tasks::LearnerSpec::new(name).with("steps", 2), Some(&tuning)).unwrap();
        eval.half_mse(&learner.predict(&eval).unwrap().preds)
    };
    let (gd_eval, pgd_eval) = (loss("gd"), loss("precond_gd"));
    assert!(pgd_eval < 1.05 * gd_eval, "isotropic, n = 2: precond_gd {pgd_eval} vs GD {gd_eval}");
}

#[test]
fn seeds_trained_together_are_bit_for_bit_seeds_trained_alone() {
    // Two recurrent layers with the fused engine: three seeds in one step loop on two workers,
    // against seed 1 trained alone.
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-together");
    config.model.layers = 2;
    config.model.init_scale = None;
    config.train.steps = 60;
    config.eval.every = 20;
    let config = config.resolve().unwrap();
    assert_eq!(config.engine(), icl_lab::config::Engine::Fused);
    let configs: Vec<RunConfig> = (0..3).map(|s| RunConfig { seed: s, ..config.clone() }).collect();
    let bars: Vec<_> = configs.iter().map(|_| indicatif::ProgressBar::hidden()).collect();
    let together_root = dir.path().join("together");
    let outs = icl_lab::train::train_together(&configs, &together_root, TrainOptions::default(), 2, &bars);
    let outs: Vec<_> = outs.into_iter().map(|o| o.unwrap()).collect();
    assert!(outs.iter().all(|o| !o.reused));
    let alone = train(&configs[1], &dir.path().join("alone"), TrainOptions::default()).unwrap();
    let read = |d: &Path| std::fs::read(d.join("weights.safetensors")).unwrap();
    assert_eq!(read(&outs[1].dir), read(&alone.dir), "weights differ from the seed trained alone");
    let losses = |m: &RunMetrics| m.rows.iter().map(|r| (r.step, r.loss.to_bits())).collect::<Vec<_>>();
    assert_eq!(losses(&outs[1].metrics), losses(&alone.metrics));
    assert_ne!(read(&outs[0].dir), read(&outs[1].dir), "seeds differ");
    // Each is a complete run directory: reused by both entry points.
    assert!(train(&configs[2], &together_root, TrainOptions::default()).unwrap().reused);
    let again = icl_lab::train::train_together(&configs, &together_root, TrainOptions::default(), 2, &bars);
    assert!(again.into_iter().all(|o| o.unwrap().reused));
}

// --- Trustworthy outputs (candidate identity, runs checked, no panic on any input) -------------

#[test]
fn two_specs_of_one_family_are_two_candidates_in_tournament_and_curve() {
    let dir = tempfile::tempdir().unwrap();
    let out = icl_lab(&["construct", "--layers", "1", "--eta", "5", "--tasks", "50", "--out", "cons"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = tournament(
        dir.path(),
        "t",
        &[
            "cons",
            "--no-untrained",
            "--learners",
            "gd(steps=1,eta=5),knn(k=1),knn(k=8)",
            "--n",
            "5,10",
            "--prompts",
            "64",
            "--tuning-prompts",
            "128",
            "--orders",
            "2",
        ],
    );
    let spd = report.ranking.iter().find(|r| r.metric == "spd").unwrap();
    let mut ids: Vec<&str> = spd.order.iter().map(|c| c.learner.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["gd(eta=5, steps=1)", "knn(k=1)", "knn(k=8)"]);
    // Each candidate's score is the mean of its own rows, never of the family's.
    for c in &spd.order {
        let own: Vec<f64> = report
            .measurements
            .iter()
            .filter(|m| m.metric == "spd" && m.model.is_some() && m.candidate() == c.learner)
            .map(|m| m.value)
            .collect();
        assert_eq!(own.len(), 2, "{}: one row per n", c.learner);
        assert!((c.value - own.iter().sum::<f64>() / 2.0).abs() < 1e-15, "{}", c.learner);
    }
    let knn = |id: &str| spd.order.iter().find(|c| c.learner == id).unwrap().value;
    assert_ne!(knn("knn(k=1)"), knn("knn(k=8)"));
    let md = std::fs::read_to_string(dir.path().join("r/t.md")).unwrap();
    assert!(md.contains("knn(k=1)") && md.contains("knn(k=8)"), "{md}");
    // The heatmap has a column per candidate.
    let (columns, _) = report.spd_matrix(&report.entrants[0].model, 1);
    assert_eq!(columns.len(), 3);

    // The curve: one line per spec (lists and matrices included), rows carrying their spec.
    let out = icl_lab(
        &[
            "curve",
            "--task",
            "gaussian_linear",
            "--set",
            "x_dim=2",
            "--set",
            "context_len=4",
            "--learners",
            "knn(k=1),knn(k=3),precond_gd(steps=1, p=[[1,0],[0,1]]),precond_gd(steps=1, p=[[2,0],[0,2]])",
            "--prompts",
            "40",
            "--out",
            "c",
            "--json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<icl_probes::measure::Measurement> = serde_json::from_slice(&out.stdout).unwrap();
    let chart = icl_lab::plot::curve_chart(&rows, "t", 10.0);
    let mut labels: Vec<String> = chart
        .series
        .iter()
        .map(|s| s.label.clone())
        .filter(|l| l.starts_with("knn") || l.starts_with("precond_gd"))
        .collect();
    labels.dedup();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(rows.iter().all(|m| m.spec.is_some()));
}

#[test]
fn a_run_without_a_manifest_is_adopted_only_with_its_configs_weights_and_only_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny("tiny-softmax"); // softmax: the libtorch engine, which trained runs before manifests
    config.model.softmax = true;
    config.train.steps = 20;
    config.eval.every = 10;
    config.eval.tasks = 100;
    let config = config.resolve().unwrap();
    assert_eq!(config.engine(), icl_lab::config::Engine::Libtorch);
    let run = train(&config, dir.path(), TrainOptions::default()).unwrap();
    let manifest = run.dir.join("manifest.json");
    // Reading never writes: a run without a manifest is not complete to `load_complete_run`
    // (as `sweep plan` and the figures read it), and no manifest appears.
    std::fs::remove_file(&manifest).unwrap();
    assert!(icl_lab::train::load_complete_run(&run.dir, &config).is_none());
    assert!(!manifest.exists());
    // Weights that are not this config's model (one tensor named `junk`): trained again.
    let weights = run.dir.join("weights.safetensors");
    let good = std::fs::read(&weights).unwrap();
    tch::Tensor::write_safetensors(&[("junk", tch::Tensor::zeros([2], (Kind::Float, Device::Cpu)))], &weights).unwrap();
    let again = train(&config, dir.path(), TrainOptions::default()).unwrap();
    assert!(!again.reused, "junk weights were adopted");
    assert_eq!(std::fs::read(&weights).unwrap(), good, "retrained bit for bit");
    // The config's own weights: adopted, and the manifest written (by `train`, under the lock).
    std::fs::remove_file(&manifest).unwrap();
    let adopted = train(&config, dir.path(), TrainOptions::default()).unwrap();
    assert!(adopted.reused && icl_lab::runs::verify(&run.dir, &config).is_ok());
}

#[test]
fn no_gradient_clipping_is_infinite_clip_on_both_engines() {
    for engine in [icl_lab::config::Engine::Fused, icl_lab::config::Engine::Libtorch] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tiny("tiny-noclip");
        config.train.grad_clip = Some(f64::INFINITY);
        config.train.engine = engine;
        config.train.steps = 30;
        config.eval.every = 10;
        config.eval.tasks = 100;
        let out = train(&config.resolve().unwrap(), dir.path(), TrainOptions::default()).unwrap();
        assert_eq!(out.metrics.status, RunStatus::Complete, "{engine:?}");
        assert!(out.metrics.rows.iter().all(|r| r.loss.is_finite()), "{engine:?}");
        let first = out.metrics.rows.first().unwrap().loss;
        assert!(out.metrics.rows.last().unwrap().loss < first, "{engine:?}: no learning");
    }
}

#[test]
fn sweeps_take_seed_lists_refuse_seed_grids_and_huge_grids_before_expanding() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        std::fs::write(dir.path().join("s.toml"), text).unwrap();
        icl_lab::sweep::Sweep::load(&dir.path().join("s.toml"))
    };
    let sweep = load("name = \"s\"\npreset = \"tiny\"\nseeds = [3, 7]\n[grid]\n\"train.lr\" = [0.01, 0.02]\n").unwrap();
    let seeds: Vec<u64> = sweep.runs().iter().map(|(_, c)| c.seed).collect();
    assert_eq!(seeds, [3, 7, 3, 7]);
    let err = |text: &str| format!("{:#}", load(text).unwrap_err());
    assert!(err("name = \"s\"\npreset = \"tiny\"\n[grid]\nseed = [1, 2]\n").contains("seeds = [3, 7]"));
    assert!(err("name = \"s\"\npreset = \"tiny\"\nseeds = [1, 1]\n").contains("seed 1 is listed twice"));
    // 2 keys × 5,000 values: refused from the sizes alone, at once.
    let values: Vec<String> = (0..5000).map(|i| format!("{}", 1e-4 * (i + 1) as f64)).collect();
    let big = format!(
        "name = \"s\"\npreset = \"tiny\"\n[grid]\n\"train.lr\" = [{0}]\n\"train.eps\" = [{0}]\n",
        values.join(", ")
    );
    let start = std::time::Instant::now();
    assert!(err(&big).contains("more than 10000 runs (5000 train.eps × 5000 train.lr × 1 seed(s))"), "{}", err(&big));
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn sweep_slurm_writes_only_validated_values_and_its_header_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), "name = \"s\"\npreset = \"tiny\"\nseeds = 2\n").unwrap();
    // Every value that reaches an #SBATCH line: a newline (a command every array task would run),
    // shell metacharacters, spaces, Slurm patterns.
    for (args, expect) in [
        (&["--time", "01:00:00\ntouch pwned"][..], "--time"),
        (&["--mem", "2G; touch pwned"], "--mem"),
        (&["--partition", "gpu\ntouch pwned"], "--partition"),
        (&["--partition", "a b"], "--partition"),
        (&["--out", "job\ntouch pwned"], "--out"),
        (&["--out", "job dir"], "--out"),
        (&["--out", "job%j"], "--out"),
        (&["--limit", "0"], "--limit"),
        (&["--cpus", "0"], "--cpus"),
    ] {
        let all = [&["sweep", "slurm", "s.toml"][..], args].concat();
        assert_one_line_error(&all, dir.path(), expect, &format!("{args:?}"));
    }
    assert!(!dir.path().join("pwned").exists());
    let out = icl_lab(
        &[
            "sweep",
            "slurm",
            "s.toml",
            "--out",
            "job",
            "--time",
            "2-12:00:00",
            "--mem",
            "500M",
            "--partition",
            "gpu,cpu",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = dir.path().join("job/sweep.sbatch");
    let check = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    // Everything before the final `exec` is comments and `set`: run it, nothing happens.
    let text = std::fs::read_to_string(&script).unwrap();
    let header: Vec<&str> = text.lines().take_while(|l| !l.starts_with("exec ")).collect();
    assert!(header.iter().all(|l| l.starts_with('#') || l.starts_with("set ")), "{header:?}");
    // With an empty PATH, so that a command slipped into the header could not run anything.
    let bash = ["/bin/bash", "/usr/bin/bash"].into_iter().find(|b| Path::new(b).exists()).expect("bash");
    let run =
        Command::new(bash).args(["-c", &header.join("\n")]).current_dir(dir.path()).env("PATH", "").output().unwrap();
    assert!(run.status.success() && run.stdout.is_empty() && run.stderr.is_empty());
    assert!(text.contains("#SBATCH --time=2-12:00:00\n#SBATCH") && text.contains("#SBATCH --partition=gpu,cpu\n"));
}

#[test]
fn closed_or_full_output_streams_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // `icl-lab list | head -0`: the reader is gone before anything is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_icl-lab"))
        .arg("list")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // A full disk: one line on stderr, exit 1; a full stderr as well: exit 1, no panic.
    if Path::new("/dev/full").exists() {
        let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_icl-lab")).arg("list").stdout(full()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr.trim().lines().count() == 1 && stderr.contains("writing to stdout"), "{stderr}");
        let out = Command::new(env!("CARGO_BIN_EXE_icl-lab"))
            .args(["bench", "--threads", "0"])
            .stderr(full())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
    }
}

#[test]
fn the_index_lists_only_reports_of_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/vo2023-fig3.json");
    std::fs::copy(good, reports.join("vo2023-fig3.json")).unwrap();
    std::fs::write(reports.join("vo2023-fig2.json"), r#"{"name": 5}"#).unwrap();
    std::fs::write(reports.join("vo2023-fig5.json"), "[]").unwrap();
    let out = icl_lab(&["index", "--reports", "reports"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(reports.join("vo2023.md")).unwrap();
    assert!(md.contains("| vo2023-fig2 |") && md.contains("| vo2023-fig5 |"), "{md}");
    assert!(md.lines().filter(|l| l.contains("report unreadable")).count() == 2, "{md}");
    assert!(md.contains("[vo2023-fig3](vo2023-fig3.md)"), "{md}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 2, "one warning per bad file");
}
