//! `icl-lab bench`: training speed in ms/step, data generation included, for the paper's
//! 1-, 2- and 3-layer recurrent configurations and the 5-separate-layer model of Figs. 3 and 6. Every line is measured in the same process, one
//! after another, so ratios between lines are meaningful on a shared, noisy machine.

use std::time::Instant;

use anyhow::Context;

use crate::config::RunConfig;
use crate::train::{batch_tensors, spawn_data_stream, Trainer};

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchLine {
    pub name: String,
    pub layers: usize,
    pub recurrent: bool,
    pub threads: usize,
    pub device: String,
    pub ms_per_step: f64,
    /// Sampling alone, ms per batch on one core (overlapped with the step when training).
    pub data_ms_per_batch: f64,
}

/// Times `steps` training steps after `warmup` untimed ones.
pub fn bench_config(config: &RunConfig, warmup: usize, steps: usize) -> anyhow::Result<BenchLine> {
    let device = crate::device::open(&config.train.device)?;
    tch::set_num_threads(config.train.threads as i32);
    let task = config.task();
    let dims = task.dims();
    let mut trainer = Trainer::new(config, dims, device)?;
    let (batches, _thread) = spawn_data_stream(config)?;
    let mut run = |n: usize| -> anyhow::Result<()> {
        for _ in 0..n {
            let b = batches.recv().context("data thread stopped")?;
            let (tokens, targets) = batch_tensors(&b, config.model.tokens, dims, device);
            let loss = trainer.step(&tokens, &targets);
            // The training loop reads every loss (divergence check): so does the benchmark.
            f64::try_from(loss)?;
        }
        Ok(())
    };
    run(warmup)?;
    let start = Instant::now();
    run(steps)?;
    let ms_per_step = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    drop(batches);

    let mut rng = crate::rng::seeded_rng(config.seed, 99);
    let start = Instant::now();
    let reps = 20;
    for _ in 0..reps {
        let p = task.sample(&mut rng, config.train.batch);
        std::hint::black_box(config.model.tokens.token_buffer(&p, |x| x as f32));
    }
    let data_ms_per_batch = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
    Ok(BenchLine {
        name: config.name.clone(),
        layers: config.model.layers,
        recurrent: config.model.recurrent,
        threads: config.train.threads,
        device: config.train.device.clone(),
        ms_per_step,
        data_ms_per_batch,
    })
}

impl std::fmt::Display for BenchLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<28} {:>8.2} ms/step  ({} layer(s) {}, {} thread(s), {}; sampling alone {:.2} ms/batch)",
            self.name,
            self.ms_per_step,
            self.layers,
            if self.recurrent { "recurrent" } else { "separate" },
            self.threads,
            self.device,
            self.data_ms_per_batch
        )
    }
}

/// The configurations `icl-lab bench` measures: vo2023-fig2 with 1, 2, 3 recurrent layers and
/// with 5 separate layers (the model of Figs. 3 and 6).
pub fn default_configs(device: &str, threads: &[usize]) -> anyhow::Result<Vec<RunConfig>> {
    let mut out = Vec::new();
    for (layers, recurrent) in [(1usize, true), (2, true), (3, true), (5, false)] {
        for &t in threads {
            let mut c = RunConfig::preset("vo2023-fig2")?;
            let kind = if recurrent { "" } else { " sep" };
            c.name = format!("vo2023-fig2 L={layers}{kind} t={t}");
            c.model.layers = layers;
            c.model.recurrent = recurrent;
            c.model.init_scale = None;
            c.train.grad_clip = None;
            c.train.device = device.to_string();
            c.train.threads = t;
            out.push(c.resolve()?);
        }
    }
    Ok(out)
}
