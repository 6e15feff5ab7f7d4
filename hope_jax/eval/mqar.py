"""Multi-query associative recall (MQAR, Zoology / Arora et al. 2024): generator, scorer, trainer.

A row is `k_1 v_1 ... k_n v_n | k_a v_a k_b v_b ...`: n distinct keys with random values, then
every key queried once in a random order, each followed by its value. `gap` pad tokens between
the pairs and the queries put every pair at least `gap` tokens before any query: with gap >= a
chunked memory's chunk size, each pair lies in a chunk strictly before every query's chunk, so a
memory that reads only the state of past chunks (Titans/HOPE, SPEC A1) can answer every query
(gap 0: the pairs in the chunk where the queries start are invisible to it by construction).
The model is trained with the usual next-token loss restricted to the queried values (mask), and
accuracy is the fraction of queried values predicted by argmax. Keys are token ids
[1, 1 + num_keys), values [1 + num_keys, 1 + num_keys + num_values); 0 pads. Deterministic in
(seed, step).

Shape legend: B batch, T time, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def make_batch(rng: np.random.Generator, batch: int, num_kv: int, seq_len: int,
               num_keys: int = 64, num_values: int = 64, gap: int = 0) -> dict[str, np.ndarray]:
    """One MQAR batch in the trainer's format (inputs, targets, positions, segment_ids, mask)."""
    if 4 * num_kv + gap > seq_len or num_kv > num_keys:
        raise ValueError(f"num_kv={num_kv} with gap={gap} needs seq_len >= {4 * num_kv + gap} "
                         "and num_keys >= num_kv")
    rows = np.zeros((batch, seq_len + 1), np.int32)
    mask = np.zeros((batch, seq_len), np.float32)
    for b in range(batch):
        keys = rng.choice(num_keys, num_kv, replace=False) + 1
        vals = rng.integers(0, num_values, num_kv) + 1 + num_keys
        order = rng.permutation(num_kv)
        seq = np.concatenate([np.stack([keys, vals], 1).ravel(), np.zeros(gap, np.int32),
                              np.stack([keys[order], vals[order]], 1).ravel()])
        rows[b, :len(seq)] = seq
        q0 = 2 * num_kv + gap
        mask[b, q0:q0 + 2 * num_kv:2] = 1.0  # input = a queried key, target = its value
    pos = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy()
    return {"inputs": rows[:, :-1], "targets": rows[:, 1:], "positions": pos,
            "segment_ids": np.ones((batch, seq_len), np.int32), "mask": mask}


def accuracy(logits_BTV, batch: dict) -> float:
    """Fraction of masked targets whose argmax prediction is right."""
    hit = (np.asarray(logits_BTV).argmax(-1) == batch["targets"]) * batch["mask"]
    return float(hit.sum() / max(batch["mask"].sum(), 1.0))


def evaluate(logits_fn: Callable, num_kvs, seq_len: int, batches: int = 4, batch: int = 16,
             seed: int = 1, num_keys: int = 64, num_values: int = 64, gap: int = 0) -> dict:
    """Accuracy (percent) per number of key-value pairs; `logits_fn(batch) -> [B, T, V]`."""
    out = {}
    for n in num_kvs:
        rng = np.random.default_rng([seed, n])
        accs = [accuracy(logits_fn(b), b) for b in
                (make_batch(rng, batch, n, seq_len, num_keys, num_values, gap)
                 for _ in range(batches))]
        out[int(n)] = 100.0 * float(np.mean(accs))
    return out


def train_and_evaluate(cfg, task: dict, log: Callable[[str], None] = lambda s: None) -> dict:
    """Trains `cfg.model` from scratch on MQAR and returns accuracy vs number of pairs.

    Args:
      cfg: a validated hope_jax `Config` (model, optim; `train.steps`, `data.batch_size`,
        `data.seq_len` are used).
      task: {"train_num_kvs": [...] (each batch draws one), "eval_num_kvs": [...], "num_keys",
        "num_values", "eval_batches", "seed", "gap" (pad tokens between pairs and queries)}.
      log: progress callback (the CLI prints; the library does not).
    """
    from hope_jax.models.lm import LM
    from hope_jax.train.state import init_state, make_optimizer
    from hope_jax.train.step import make_train_step

    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    state = init_state(cfg, model, tx)
    step = jax.jit(make_train_step(model, tx), donate_argnums=0)
    rng = np.random.default_rng(task.get("seed", 0))
    kw = dict(num_keys=task.get("num_keys", 64), num_values=task.get("num_values", 64),
              gap=task.get("gap", 0))
    losses = []
    for i in range(cfg.train.steps):
        n = int(rng.choice(task["train_num_kvs"]))
        b = make_batch(rng, cfg.data.batch_size, n, cfg.data.seq_len, **kw)
        state, m = step(state, {k: jnp.asarray(v) for k, v in b.items()})
        if (i + 1) % max(1, cfg.train.log_every) == 0 or i + 1 == cfg.train.steps:
            losses.append((i + 1, float(m["loss"])))
            log(f"mqar step {i + 1}: loss {losses[-1][1]:.4f}")
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x))
    acc = evaluate(lambda b: fwd(state.params, jnp.asarray(b["inputs"])), task["eval_num_kvs"],
                   cfg.data.seq_len, task.get("eval_batches", 4), cfg.data.batch_size,
                   seed=task.get("seed", 0) + 1, **kw)
    return {"model": cfg.model.name, "accuracy_by_num_kv": acc, "train_loss": losses}


def plot(results: dict[str, dict], path: str) -> str:
    """Accuracy vs number of key-value pairs, one line per model (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, r in results.items():
        acc = {int(k): v for k, v in r["accuracy_by_num_kv"].items()}  # JSON keys are strings
        xs = sorted(acc)
        ax.plot(xs, [acc[k] for k in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("key-value pairs")
    ax.set_ylabel("MQAR accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
