"""Recompute a von Oswald et al. model's predictions with numpy alone, from the files icl-lab writes.

    icl-lab activations runs/vo2023-fig2/seed-0          # writes runs/.../activations.safetensors
    python examples/lsa_numpy.py runs/vo2023-fig2/seed-0

Linear self-attention without LayerNorm or MLP (the vo2023 LSA models: 1 layer, recurrent, or
separate layers): tokens e_i = (x_i, y_i), the query (x_q, 0); per layer h <- h + (h Wq)(C Wk)^T (C Wv) Wo
per head, with C the context rows of h; the prediction is -(the query token's last entry).
"""
import sys
import tomllib
import numpy as np
from safetensors.numpy import load_file

run = sys.argv[1]
w = load_file(f"{run}/weights.safetensors")
acts = load_file(f"{run}/activations.safetensors")
h = acts["tokens"].astype(np.float64)                      # (B, N + 1, D)
n_layers = 1 + max(int(k.split(".")[1]) for k in acts if k.startswith("layers."))
model = tomllib.load(open(f"{run}/config.toml", "rb")).get("model", {})  # absent: the defaults
assert not (model.get("softmax") or model.get("layer_norm") or model.get("mlp")), "linear attention only"
heads, clip = model.get("heads", 1), model.get("token_clip", np.inf)
for l in range(n_layers):
    p = l if f"layers.{l}.attn.q" in w else 0             # recurrent models store one layer
    q, k, v, o = (w[f"layers.{p}.attn.{m}"].astype(np.float64) for m in "qkvo")
    ctx = h[:, :-1]                                        # keys and values from the context only
    split = lambda a: a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(0, 2, 1, 3)
    qh, kh, vh = split(h @ q), split(ctx @ k), split(ctx @ v)  # (B, H, T, K), (B, H, N, K) ×2
    mixed = (qh @ kh.transpose(0, 1, 3, 2)) @ vh           # (B, H, T, K): linear attention, no softmax
    h = np.clip(h + mixed.transpose(0, 2, 1, 3).reshape(h.shape[0], h.shape[1], -1) @ o, -clip, clip)
prediction = -h[:, -1, -1:]                                # (B, 1)
error = np.abs(prediction - acts["prediction"]).max()
print(f"{prediction.shape[0]} prompts, {n_layers} layer(s): max |numpy - icl-lab| = {error:.2e}")
sys.exit(0 if error < 1e-5 else 1)
