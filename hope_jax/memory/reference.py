"""Slow, obviously-correct token-by-token reference of the inner loop (tests and benchmarks only).

One `lax.scan` step per token, written straight from the definitions:

  at a chunk start (t mod C == 0):  W_ref <- W          (gradient reference point, SPEC A1)
  at a document start:              W, opt <- W_0, init(W_0);  W_ref <- W_0
  g_t = grad L~(W_ref; k_t, v_t)                        (autodiff of the objective, SPEC A11)
  y_t = M(W_ref; q_t)                                   (read-before-write)
  W, opt <- optimizer.step(W, opt, g_t, ctx_t)          (the rule's own per-token definition)
  y_t = M(W; q_t)                                       (read-after-write instead)

With chunk size 1, W_ref is the previous token's state: the exact per-token recurrence. Same
signature and shapes as `hope_jax.memory.scan.memory_scan`, so tests compare them directly.

Shape legend: B batch, H heads, T time, K key dim, V value dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hope_jax.memory.optimizers import TokenContext
from hope_jax.memory.rules import token_grad
from hope_jax.memory.scan import MemorySpec, MemoryState, _state_dtype, init_state


def _one_sequence(spec: MemorySpec, init_params, params, opt_state, q, k, v, gates, reset):
    arch, opt = spec.arch, spec.optimizer
    grad = token_grad(arch, spec.objective)
    opt_init = opt.init(init_params)

    def tok(carry, xs):
        w, s, w_ref = carry
        i, q_t, k_t, v_t, g_t, r_t = xs
        w_ref = jax.tree_util.tree_map(lambda a, b: jnp.where(i % spec.chunk_size == 0, a, b),
                                       w, w_ref)
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(r_t, a, b), new, old)
        w, s, w_ref = pick(init_params, w), pick(opt_init, s), pick(init_params, w_ref)
        y = arch.apply(w_ref, q_t)
        w, s = opt.step(w, s, grad(w_ref, k_t, v_t), TokenContext(k_t, v_t, g_t))
        s = tuple(s)
        if spec.read_after_write:
            y = arch.apply(w, q_t)
        return (w, s, w_ref), y

    t = q.shape[0]
    xs = (jnp.arange(t), q, k, v, gates, reset)
    (w, s, _), y = jax.lax.scan(tok, (params, tuple(opt_state), params), xs)
    return w, s, y


def reference_scan(spec: MemorySpec, init_params_H, q_BHTK, k_BHTK, v_BHTV, gates_BHT, *,
                   segment_ids_BT=None, state: MemoryState | None = None):
    """Token-by-token twin of `memory_scan` (same arguments, same returns)."""
    b, h, t = q_BHTK.shape[:3]
    dt = _state_dtype(q_BHTK.dtype)
    q, k, v = (x.astype(dt) for x in (q_BHTK, k_BHTK, v_BHTV))
    gates = {name: g.astype(dt) for name, g in gates_BHT.items()}
    init_params = jax.tree_util.tree_map(lambda w: w.astype(dt), init_params_H)
    if state is None:
        state = init_state(spec, init_params, b,
                           None if segment_ids_BT is None else segment_ids_BT[:, 0])
    if segment_ids_BT is None:
        reset = jnp.zeros((b, h, t), bool)
    else:
        prev = jnp.concatenate([state.prev_seg[:, None].astype(segment_ids_BT.dtype),
                                segment_ids_BT[:, :-1]], axis=1)
        reset = jnp.broadcast_to((segment_ids_BT != prev)[:, None], (b, h, t))
    f = lambda ip, p, o, q_, k_, v_, g_, r_: _one_sequence(spec, ip, p, o, q_, k_, v_, g_, r_)
    f = jax.vmap(jax.vmap(f, (0,) * 8), (None,) + (0,) * 7)
    w, s, y = f(init_params, state.params, tuple(state.opt_state), q, k, v, gates, reset)
    prev_seg = state.prev_seg if segment_ids_BT is None else segment_ids_BT[:, -1].astype(jnp.int32)
    return y, MemoryState(w, s, prev_seg)
