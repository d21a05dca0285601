use icl_lab::config::RunConfig;
use icl_lab::layout::token_buffer;
use icl_lab::train::{batch_tensors, HostBatch, Trainer};
use rand::SeedableRng;
use std::time::Instant;
use tch::{Device, Kind};
fn main() {
    tch::set_num_threads(1);
    let layers: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let mut c = RunConfig::preset("vo2023-fig2").unwrap();
    c.model.layers = layers;
    c.model.init_scale = None;
    c.train.grad_clip = None;
    let c = c.resolve().unwrap();
    let task = icl_tasks::build(&c.task).unwrap();
    let p = task.sample(&mut icl_tasks::TaskRng::seed_from_u64(0), 2048);
    let hb = HostBatch {
        tokens: token_buffer(&p, |x| x as f32),
        targets: p.yq.iter().map(|&y| y as f32).collect(),
    };
    let dims = task.dims();
    let mut tr = Trainer::new(&c, dims, Device::Cpu).unwrap();
    let (tok, tgt) = batch_tensors(&hb, dims, Device::Cpu);
    let n = 200;
    let t = |name: &str, f: &mut dyn FnMut()| {
        for _ in 0..20 {
            f()
        }
        let s = Instant::now();
        for _ in 0..n {
            f()
        }
        println!(
            "{name}: {:.3} ms",
            s.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    };
    t("sample", &mut || {
        let p = task.sample(&mut icl_tasks::TaskRng::seed_from_u64(0), 2048);
        std::hint::black_box(token_buffer(&p, |x| x as f32));
    });
    t("to tensor", &mut || {
        std::hint::black_box(batch_tensors(&hb, dims, Device::Cpu));
    });
    t("forward", &mut || {
        std::hint::black_box(tch::no_grad(|| tr.model.forward(&tok, None)));
    });
    t("forward+backward", &mut || {
        let l = (tr.model.forward(&tok, None) - &tgt)
            .square()
            .mean(Kind::Float);
        l.backward();
    });
    t("full step", &mut || {
        let l = tr.step(&tok, &tgt);
        std::hint::black_box(f64::try_from(l).unwrap());
    });
}
