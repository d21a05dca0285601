//! Interventions through the activation cache, and the four protocols on the constructions,
//! where every answer is known (issue "causal evidence"): the GD construction's layer l *is* GD
//! step l, so knocking it out or patching its tokens must do exactly what the token recursion
//! does under the same change.

use icl_lab::cache::{attn_out, attn_pattern, resid_post, ActivationCache, Intervention, Op, TokenSel, TOKENS};
use icl_lab::config::RunConfig;
use icl_lab::interventions as iv;
use icl_lab::layout;
use icl_lab::models::{Model, Transformer};
use icl_probes::construct::{gd_construction, gdpp_construction};
use icl_probes::interventions::{gd1_smoother, Channels, Recursion};
use icl_tasks::{Prompts, TaskRng};
use ndarray::Array2;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

fn config(layers: usize, recurrent: bool, edit: impl Fn(&mut RunConfig)) -> RunConfig {
    let mut c = RunConfig::preset("vo2023-fig2").unwrap();
    c.model.layers = layers;
    c.model.recurrent = recurrent;
    c.model.init_scale = None;
    c.train.grad_clip = None;
    edit(&mut c);
    c.resolve().unwrap()
}

fn prompts(c: &RunConfig, seed: u64, batch: usize) -> Prompts {
    c.task().sample(&mut TaskRng::seed_from_u64(seed), batch)
}

fn tokens(c: &RunConfig, p: &Prompts) -> Tensor {
    layout::tensors(c.model.tokens, p, Kind::Double, Device::Cpu).0
}

/// A model of `c`'s architecture in f64 with `weights` loaded (unset parameters stay 0).
fn model_with(c: &RunConfig, weights: Option<&icl_probes::NamedWeights>) -> (tch::nn::VarStore, Model) {
    let (vs, m) = Transformer::new_in_store(&c.model, c.dims(), Kind::Double, Device::Cpu);
    match weights {
        Some(w) => icl_lab::models::transformer::load_weights(&vs, w).unwrap(),
        None => Transformer::init(&vs, 1.0, &mut TaskRng::seed_from_u64(11)),
    }
    (vs, Model::from(m))
}

fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).iter().fold(0.0f64, |m, e| m.max(e.abs()))
}

/// The constructions of the issue: (config, weights, the recursion they compute per applied layer).
fn constructions() -> Vec<(String, RunConfig, icl_probes::NamedWeights, Recursion)> {
    let mut out = Vec::new();
    for layers in [2, 3] {
        let c = config(layers, true, |_| {});
        let eta = 1.2;
        out.push((
            format!("gd {layers} rec"),
            c.clone(),
            gd_construction(10, 1, 10, &[eta]),
            Recursion::shared(layers, eta, 0.0),
        ));
        let (eta, gamma) = (1.1, 0.02);
        out.push((
            format!("gd++ {layers} rec"),
            c,
            gdpp_construction(10, 1, 10, &[eta], &[gamma]),
            Recursion::shared(layers, eta, gamma),
        ));
        // Separate layers with their own (η, γ).
        let etas: Vec<f64> = (0..layers).map(|l| 0.8 + 0.3 * l as f64).collect();
        let gammas: Vec<f64> = (0..layers).map(|l| 0.01 * (l + 1) as f64).collect();
        out.push((
            format!("gd++ {layers} sep"),
            config(layers, false, |_| {}),
            gdpp_construction(10, 1, 10, &etas, &gammas),
            Recursion { steps: etas.iter().copied().zip(gammas.iter().copied()).collect() },
        ));
    }
    out
}

#[test]
fn a_forward_without_interventions_is_bit_identical() {
    let configs = [
        config(1, true, |_| {}),
        config(3, false, |c| {
            c.model.softmax = true;
            c.model.mlp = true;
            c.model.layer_norm = true;
            c.model.heads = 2;
        }),
        config(2, true, |c| c.model.token_clip = Some(0.7)),
    ];
    for c in configs {
        let (_vs, model) = model_with(&c, None);
        let t = tokens(&c, &prompts(&c, 1, 16));
        let plain = tch::no_grad(|| model.forward(&t, None));
        let through = |mut cache: ActivationCache| tch::no_grad(|| model.forward(&t, Some(&mut cache)));
        // A cache that records nothing and changes nothing: the plain forward, bit for bit.
        assert!(plain.equal(&through(ActivationCache::none())), "{}: not bit-identical", c.name);
        // Recording the last layer computes its non-query rows too (the model skips them
        // otherwise): the same prediction to rounding, and any recording cache gives the same bits.
        let all = through(ActivationCache::all());
        let last = resid_post(c.model.layers - 1);
        assert!(all.equal(&through(ActivationCache::names(&[last.as_str()]))), "{}", c.name);
        assert!((&all - &plain).abs().max().double_value(&[]) < 1e-12, "{}", c.name);
    }
    // The GPT family.
    let c = RunConfig::preset("akyurek2023-L2-H32").unwrap().resolve().unwrap();
    let (_vs, model) = icl_lab::runs::initial_model(&c, Device::Cpu).unwrap();
    let p = prompts(&c, 2, 8);
    let t = model.tokens(&p, Kind::Float, Device::Cpu);
    let plain = tch::no_grad(|| model.forward(&t, None));
    let mut cache = ActivationCache::all();
    let through = tch::no_grad(|| model.forward(&t, Some(&mut cache)));
    assert!(plain.equal(&through), "GPT: not bit-identical");
    assert!(cache.names_recorded().any(|n| n == "layers.1.mlp.out"));
}

#[test]
fn each_op_changes_only_what_it_selects() {
    let c = config(2, false, |_| {});
    let (_vs, model) = model_with(&c, None);
    let t = tokens(&c, &prompts(&c, 3, 5));
    let hook = resid_post(0);
    let clean = iv::activation(&model, &t, &hook, Vec::new()).unwrap(); // (B, T, D)
    let got = |i: Intervention| iv::activation(&model, &t, &hook, vec![i]).unwrap();
    // zero, on the query's y channel only
    let z = got(Intervention::new(&hook, Op::Zero).tokens(TokenSel::Query).channels([10]));
    assert_eq!(z.double_value(&[0, 10, 10]), 0.0);
    let mask_changed = (&z - &clean).abs().gt(0.0).sum(Kind::Int64).int64_value(&[]);
    assert!(mask_changed <= 5, "zero changed {mask_changed} entries");
    assert!(z.narrow(1, 0, 10).equal(&clean.narrow(1, 0, 10)), "context untouched");
    // add
    let delta = Tensor::full([11], 0.5, (Kind::Double, Device::Cpu));
    let a = got(Intervention::new(&hook, Op::Add(delta)).tokens(TokenSel::Positions(vec![2])));
    let diff = (&a - &clean).narrow(1, 2, 1);
    assert!((diff - 0.5).abs().max().double_value(&[]) < 1e-15);
    assert!(a.narrow(1, 3, 8).equal(&clean.narrow(1, 3, 8)));
    // replace with a broadcast tensor
    let r = got(Intervention::new(&hook, Op::Replace(Tensor::full([1, 1, 11], 2.0, (Kind::Double, Device::Cpu)))));
    assert!((r - 2.0).abs().max().double_value(&[]) == 0.0);
    // project onto + out of a subspace add back up to the activation
    let basis = Tensor::randn([11, 3], (Kind::Double, Device::Cpu));
    let onto = got(Intervention::new(&hook, Op::Project { basis: basis.shallow_clone(), keep: true }));
    let out = got(Intervention::new(&hook, Op::Project { basis, keep: false }));
    assert!((&onto + &out - &clean).abs().max().double_value(&[]) < 1e-12);
    // several interventions in one forward apply in order
    let two = iv::activation(
        &model,
        &t,
        &hook,
        vec![
            Intervention::new(&hook, Op::Replace(Tensor::ones([11], (Kind::Double, Device::Cpu)))),
            Intervention::new(&hook, Op::Add(Tensor::ones([11], (Kind::Double, Device::Cpu)))),
        ],
    )
    .unwrap();
    assert!((two - 2.0).abs().max().double_value(&[]) == 0.0);
}

#[test]
fn the_pattern_can_be_written_and_replacing_it_by_itself_changes_nothing() {
    for c in [config(2, false, |_| {}), config(2, false, |c| c.model.heads = 2)] {
        let (_vs, model) = model_with(&c, None);
        let t = tokens(&c, &prompts(&c, 4, 6));
        let plain = iv::predict(&model, &t, Vec::new()).unwrap();
        let own = iv::activation(&model, &t, &attn_pattern(0), Vec::new()).unwrap();
        let same = iv::predict(&model, &t, vec![Intervention::new(attn_pattern(0), Op::Replace(own))]).unwrap();
        assert!(max_abs(&plain, &same) < 1e-12);
        // A zero pattern in both layers: attention adds nothing, the readout of the query token (x_q, 0).
        let zeroed = iv::predict(
            &model,
            &t,
            vec![Intervention::new(attn_pattern(0), Op::Zero), Intervention::new(attn_pattern(1), Op::Zero)],
        )
        .unwrap();
        assert!(zeroed.iter().all(|v| v.abs() < 1e-15), "heads={}", c.model.heads);
    }
}

#[test]
fn p1_knockout_of_a_construction_is_the_recursion_without_that_step() {
    for (name, c, w, rec) in constructions() {
        let (_vs, model) = model_with(&c, Some(&w));
        let p = prompts(&c, 5, 64);
        let t = tokens(&c, &p);
        let intact = iv::predict(&model, &t, Vec::new()).unwrap();
        assert!(max_abs(&intact, &rec.predict(&p)) < 1e-10, "{name}: intact");
        for l in 0..c.model.layers {
            let got = iv::predict(&model, &t, iv::knockout(&model, l)).unwrap();
            let want = rec.knockout(&p, l).unwrap();
            let err = max_abs(&got, &want);
            assert!(err < 1e-10, "{name} layer {l}: {err:e}");
            // and it is a real change (the intact learner does not predict it)
            assert!(max_abs(&got, &intact) > 1e-3, "{name} layer {l}: knockout changed nothing");
        }
    }
}

#[test]
fn p2_interchange_on_a_construction_is_the_recursion_continued_from_the_patched_tokens() {
    for (name, c, w, rec) in constructions() {
        let (_vs, model) = model_with(&c, Some(&w));
        let (a, b) = (prompts(&c, 6, 64), prompts(&c, 7, 64));
        let (ta, tb) = (tokens(&c, &a), tokens(&c, &b));
        for l in 0..c.model.layers {
            for ch in Channels::ALL {
                let patch = iv::interchange(&model, &tb, l, ch).unwrap();
                let got = iv::predict(&model, &ta, vec![patch]).unwrap();
                let want = rec.interchange(&a, &b, l, ch).unwrap();
                let err = max_abs(&got, &want);
                assert!(err < 1e-10, "{name} layer {l} channels {}: {err:e}", ch.name());
            }
        }
    }
}

#[test]
fn p4_the_gd_constructions_influence_profile_is_eta_over_n_x_xq() {
    let c = config(1, true, |_| {});
    let eta = 0.9;
    let (_vs, model) = model_with(&c, Some(&gd_construction(10, 1, 10, &[eta])));
    let p = prompts(&c, 8, 50);
    let s = iv::influence(&model, &tokens(&c, &p), None, Vec::new()).unwrap();
    let want = gd1_smoother(&p, eta);
    let err = max_abs(&s, &want);
    assert!(err < 1e-12, "{err:e}");
    // Deeper: the model's smoother is the k-step learner's, read off through the learner interface.
    for (name, c, w, rec) in constructions() {
        let (_vs, model) = model_with(&c, Some(&w));
        let p = prompts(&c, 9, 20);
        let s = iv::influence(&model, &tokens(&c, &p), None, Vec::new()).unwrap();
        if rec.steps.iter().all(|s| s.1 == 0.0) {
            let gd = icl_probes::learners::Gd { steps: rec.len(), eta: rec.steps[0].0 };
            let want = icl_probes::interventions::smoother(&gd, &p).unwrap();
            assert!(max_abs(&s, &want) < 1e-10, "{name}: {:e}", max_abs(&s, &want));
        }
    }
}

#[test]
fn p3_patching_map_of_the_gd_construction() {
    let c = config(2, true, |_| {});
    let (_vs, model) = model_with(&c, Some(&gd_construction(10, 1, 10, &[1.2])));
    let clean = prompts(&c, 10, 200);
    // Corruption: the same inputs with labels of another task.
    let other = prompts(&c, 11, 200);
    let mut corrupted = clean.clone();
    corrupted.ys = other.ys.clone();
    let targets = layout::array2_to_tensor(&clean.yq, Kind::Double, Device::Cpu);
    let map = iv::patching_map(&model, &tokens(&c, &clean), &tokens(&c, &corrupted), &targets).unwrap();
    assert_eq!(map.hooks, vec![TOKENS.to_string(), resid_post(0), resid_post(1)]);
    // Patching the query after the last layer is the clean output; context tokens after the last
    // layer are read by nothing.
    assert!((map.recovered[[2, 10]] - 1.0).abs() < 1e-12);
    assert!(map.recovered.row(2).iter().take(10).all(|v| v.abs() < 1e-12));
    // The query's input token carries no label: patching it recovers nothing.
    assert!(map.recovered[[0, 10]].abs() < 1e-12);
    let rows: Vec<Vec<f64>> =
        map.recovered.outer_iter().map(|r| r.iter().map(|v| (v * 1e4).round() / 1e4).collect()).collect();
    insta::assert_json_snapshot!(
        "p3_gd_construction",
        serde_json::json!({
            "hooks": map.hooks,
            "loss_clean": (map.loss_clean * 1e4).round() / 1e4,
            "loss_corrupted": (map.loss_corrupted * 1e4).round() / 1e4,
            "recovered": rows,
        })
    );
}

#[test]
fn interventions_are_checked_before_the_forward() {
    let c = config(2, true, |_| {});
    let (_vs, model) = model_with(&c, None);
    let t = tokens(&c, &prompts(&c, 12, 4));
    let err = |i: Intervention| format!("{:#}", iv::check(&model, &t, &[i]).unwrap_err());
    let e = err(Intervention::new("layers.7.resid_post", Op::Zero));
    assert!(e.starts_with("unknown hook `layers.7.resid_post`: this model has"), "{e}");
    assert!(e.contains("layers.{0..1}.resid_post"), "{e}");
    let e = err(Intervention::new(attn_out(0), Op::Replace(Tensor::zeros([4, 11, 3], (Kind::Double, Device::Cpu)))));
    assert!(e.contains("does not broadcast"), "{e}");
    let e = err(Intervention::new(attn_out(0), Op::Add(Tensor::full([11], f64::NAN, (Kind::Double, Device::Cpu)))));
    assert!(e.contains("NaN"), "{e}");
    let e = err(Intervention::new(attn_out(0), Op::Zero).tokens(TokenSel::Positions(vec![11])));
    assert!(e.contains("out of range"), "{e}");
    assert!(iv::check(&model, &t, &[Intervention::new(attn_out(0), Op::Zero).tokens(TokenSel::Context)]).is_ok());
}

#[test]
fn the_intervene_command_writes_what_the_model_continued_from() {
    // A 2-layer GD construction with its last layer knocked out predicts one GD step.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("gd2");
    let bin = env!("CARGO_BIN_EXE_icl-lab");
    let ok = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(&["construct", "--layers", "2", "--eta", "1.5", "--out", run.to_str().unwrap()]);
    let text =
        ok(&["intervene", run.to_str().unwrap(), "--hook", "layers.1.attn.out", "--op", "zero", "--prompts", "32"]);
    assert!(text.contains("loss ½·MSE") && text.contains("wrote"), "{text}");
    let file = run.join("intervened.safetensors");
    let entries = Tensor::read_safetensors(&file).unwrap();
    let get =
        |name: &str| entries.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1.shallow_clone();
    assert_eq!(get("layers.1.attn.out").abs().max().double_value(&[]), 0.0);
    let to2 = |t: Tensor| icl_lab::cache::tensor_to_array(&t).unwrap().into_dimensionality::<ndarray::Ix2>().unwrap();
    let (xs, ys, xq) = (get("prompt.xs"), get("prompt.ys"), get("prompt.xq"));
    let p = Prompts {
        xs: icl_lab::cache::tensor_to_array(&xs).unwrap().into_dimensionality().unwrap(),
        ys: icl_lab::cache::tensor_to_array(&ys).unwrap().into_dimensionality().unwrap(),
        xq: to2(xq),
        yq: to2(get("prompt.yq")),
        w: None,
    };
    let one_step = Recursion::shared(1, 1.5, 0.0).predict(&p);
    let got = to2(get("prediction"));
    assert!(max_abs(&got, &one_step) < 1e-5, "{:e}", max_abs(&got, &one_step)); // an f32 run
    assert!(max_abs(&to2(get("clean.prediction")), &Recursion::shared(2, 1.5, 0.0).predict(&p)) < 1e-5);
}

/// The protocols end to end on construction runs (f32 weights, as every run is stored): P1 and
/// P2 find the learner each was built from (SPD/d to its counterfactual at f32 rounding, far
/// below the controls and below the other learner's), P4 finds its smoother, and the model's
/// P3 map equals the learner-side map of the construction.
#[test]
fn the_protocols_name_the_learner_a_construction_was_built_from() {
    use icl_lab::protocols::{self, ProtocolOptions};
    use icl_lab::tournament::{LoadedEntrant, Role};
    icl_lab::learners::register();
    let dir = tempfile::tempdir().unwrap();
    let (eta, gamma) = (1.1, 0.05);
    let learners = icl_lab::curve::parse_learners(&format!(
        "gd(steps=1,eta={eta}),gd++(steps=1,eta={eta},gamma={gamma}),ridge,averaging"
    ))
    .unwrap();
    let cases = [
        ("gd", gd_construction(10, 1, 10, &[eta]), "gd(eta=1.1, steps=1)", "gd++(eta=1.1, gamma=0.05, steps=1)"),
        (
            "gdpp",
            gdpp_construction(10, 1, 10, &[eta], &[gamma]),
            "gd++(eta=1.1, gamma=0.05, steps=1)",
            "gd(eta=1.1, steps=1)",
        ),
    ];
    for (name, weights, truth, other) in cases {
        // Three layers: with two, one step remains after a knockout and one GD++ step is GD.
        let c = config(3, true, |c| c.name = format!("construction-{name}"));
        let (vs, _m) = Transformer::new_in_store(&c.model, c.dims(), Kind::Float, Device::Cpu);
        icl_lab::models::transformer::load_weights(&vs, &weights).unwrap();
        let run = dir.path().join(name).join("seed-0");
        std::fs::create_dir_all(&run).unwrap();
        icl_lab::construct::write_run(&run, &c, &vs).unwrap();
        let e = LoadedEntrant::trained(&run, Role::Trained).unwrap();
        let twin = e.untrained_twin();
        let task = c.task();
        // n = N only: the construction divides by the training N, GD by the n it is given (a
        // fitted η absorbs the difference; these fixed ones do not).
        let opts = ProtocolOptions { prompts: 64, tuning_prompts: 64, n_values: vec![10], seed: 3, resamples: 100 };
        let labels: Vec<String> = learners.iter().map(|l| l.label()).collect();
        assert!(labels.contains(&truth.to_string()) && labels.contains(&other.to_string()), "{labels:?}");
        let r = protocols::run("t", task.as_ref(), &[e, twin], &learners, &opts, &|_| {}).unwrap();
        let model = c.name.clone();
        let get = |protocol: &str, candidate: &str, metric: &str| -> Vec<f64> {
            r.measurements
                .iter()
                .filter(|m| {
                    m.model.as_deref() == Some(model.as_str())
                        && m.protocol.as_deref() == Some(protocol)
                        && m.candidate() == candidate
                        && m.metric == metric
                })
                .map(|m| m.value)
                .collect()
        };
        // P1: each of the 3 layers.
        let knocked = get("P1", truth, "spd_vs_knocked_learner");
        assert_eq!(knocked.len(), 3, "{name}");
        assert!(knocked.iter().all(|v| *v < 1e-9), "{name} P1 {knocked:?}");
        assert!(
            get("P1", truth, "spd_vs_intact_learner").iter().all(|v| *v > 1e-4),
            "{name}: knockouts changed nothing"
        );
        assert!(
            get("P1", other, "spd_vs_knocked_learner").iter().all(|v| *v > 1e-7),
            "{name}: P1 cannot tell GD from GD++"
        );
        // P2 after layers 1 and 2 (of 3), both channel sets.
        for p2 in ["P2:y", "P2:all"] {
            let cf = get(p2, truth, "spd_vs_counterfactual");
            assert_eq!(cf.len(), 2, "{name} {p2}");
            assert!(cf.iter().all(|v| *v < 1e-9), "{name} {p2} {cf:?}");
            assert!(get(p2, "model", "spd_vs_base_clean").iter().all(|v| *v > 1e-5), "{name} {p2}: nothing happened");
            assert!(get(p2, "model", "spd_vs_source_clean").iter().all(|v| *v > 1e-5), "{name} {p2}: all copied");
        }
        // P4 at the output: the smoother of the learner the construction is.
        let cos: Vec<f64> = r
            .measurements
            .iter()
            .filter(|m| {
                m.model.as_deref() == Some(model.as_str())
                    && m.protocol.as_deref() == Some("P4")
                    && m.candidate() == truth
                    && m.metric == "influence_cos"
                    && m.layer == Some(3)
            })
            .map(|m| m.value)
            .collect();
        assert_eq!(cos.len(), 1);
        assert!(cos.iter().all(|v| (v - 1.0).abs() < 1e-5), "{name} P4 {cos:?}");
        let findings = r.findings().join("\n");
        assert!(findings.contains("**Agrees**"), "{findings}");
        // The output comparison is the tournament's SPD/d on the same prompts (same seed streams).
        let entrants = [LoadedEntrant::trained(&run, Role::Trained).unwrap()];
        let t_opts = icl_lab::tournament::TournamentOptions {
            prompts: opts.prompts,
            tuning_prompts: opts.tuning_prompts,
            n_values: opts.n_values.clone(),
            seed: opts.seed,
            orders: 2,
            ..icl_lab::tournament::TournamentOptions::for_task(task.as_ref())
        };
        let t = icl_lab::tournament::run("t", task.as_ref(), &entrants, &learners, &t_opts, &|_| {}).unwrap();
        let spd = |rows: &[icl_probes::measure::Measurement]| -> Vec<(String, usize, f64)> {
            let mut v: Vec<_> = rows
                .iter()
                .filter(|m| m.metric == "spd" && m.protocol.is_none() && m.model.as_deref() == Some(model.as_str()))
                .filter(|m| m.layer == Some(3))
                .map(|m| (m.candidate(), m.n_context.unwrap(), m.value))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (ours, theirs) = (spd(&r.measurements), spd(&t.measurements));
        assert_eq!(ours.len(), learners.len());
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!((&a.0, a.1), (&b.0, b.1));
            assert!((a.2 - b.2).abs() <= 1e-12 * b.2.abs().max(1e-12), "{a:?} vs {b:?}");
        }
        if name == "gd" {
            // P3: the model's map is the construction's (built from the same η on the same prompts).
            let map = |model: Option<&str>| -> Vec<(usize, usize, f64)> {
                r.measurements
                    .iter()
                    .filter(|m| {
                        m.model.as_deref() == model
                            && m.protocol.as_deref() == Some("P3")
                            && m.metric == "recovered"
                            && (model.is_some() || m.candidate() == truth)
                    })
                    .map(|m| (m.layer.unwrap(), m.position.unwrap(), m.value))
                    .collect()
            };
            let (got, want) = (map(Some(&model)), map(None));
            assert_eq!(got.len(), 4 * 11);
            assert_eq!(got.len(), want.len());
            for ((l, p, g), (l2, p2, w)) in got.iter().zip(&want) {
                assert_eq!((l, p), (l2, p2));
                assert!((g - w).abs() < 1e-4, "P3 at layer {l} position {p}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn the_corruption_gives_the_same_inputs_another_tasks_labels() {
    let c = config(1, true, |_| {});
    let (a, b) = (prompts(&c, 20, 6), prompts(&c, 21, 6));
    let k = icl_lab::protocols::corrupted(&a, &b);
    assert_eq!(k.xs, a.xs);
    assert_eq!(k.yq, a.yq);
    let w = b.w.as_ref().unwrap();
    for i in 0..6 {
        let want = a.xs.index_axis(ndarray::Axis(0), i).dot(&w.index_axis(ndarray::Axis(0), i).t());
        let got = k.ys.index_axis(ndarray::Axis(0), i);
        assert!((&got - &want).iter().all(|e| e.abs() < 1e-12));
    }
    assert!((&k.ys - &a.ys).iter().any(|e| e.abs() > 1e-3));
}
