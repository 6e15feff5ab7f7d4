"""Continual learning over a sequential-domains stream, and loss by position (in-context curves).

Train on domain A, then B, then C, ... (one optimizer, no replay); after each phase evaluate every
domain's held-out text. With L[p][d] the loss on domain d after phase p:
  * forgetting(d)   = L[last][d] - L[d][d]     (>0: the model got worse on d after moving on);
  * backward transfer = mean over d < last of -forgetting(d) (GEM's BWT, in loss units);
  * in-context adaptation: mean NLL per position on an unseen domain's documents (a model that
    learns in context -- fast memory, CMS -- lowers its loss along the document).

Domains default to Python-stdlib subpackages (the embedded corpus) plus tinyshakespeare when the
file is present. Byte-level tokens throughout.

Shape legend: B batch, T time, V vocabulary.
"""

from __future__ import annotations

import glob
import os
import sysconfig
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

SHAKESPEARE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "..", "shared", "data", "tinyshakespeare", "input.txt")


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def default_domains(packages=("json", "email", "asyncio"), max_bytes: int = 400_000) -> dict:
    """{name: text}: stdlib subpackages' sources, then tinyshakespeare if present."""
    std = sysconfig.get_paths()["stdlib"]
    out = {}
    for p in packages:
        files = sorted(glob.glob(os.path.join(std, p, "**", "*.py"), recursive=True))
        text = "".join(_read(f) for f in files)
        if text:
            out[f"stdlib/{p}"] = text[:max_bytes]
    if os.path.exists(SHAKESPEARE):
        out["tinyshakespeare"] = _read(SHAKESPEARE)[:max_bytes]
    return out


def file_domains(paths, max_bytes: int = 0) -> dict:
    """{file stem: text} of text files: each path a file, or a directory whose `*.txt` files
    (sorted) are read; `max_bytes` > 0 keeps each file's first max_bytes characters."""
    files = []
    for p in paths:
        found = sorted(glob.glob(os.path.join(p, "*.txt"))) if os.path.isdir(p) else [p]
        if not found or not all(os.path.isfile(f) for f in found):
            raise FileNotFoundError(f"no text file at {p!r} (a file, or a directory of *.txt)")
        files += found
    return {os.path.splitext(os.path.basename(f))[0]: _read(f)[:max_bytes or None] for f in files}


def cipher(text: str, seed: int = 0) -> str:
    """`text` under a fixed random substitution of the 26 letters (case kept; everything else,
    spacing and punctuation, unchanged): the same documents in a language no model has seen."""
    import string

    perm = np.random.default_rng(seed).permutation(26)
    lo = "".join(string.ascii_lowercase[i] for i in perm)
    return text.translate(str.maketrans(string.ascii_lowercase + string.ascii_uppercase,
                                        lo + lo.upper()))


def split_tokens(text: str, tokenizer, val_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of the text split into (train, validation) by position."""
    ids = np.asarray(tokenizer.encode(text), np.int32)
    cut = int(len(ids) * (1 - val_frac))
    return ids[:cut], ids[cut:]


def windows(ids: np.ndarray, seq_len: int, n: int, rng: np.random.Generator | None) -> np.ndarray:
    """n windows of seq_len + 1 tokens (random starts, or evenly spaced when rng is None)."""
    hi = len(ids) - seq_len - 1
    if hi <= 0:
        raise ValueError(f"domain text of {len(ids)} tokens is shorter than seq_len {seq_len}")
    starts = rng.integers(0, hi, n) if rng is not None else np.linspace(0, hi, n).astype(int)
    return np.stack([ids[s:s + seq_len + 1] for s in starts])


def make_nll_fn(model) -> Callable:
    """Jitted `(params, windows_BT1) -> per-token NLL [B, T]` (fp32)."""

    @jax.jit
    def nll(params, w):
        logits = model.apply({"params": params}, w[:, :-1]).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, w[:, 1:])

    return nll


def loss_by_position(nll_fn: Callable, params, wins: np.ndarray, bins: int = 16) -> dict:
    """Mean NLL per position, averaged over windows and into `bins` equal position buckets."""
    nll = np.asarray(nll_fn(params, jnp.asarray(wins)))
    per_pos = nll.mean(0)
    edges = np.linspace(0, len(per_pos), bins + 1).astype(int)
    return {"positions": [int(e) for e in edges[1:]],
            "loss": [float(per_pos[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]}


def report(matrix: list[list[float]], domains: list[str]) -> dict:
    """Forgetting / backward transfer from L[phase][domain] (phases train domains in order)."""
    m = np.asarray(matrix, np.float64)
    if m.shape != (len(domains), len(domains)):
        raise ValueError(f"loss matrix {m.shape} must be [phases, domains] = {len(domains)}^2")
    last = m.shape[0] - 1
    forgetting = {d: float(m[last, i] - m[i, i]) for i, d in enumerate(domains)}
    bwt = float(np.mean([-forgetting[d] for d in domains[:-1]])) if last else 0.0
    return {"domains": list(domains), "loss_matrix": m.tolist(), "forgetting": forgetting,
            "backward_transfer": bwt, "final_avg_loss": float(m[last].mean()),
            "learned_avg_loss": float(np.mean(np.diag(m)))}


def run(cfg, domains: dict[str, str], tokenizer, steps_per_domain: int = 50,
        eval_windows: int = 8, log: Callable[[str], None] = lambda s: None) -> dict:
    """Trains `cfg.model` from scratch through the domains in order; the module-doc report.

    `cfg.data.seq_len` / `batch_size` set the windows; the optimizer's schedule spans all phases.
    """
    import dataclasses

    from hope_jax.models.lm import LM
    from hope_jax.train.state import init_state, make_optimizer
    from hope_jax.train.step import make_train_step

    names = list(domains)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, steps=steps_per_domain * len(names)))
    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    state = init_state(cfg, model, tx)
    step = jax.jit(make_train_step(model, tx), donate_argnums=0)
    nll_fn = make_nll_fn(model)
    t, bsz = cfg.data.seq_len, cfg.data.batch_size
    splits = {n: split_tokens(domains[n], tokenizer) for n in names}
    val = {n: windows(splits[n][1], t, eval_windows, None) for n in names}
    rng = np.random.default_rng(cfg.data.seed)
    ones = np.ones((bsz, t), np.float32)
    pos = np.broadcast_to(np.arange(t, dtype=np.int32), (bsz, t))
    matrix, adaptation = [], {}
    for p, name in enumerate(names):
        # in-context curve on the domain before any training on it (unseen-domain adaptation)
        adaptation[name] = loss_by_position(nll_fn, state.params, val[name])
        for _ in range(steps_per_domain):
            w = windows(splits[name][0], t, bsz, rng)
            batch = {"inputs": w[:, :-1], "targets": w[:, 1:], "positions": pos,
                     "segment_ids": ones.astype(np.int32), "mask": ones}
            state, metrics = step(state, jax.tree.map(jnp.asarray, batch))
        matrix.append([float(np.asarray(nll_fn(state.params, jnp.asarray(val[n]))).mean())
                       for n in names])
        log(f"continual phase {p + 1}/{len(names)} ({name}): "
            + ", ".join(f"{n}={v:.3f}" for n, v in zip(names, matrix[-1])))
    return {"model": cfg.model.name, "steps_per_domain": steps_per_domain,
            **report(matrix, names), "adaptation_before_training": adaptation}


def plot(results: dict[str, dict], path: str) -> str:
    """Per model: loss on each domain across phases (forgetting) + in-context curves (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.2 * len(results)), squeeze=False)
    for row, (name, r) in zip(axes, results.items()):
        m = np.asarray(r["loss_matrix"])
        for i, d in enumerate(r["domains"]):
            row[0].plot(range(1, len(m) + 1), m[:, i], marker="o", label=d)
            curve = r["adaptation_before_training"][d]
            row[1].plot(curve["positions"], curve["loss"], label=d)
        row[0].set_xlabel("after training phase")
        row[0].set_ylabel("val loss (nats/token)")
        row[0].set_title(f"{name}: loss per domain (forgetting)")
        row[1].set_xlabel("position in window")
        row[1].set_ylabel("loss")
        row[1].set_title(f"{name}: in-context loss on unseen domain")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
