"""Shared test helpers: tiny configs and paths."""

from __future__ import annotations

import os

from hope_jax.config import Config, default_config_dict, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(os.path.dirname(ROOT), "shared", "data", "tinyshakespeare", "input.txt")


def tiny_config(**overrides) -> Config:
    """A 2-layer, 64-wide byte-level model on the embedded corpus; dotted-key overrides."""
    c = default_config_dict()
    c.model.update(name="transformer", vocab_size=257, d_model=64, num_layers=2, num_heads=4)
    c.data.update(source="stdlib", seq_len=64, batch_size=8, seed=0)
    c.optim.update(lr=3e-3, warmup_steps=5)
    c.train.update(steps=20, log_every=1, eval_every=0, eval_batches=2, ckpt_every=0,
                   progress=False, tensorboard=False, async_ckpt=False)
    d = c.to_dict()
    for key, value in overrides.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return validate(d)


def train_losses(workdir) -> list[float]:
    """The per-step train losses a run logged to its metrics.jsonl."""
    import json

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def assert_causal_and_doc_isolated(model, t: int) -> None:
    """Logits before position 14 ignore later tokens, and the packed document starting at 10
    ignores the one before it (both mid-chunk for the small chunks the tests use)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    toks = (jnp.arange(2 * t).reshape(2, t) * 7) % 31
    seg = jnp.array([[1] * 10 + [2] * (t - 10)] * 2)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), toks)
    run = jax.jit(lambda tk: model.apply(params, tk, segment_ids_BT=seg))
    base = np.asarray(run(toks))
    later = np.asarray(run(toks.at[:, 14:].set((toks[:, 14:] + 5) % 31)))
    np.testing.assert_allclose(later[:, :14], base[:, :14], atol=1e-6, rtol=1e-6)
    assert not np.allclose(later[:, 14:], base[:, 14:])
    earlier_doc = np.asarray(run(toks.at[:, :10].set((toks[:, :10] + 3) % 31)))
    np.testing.assert_allclose(earlier_doc[:, 10:], base[:, 10:], atol=1e-6, rtol=1e-6)
    assert not np.allclose(earlier_doc[:, :10], base[:, :10])


def model_with(cfg, **keys):
    """A copy of a `ModelConfig` with each key set in the one section that holds it (the top
    level, `inner`, `hope`, `memory` or `baseline`)."""
    import dataclasses

    top = {f.name for f in dataclasses.fields(cfg)}
    subs = {}
    for k, v in keys.items():
        if k in top:
            subs.setdefault(None, {})[k] = v
            continue
        (sec,) = [s for s in ("inner", "hope", "memory", "baseline")
                  if k in {f.name for f in dataclasses.fields(getattr(cfg, s))}]
        subs.setdefault(sec, {})[k] = v
    out = dataclasses.replace(cfg, **subs.pop(None, {}))
    return dataclasses.replace(out, **{s: dataclasses.replace(getattr(out, s), **kv)
                                       for s, kv in subs.items()})
