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


def compiled_train_step(cfg):
    """The real train step of `cfg` (forward + backward + optimizer update, `jit_train_step` on
    cfg's mesh, state donated) compiled ahead of time on abstract inputs, nothing allocated.
    Returns (compiled, model, tx, mesh, abstract state, abstract batch, memory_analysis)."""
    from hope_jax import sharding
    from hope_jax.models.ntp_memory import check_budget
    from hope_jax.train.state import abstract_state, make_optimizer, state_shardings
    from hope_jax.train.step import jit_train_step

    mesh = sharding.make_mesh(cfg.mesh)
    sharding.check_batch(cfg.data.batch_size, cfg.optim.grad_accum, mesh)
    check_budget(cfg, dict(mesh.shape))
    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    state_sh = state_shardings(cfg, model, tx, mesh)
    state = abstract_state(cfg, model, tx, state_sh)
    shape, bsh = (cfg.data.batch_size, cfg.data.seq_len), sharding.batch_sharding(mesh, 2)
    batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=bsh)
             for k in ("inputs", "targets", "positions", "segment_ids")}
    batch["mask"] = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=bsh)
    compiled = jit_train_step(model, tx, cfg.optim.grad_accum, mesh, state_sh).lower(
        state, batch).compile()
    return compiled, model, tx, mesh, state, batch, compiled.memory_analysis()


def write_json(path: str, obj) -> None:
    """Writes a benchmark's results (parent folders created; numpy / jax scalars as floats)."""
    import json
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=float))
