"""Pieces shared by the benchmark scripts."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from hope_jax.models.lm import LM


def compiled_grad_step(cfg, batch: int, seq: int):
    """`jax.grad` of the next-token loss of `LM(cfg)` on a fixed [batch, seq] token pattern,
    compiled ahead of time. Returns (compiled, params, tokens, estimated GB, param count); the
    estimate is XLA's (arguments + outputs + temporaries)."""
    model = LM(cfg)
    toks = (jnp.arange(batch * (seq + 1)).reshape(batch, seq + 1) * 7919) % cfg.vocab_size
    params = jax.jit(model.init)(jax.random.PRNGKey(0), toks[:, :-1])

    def loss(p, toks):
        logits = model.apply(p, toks[:, :-1]).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, toks[:, 1:, None], -1))

    compiled = jax.jit(jax.grad(loss)).lower(params, toks).compile()
    mem = compiled.memory_analysis()
    gb = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**30
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    return compiled, params, toks, gb, n


def interleaved_times(runs: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each compiled step in `runs` ({name: (compiled, params, toks)}), the
    models interleaved round by round so that machine noise hits them alike."""
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for name, (compiled, params, toks) in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(params, toks))
            times[name].append(time.perf_counter() - t0)
    return times
