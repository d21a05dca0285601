"""Load an icl-lab run into Python and recompute its tournament rows there.

    .venv/bin/python examples/python_run.py [RUN_DIR]

With no RUN_DIR it trains the `tiny` preset (1-layer linear self-attention, d = 4, 300 steps)
with the CLI first. Then:
  1. `lab.read_run` reads the run, checked as the CLI checks it (complete, every file as its
     manifest says), with its weights as numpy arrays;
  2. a numpy forward pass of those weights (linear self-attention, no LayerNorm or MLP, as
     examples/lsa_numpy.py) is the model function;
  3. `lab.tournament` runs the lab's tournament on it, and `icl-lab tournament --json` runs the
     same tournament on the run in Rust (same prompts, candidates and options);
  4. the SPD / ILWD rows are compared: they agree to rounding (the Rust model computes in f32).
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

import icl_lab as lab

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The CLI: $ICL_LAB_BIN, else the release binary of cargo's target folder ($CARGO_TARGET_DIR or target/).
TARGET = ROOT / os.environ.get("CARGO_TARGET_DIR", "target")  # an absolute CARGO_TARGET_DIR replaces ROOT
BIN = os.environ.get("ICL_LAB_BIN", str(TARGET / "release" / "icl-lab"))


def lsa_model(run):
    """The run's linear self-attention as model_fn(xs, ys, xq, layer), in float64 numpy."""
    w, model = run["weights"], run["config"].get("model", {})
    assert not (model.get("softmax") or model.get("layer_norm") or model.get("mlp")), "linear attention only"
    assert model.get("tokens", "constructed") == "constructed", "tokens e = (x, y) only"
    heads, clip = model.get("heads", 1), model.get("token_clip", np.inf)

    def model_fn(xs, ys, xq, layer):
        b = xs.shape[0]
        query = np.concatenate([xq, np.zeros((b, ys.shape[2]))], axis=1)[:, None]  # (B, 1, d + o)
        h = np.concatenate([np.concatenate([xs, ys], axis=2), query], axis=1)  # (B, N + 1, d + o)
        for l in range(layer):
            p = l if f"layers.{l}.attn.q" in w else 0  # recurrent models store one layer
            q, k, v, o = (w[f"layers.{p}.attn.{m}"] for m in "qkvo")
            ctx = h[:, :-1]  # keys and values from the context only
            split = lambda a: a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(0, 2, 1, 3)
            qh, kh, vh = split(h @ q), split(ctx @ k), split(ctx @ v)  # (B, H, T, K), (B, H, N, K) ×2
            mixed = (qh @ kh.transpose(0, 1, 3, 2)) @ vh  # (B, H, T, K): linear attention
            h = np.clip(h + mixed.transpose(0, 2, 1, 3).reshape(b, h.shape[1], -1) @ o, -clip, clip)
        return -h[:, -1, -ys.shape[2]:]  # (B, o)

    return model_fn


def main():
    if len(sys.argv) > 1:
        run_dir = pathlib.Path(sys.argv[1])
    else:
        runs = pathlib.Path(os.environ.get("ICL_LAB_EXAMPLE_DIR") or tempfile.mkdtemp()) / "runs"
        subprocess.run([BIN, "train", "--preset", "tiny", "--steps", "300", "--runs", str(runs)], check=True, capture_output=True)
        run_dir = runs / "tiny" / "seed-0"
    run = lab.read_run(str(run_dir))
    task = run["config"]["task"]
    name, params = task.pop("name"), task
    options = dict(n=[2, 4, 8], prompts=128, tuning_prompts=512, orders=2, learners="default")

    rust = json.loads(
        subprocess.run(
            [BIN, "tournament", str(run_dir), "--no-untrained", "--json", "--n", ",".join(map(str, options["n"])),
             "--prompts", str(options["prompts"]), "--tuning-prompts", str(options["tuning_prompts"]),
             "--orders", str(options["orders"]), "--learners", options["learners"],
             "--reports", tempfile.mkdtemp(), "--figures", tempfile.mkdtemp()],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    model = run["config"]["name"]
    layers = run["config"]["model"].get("layers", 1)
    py = lab.tournament({model: lsa_model(run)}, name, params, layers=layers, **options)

    key = lambda r: (r["model"], r["layer"], r["n_context"], r.get("spec") and json.dumps(r["spec"], sort_keys=True), r["metric"])
    want = {key(r): r["value"] for r in rust["measurements"] if r["model"] and r["metric"] in ("spd", "ilwd", "loss")}
    got = {key(r): r["value"] for r in py["measurements"] if r["model"] and r["metric"] in ("spd", "ilwd", "loss")}
    assert want.keys() == got.keys(), sorted(set(want) ^ set(got))[:5]
    worst = max(abs(got[k] - want[k]) / max(abs(want[k]), 1e-6) for k in want)
    best = {r["layer"]: r["order"][0]["learner"] for r in py["ranking"] if r["metric"] == "spd"}
    best_rust = {r["layer"]: r["order"][0]["learner"] for r in rust["ranking"] if r["metric"] == "spd" and r["model"] == model}
    print(f"{run_dir}: {len(want)} SPD/ILWD/loss rows recomputed in Python; largest relative difference from the CLI's {worst:.1e}")
    print(f"best by SPD per layer — Python: {best}; CLI: {best_rust}")
    if worst > 1e-3 or best != best_rust:
        sys.exit("Python and the CLI disagree")


if __name__ == "__main__":
    main()
