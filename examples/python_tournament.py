"""Is *my* model doing GD? A tiny linear self-attention model trained in plain numpy on the lab's
prompts, then the lab's tournament on it, from Python.

    .venv/bin/python examples/python_tournament.py

The model is a 1-layer linear self-attention in the merged parameterisation of Ahn et al. 2023 /
Zhang, Frei & Bartlett 2023: tokens e = (x, y), query e_q = (x_q, 0), ŷ = pᵀ C M e_q with
C = (1/n) Σ eᵢeᵢᵀ over the context (p is P W_V's last row, M = W_Kᵀ W_Q). Any framework works:
`lab.tournament` calls `model_fn(xs, ys, xq, layer)` with float64 numpy arrays and takes ŷ back as
numpy or as a torch tensor (for a PyTorch model: `lambda xs, ys, xq, layer:
net(torch.from_numpy(xs).float(), …)`). Here numpy, so that it runs wherever the lab does.
"""

import numpy as np

import icl_lab as lab


def train_lsa(steps=400, d=3, n=10, seed=0, lr=0.01):
    """Adam on ½·MSE with numpy gradients, batches of 256 fresh prompts per step (seeds 1000 + t of
    the lab's `linear` task), from a small random start; steps = 0 is the untrained twin."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.1, d + 1)
    m = rng.normal(0, 0.1, (d + 1, d + 1))
    moments = [np.zeros_like(p), np.zeros_like(p), np.zeros_like(m), np.zeros_like(m)]
    b1, b2 = 0.9, 0.999
    for t in range(1, steps + 1):
        batch = lab.sample("linear", {"x_dim": d, "context_len": n}, batch=256, n=n, seed=1000 + t)
        e = np.concatenate([batch["xs"], batch["ys"]], axis=2)  # (B, n, d + 1)
        eq = np.concatenate([batch["xq"], np.zeros((len(e), 1))], axis=1)  # (B, d + 1)
        c = np.einsum("bni,bnj->bij", e, e) / n  # (B, d + 1, d + 1)
        cm_eq = np.einsum("bij,jk,bk->bi", c, m, eq)  # C M e_q, (B, d + 1)
        err = cm_eq @ p - batch["yq"][:, 0]  # (B,)
        grads = [(err[:, None] * cm_eq).mean(0), np.einsum("b,bi,bj->ij", err, np.einsum("bij,i->bj", c, p), eq) / len(err)]
        for i, (w, g) in enumerate(zip((p, m), grads)):
            moments[2 * i] = b1 * moments[2 * i] + (1 - b1) * g
            moments[2 * i + 1] = b2 * moments[2 * i + 1] + (1 - b2) * g * g
            w -= lr * (moments[2 * i] / (1 - b1**t)) / (np.sqrt(moments[2 * i + 1] / (1 - b2**t)) + 1e-8)

    def model_fn(xs, ys, xq, layer):
        e = np.concatenate([xs, ys], axis=2)
        eq = np.concatenate([xq, np.zeros((len(xq), 1))], axis=1)
        c = np.einsum("bni,bnj->bij", e, e) / xs.shape[1]
        return np.einsum("i,bij,jk,bk->b", p, c, m, eq)  # (B,)

    return model_fn


def main():
    params = {"x_dim": 3, "context_len": 10}
    report = lab.tournament(
        {"numpy-lsa": train_lsa(), "numpy-lsa · untrained": train_lsa(steps=0)},
        "linear",
        params,
        n=[2, 5, 10],
        prompts=256,
        tuning_prompts=1024,
    )
    print("model                  best by SPD (SPD/d)             runner-up (margin [min, max])")
    for r in report["ranking"]:
        if r["metric"] != "spd":
            continue
        best, rival = r["order"][0], r["beyond_tie"]
        ties = " = ".join([best["learner"], *r["tied_with_best"]])
        rival_text = f"{rival['against']} ({rival['mean']:.2e} [{rival['min']:.2e}, {rival['max']:.2e}])" if rival else "– (all tied)"
        print(f"{r['model']:<22} {ties} ({best['value']:.2e})   {rival_text}")
    print(f"{len(report['measurements'])} measurement rows (the schema of reports/*.json); lab.as_dataframe(...) gives a DataFrame")


if __name__ == "__main__":
    main()
