use std::time::Instant;
use tch::{Device, Kind, Tensor};
fn main() {
    tch::set_num_threads(1);
    let (b, n, d) = (2048i64, 10i64, 11i64);
    let o = (Kind::Float, Device::Cpu);
    let wq = Tensor::randn([d, d], o).set_requires_grad(true);
    let wk = Tensor::randn([d, d], o).set_requires_grad(true);
    let wv = Tensor::randn([d, d], o).set_requires_grad(true);
    let ctx = Tensor::randn([b, n, d], o);
    let xq = Tensor::randn([b, 1, d], o);
    // batch-last copies
    let ctx_t = ctx.permute([2, 1, 0]).contiguous(); // (D, N, B)
    let xq_t = xq.permute([2, 1, 0]).contiguous().view([d, b]); // (D, B)
    let ones = Tensor::ones([d, 1], o);
    let variants: Vec<(&str, Box<dyn Fn() -> Tensor>)> = vec![
        (
            "bmm",
            Box::new(|| {
                let q = xq.matmul(&wq);
                let k = ctx.matmul(&wk);
                let v = ctx.matmul(&wv);
                q.matmul(&k.transpose(1, 2)).matmul(&v).sum(Kind::Float)
            }),
        ),
        (
            "elementwise batch-first",
            Box::new(|| {
                let q = xq.matmul(&wq);
                let k = ctx.matmul(&wk);
                let v = ctx.matmul(&wv);
                let logits = (&k * &q).matmul(&ones); // (B,N,1)
                (&v * logits)
                    .sum_dim_intlist(1, false, Kind::Float)
                    .sum(Kind::Float)
            }),
        ),
        (
            "batch-last",
            Box::new(|| {
                let q = wq.tr().matmul(&xq_t); // (K,B)
                let k = wk.tr().matmul(&ctx_t.view([d, n * b])).view([d, n, b]);
                let v = wv.tr().matmul(&ctx_t.view([d, n * b])).view([d, n, b]);
                let logits = (&k * q.unsqueeze(1)).sum_dim_intlist(0, false, Kind::Float); // (N,B)
                (&v * logits.unsqueeze(0))
                    .sum_dim_intlist(1, false, Kind::Float)
                    .sum(Kind::Float)
            }),
        ),
    ];
    for round in 0..3 {
        for (name, f) in &variants {
            for _ in 0..10 {
                f().backward();
            }
            let s = Instant::now();
            for _ in 0..100 {
                f().backward();
            }
            println!(
                "round {round} {name}: {:.3} ms fwd+bwd",
                s.elapsed().as_secs_f64() * 10.0
            );
        }
    }
}
