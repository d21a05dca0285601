"""icl-lab from Python: seeded in-context-learning tasks, reference learners, metrics and the
hypothesis tournament, for any model.

The numbers are the Rust lab's (the same prompts bit for bit for a seed and stream, the same
learners, the same tournament loop as ``icl-lab tournament``); this module is a thin layer that
takes numpy arrays (or anything ``np.asarray`` accepts, torch tensors included) and gives back
numpy arrays, dicts and lists of measurement rows in the schema of ``reports/*.json``.

    >>> import icl_lab as lab
    >>> p = lab.sample("linear", {"x_dim": 5}, batch=4, n=10, seed=0)
    >>> gd = lab.Learner("gd(steps=1, eta=0.1)")
    >>> preds, sens = gd.predict(p)

Bad input raises ``ValueError`` with the command line's one-line message.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from . import _core

__all__ = [
    "tasks",
    "task_info",
    "sample",
    "learners",
    "resolve_learners",
    "Learner",
    "spd",
    "ilwd",
    "alignment",
    "rank",
    "tournament",
    "curve",
    "read_run",
    "as_dataframe",
    "EVAL_STREAM",
    "TUNING_STREAM",
]

#: RNG streams of a seed, as the Rust side names them: evaluation prompts, tuning prompts.
EVAL_STREAM = 0
TUNING_STREAM = 1

Prompts = dict  # {"xs": (B, n, d), "ys": (B, n, o), "xq": (B, d), "yq": (B, o), "w": (B, o, d)?}


def _params(params: Optional[Mapping[str, Any]]) -> str:
    return json.dumps(dict(params or {}))


def _pool(pool: Optional[Sequence[int]]):
    if pool is None:
        return None
    size, seed = pool
    return (int(size), int(seed))


def tasks() -> list[dict]:
    """Every registered task: name, about, default parameters, dims, learners and shifts."""
    return json.loads(_core.tasks_json())


def task_info(task: str, params: Optional[Mapping[str, Any]] = None, pool: Optional[Sequence[int]] = None) -> dict:
    """One task with ``params``: resolved parameters, dims, zero-predictor error and its learners."""
    return json.loads(_core.task_json(task, _params(params), _pool(pool)))


def sample(
    task: str,
    params: Optional[Mapping[str, Any]] = None,
    *,
    batch: int,
    n: Optional[int] = None,
    seed: int = 0,
    stream: int = EVAL_STREAM,
    pool: Optional[Sequence[int]] = None,
) -> Prompts:
    """``batch`` prompts of ``n`` context pairs (default: the task's length) from ``stream`` of ``seed``.

    Returns float64 arrays ``xs`` (B, n, d), ``ys`` (B, n, o), ``xq`` (B, d), ``yq`` (B, o) and,
    for tasks with a hidden linear function, ``w`` (B, o, d). ``pool=(size, pool_seed)`` draws the
    hidden functions from a fixed pool (Raventós et al. 2023), as ``train.task_pool`` does.
    """
    if n is None:
        n = task_info(task, params)["context_len"]
    return _core.sample(task, _params(params), int(batch), int(n), int(seed), int(stream), _pool(pool))


def learners() -> list[tuple[str, str]]:
    """Every learner family: (name, one line saying what it is)."""
    return _core.learner_families()


def resolve_learners(text: str, task: Optional[str] = None, params: Optional[Mapping[str, Any]] = None) -> list[dict]:
    """The specs a ``--learners`` string names (``default`` = the task's learners, ``+list`` adds)."""
    defaults = task_info(task, params)["learners"] if task else []
    return json.loads(_core.resolve_learners(text, json.dumps(defaults)))


def _f64(a) -> np.ndarray:
    """Any array-like (numpy, lists, a torch tensor) as a contiguous float64 array."""
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


def _array(a, ndim: int, name: str) -> np.ndarray:
    a = _f64(a)
    if a.ndim != ndim:
        raise ValueError(f"prompts: {name} must have {ndim} dimensions (got shape {a.shape})")
    return a


def _prompts(p: Mapping[str, Any]) -> dict:
    """Prompts as float64 arrays of the shapes the core takes; ys (B, n) and yq (B,) become o = 1."""
    for key in ("xs", "ys", "xq"):
        if key not in p:
            raise ValueError(f"prompts: missing `{key}`")
    ys = _f64(p["ys"])
    out = {"xs": _array(p["xs"], 3, "xs"), "ys": _array(ys[..., None] if ys.ndim == 2 else ys, 3, "ys"), "xq": _array(p["xq"], 2, "xq")}
    if p.get("yq") is not None:
        yq = _f64(p["yq"])
        out["yq"] = _array(yq[:, None] if yq.ndim == 1 else yq, 2, "yq")
    if p.get("w") is not None:
        out["w"] = _array(p["w"], 3, "w")
    return out


class Learner:
    """A reference learner from its spec, e.g. ``Learner("ridge(lambda=0.1)")``.

    Hyperparameters the spec leaves open (``gd(steps=2)``'s η, ``ridge``'s λ, …) are tuned on
    ``tuning`` prompts (draw them from ``stream=TUNING_STREAM``, never the evaluation prompts).
    """

    def __init__(self, spec: str, tuning: Optional[Mapping[str, Any]] = None):
        self._inner = _core.Learner(spec, _prompts(tuning) if tuning is not None else None)

    @property
    def name(self) -> str:
        """The family name, e.g. ``gd``."""
        return self._inner.name

    @property
    def spec(self) -> str:
        """The spec as given (a tournament candidate's identity)."""
        return self._inner.spec

    @property
    def label(self) -> str:
        """``name(k=v, …)`` with the hyperparameters used."""
        return self._inner.label

    @property
    def params(self) -> dict:
        """The hyperparameters used, fixed or tuned."""
        return json.loads(self._inner.params_json())

    def predict(self, prompts: Mapping[str, Any]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """ŷ (B, o) at each query and ∂ŷ_last/∂x_q (B, d), or None where it is not defined."""
        return self._inner.predict(_prompts(prompts))

    def weights(self, prompts: Mapping[str, Any]) -> Optional[np.ndarray]:
        """Per-prompt weights W (B, o, d) of a learner with a linear hypothesis (ŷ = W x_q), else None."""
        return self._inner.weights(_prompts(prompts))

    def smoother(self, prompts: Mapping[str, Any]) -> np.ndarray:
        """s (B, n) with ŷ = s(X, x_q)ᵀ y (scalar labels); ValueError if the learner is not linear in y."""
        return self._inner.smoother(_prompts(prompts))

    def __repr__(self) -> str:
        return f"Learner({self.label})"


def spd(a, b, d: int) -> float:
    """SPD / d (Akyürek et al. 2023): mean over prompts of ‖ŷ_a − ŷ_b‖² / d, for predictions (B, o)."""
    return _core.spd(_array(a, 2, "a"), _array(b, 2, "b"), int(d))


def ilwd(a, b) -> float:
    """ILWD / d: mean over prompts of ‖ŵ_a − ŵ_b‖²_F / d, for weights (B, o, d)."""
    return _core.ilwd(_array(a, 3, "a"), _array(b, 3, "b"))


def alignment(preds_a, sens_a, preds_b, sens_b) -> dict:
    """von Oswald et al.'s preds diff, model diff and model cos from predictions (B, o) and ∂ŷ/∂x_q (B, d)."""
    return json.loads(
        _core.alignment(
            _array(preds_a, 2, "preds_a"), _array(sens_a, 2, "sens_a"), _array(preds_b, 2, "preds_b"), _array(sens_b, 2, "sens_b")
        )
    )


def rank(rows: Iterable[Mapping[str, Any]], metric: str = "spd") -> list[dict]:
    """The tournament's ranking of measurement rows by ``metric``: per (model, layer), candidates
    best first with ties, the margin to the runner-up and to the first candidate not tied, and
    the seeds that agree."""
    return json.loads(_core.rank(json.dumps(list(rows)), metric))


ModelFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int], Any]


def _as_model_fn(fn: ModelFn) -> ModelFn:
    def call(xs, ys, xq, layer):
        return _f64(fn(xs, ys, xq, layer))

    return call


def tournament(
    model: Union[ModelFn, Mapping[str, Union[ModelFn, Sequence[ModelFn]]]],
    task: str = "linear",
    params: Optional[Mapping[str, Any]] = None,
    *,
    layers: int = 1,
    n: Optional[Sequence[int]] = None,
    learners: str = "default",
    prompts: int = 512,
    tuning_prompts: int = 4096,
    queries: Optional[int] = None,
    orders: int = 8,
    seed: int = 0,
    fd_step: float = 1e-3,
    pool: Optional[Sequence[int]] = None,
) -> dict:
    """The hypothesis tournament of ``icl-lab tournament`` over your own model(s).

    ``model`` is ``model_fn(xs, ys, xq, layer) -> ŷ`` with xs (B, n, d), ys (B, n, o), xq (B, d)
    float64 arrays and ŷ (B, o) or (B,) (numpy, or a torch tensor), the model read out after
    ``layer`` (1…``layers``); or a dict of such, name → fn or name → [fn per seed] (e.g. your model
    and its untrained twin, as controls). Every candidate in ``learners`` (``default`` = the
    task's, ``+…`` adds, as ``--learners``) is fitted on tuning prompts per n and compared with
    each model after each layer by SPD, ILWD, model cos, preds diff and influence cos.
    ∂ŷ/∂x_q and ∂ŷ/∂y are central finite differences with step ``fd_step`` (exact up to rounding
    for a model linear in them).

    Returns ``{"task", "options", "learners", "skipped", "ranking", "measurements"}``: the fields
    of ``reports/*.json``; ``as_dataframe(result["measurements"])`` gives a DataFrame.
    """
    if callable(model):
        model = {"model": model}
    entries = []
    for name, fns in model.items():
        fns = [fns] if callable(fns) else list(fns)
        for s, fn in enumerate(fns):
            entries.append((str(name), s, _as_model_fn(fn), int(layers)))
    report = _core.tournament(
        entries,
        task,
        _params(params),
        learners,
        None if n is None else [int(v) for v in n],
        int(prompts),
        int(tuning_prompts),
        None if queries is None else int(queries),
        int(orders),
        int(seed),
        float(fd_step),
        _pool(pool),
    )
    return json.loads(report)


def curve(
    task: str = "linear",
    params: Optional[Mapping[str, Any]] = None,
    *,
    learners: str = "default",
    models: Optional[Mapping[str, ModelFn]] = None,
    layer: int = 1,
    n: Optional[Sequence[int]] = None,
    prompts: int = 1280,
    tuning_prompts: int = 4096,
    seed: int = 0,
    shift: Optional[Union[str, tuple[str, float]]] = None,
    pool: Optional[Sequence[int]] = None,
) -> list[dict]:
    """Garg et al.'s in-context learning curve, as ``icl-lab curve`` measures it: the normalised
    error (‖ŷ − y_q‖² over the zero predictor's) of each learner (a ``--learners`` string) and each
    model (name → ``model_fn``, read out after ``layer``) at each n (default 0…N), mean with a 90%
    bootstrap interval over ``prompts`` prompts; learners' open hyperparameters are tuned per n on
    separate prompts. ``shift="label_noise=0.5"`` (or ``("label_noise", 0.5)``) evaluates under a
    distribution shift. Returns measurement rows (metric ``normalised_error``)."""
    if n is None:
        n = range(task_info(task, params, pool)["context_len"] + 1)
    if shift is not None and not isinstance(shift, str):
        kind, value = shift
        shift = f"{kind}={value!r}"
    entries = [(str(k), 0, _as_model_fn(fn), int(layer)) for k, fn in (models or {}).items()]
    rows = _core.curve(
        task, _params(params), learners, entries, [int(v) for v in n], int(prompts), int(tuning_prompts), int(seed), shift, _pool(pool)
    )
    return json.loads(rows)


def read_run(run_dir: str) -> dict:
    """A run directory of ``icl-lab train``, checked as the CLI checks it before every use (complete,
    and every file as its manifest says): ``{"config", "metrics", "manifest", "weights"}`` with the
    config parsed from TOML and the weights as float64 arrays by parameter name."""
    import tomllib

    config, metrics, manifest, weights = _core.read_run(str(run_dir))
    return {"config": tomllib.loads(config), "metrics": json.loads(metrics), "manifest": json.loads(manifest), "weights": weights}


def as_dataframe(rows: Iterable[Mapping[str, Any]]):
    """Measurement rows as a pandas DataFrame (pandas must be installed)."""
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("as_dataframe needs pandas: pip install pandas") from e
    return pd.DataFrame(list(rows))
