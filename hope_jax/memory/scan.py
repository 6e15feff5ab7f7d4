"""The chunk-parallel inner-loop engine: one `lax.scan` over chunks with grouped remat.

`chunked_scan` is the one scan helper (any per-chunk body; HOPE's self-modifying memories and CMS
levels reuse it). `memory_scan` runs a fast-weight memory over a sequence with it:

  per chunk c (SPEC §4.4, A1, §7.1):
    * every token's inner gradient is taken at the chunk-start weights W_{c-1};
    * the optimizer recurrence inside the chunk is solved in closed form (suffix products of the
      optimizer's transition matrices by `lax.associative_scan`; weighted gradient sums from one
      shared forward/backward over the chunk; no per-token gradient or weight tensors) or, for
      rules without a transition (DGD, deep optimizers), by a `lax.scan` of the optimizer's
      `step` over the chunk's tokens;
    * retrieval y_t = M(W_{c-1}; q_t) (read-before-write, default, strictly causal) or
      y_t = M(W_t; q_t) with W_t the state after token t's own write (read-after-write, TTT's
      mini-batch semantics; in closed form via the dual form, C x C per layer).
  Chunk size 1 is exactly the token-by-token recurrence.

Documents: with `segment_ids`, the fast state is reset to the initial (meta-learned) weights at
every document start, also mid-chunk: tokens of a document that starts inside chunk c read and take
gradients at the initial weights, and the transition into the document start is cut (its matrix
is replaced by 0 plus an injection of the initial state). Chunks without a boundary take a cheaper
branch (`lax.cond` over the whole batch). Rows of a batch never share state (vmap).

Shape legend: B batch, H heads, T time, C chunk, N chunks, K key dim, V value dim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hope_jax.memory.optimizers import InnerOptimizer, TokenContext, suffix_products
from hope_jax.memory.rules import MemoryArch, Objective, token_grad, token_loss

Params = Any


# --------------------------------------------------------------------------------------------
# The one scan helper
# --------------------------------------------------------------------------------------------


def chunked_scan(body: Callable, carry: Any, xs: Any, *, chunk_size: int, axis: int = 0,
                 remat_every: int = 0) -> tuple[Any, Any]:
    """`lax.scan` of `body(carry, chunk) -> (carry, ys)` over consecutive chunks of `xs`.

    Args:
      body: per-chunk function; its chunk leaves have the time axis `axis` of length C, and its
        `ys` leaves must too (they are stitched back into full-length outputs).
      carry: initial carry (carry in; the final carry is returned: carry out).
      xs: pytree of arrays sharing the time axis `axis` with length T, a multiple of C.
      chunk_size: C.
      axis: the time axis of every leaf of xs and ys.
      remat_every: if > 0, chunks are grouped by this many and each group is a `jax.checkpoint`
        (only group-boundary carries are kept for the backward pass; memory O(group) instead of
        O(T)). Rounded down to a divisor of the number of chunks.

    Returns:
      (final carry, ys with leaves of time length T).
    """
    leaves = jax.tree_util.tree_leaves(xs)
    t = leaves[0].shape[axis]
    if t % chunk_size:
        raise ValueError(f"sequence length {t} is not a multiple of chunk_size {chunk_size}")
    n = t // chunk_size

    def split(x):  # [..., T, ...] -> [N, ..., C, ...]
        x = x.reshape(x.shape[:axis] + (n, chunk_size) + x.shape[axis + 1:])
        return jnp.moveaxis(x, axis, 0)

    def merge(y):  # [N, ..., C, ...] -> [..., T, ...]
        y = jnp.moveaxis(y, 0, axis)
        return y.reshape(y.shape[:axis] + (n * chunk_size,) + y.shape[axis + 2:])

    xs_n = jax.tree_util.tree_map(split, xs)
    group = max(1, min(remat_every, n)) if remat_every else 0
    while group and n % group:
        group -= 1
    if group > 1 or (group == 1 and remat_every):
        xs_g = jax.tree_util.tree_map(lambda x: x.reshape((n // group, group) + x.shape[1:]), xs_n)

        @jax.checkpoint
        def group_body(c, xg):
            return jax.lax.scan(body, c, xg)

        carry, ys = jax.lax.scan(group_body, carry, xs_g)
        ys = jax.tree_util.tree_map(lambda y: y.reshape((n,) + y.shape[2:]), ys)
    else:
        carry, ys = jax.lax.scan(body, carry, xs_n)
    return carry, jax.tree_util.tree_map(merge, ys)


# --------------------------------------------------------------------------------------------
# Fast-weight memory over a sequence
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """Static description of one fast-weight memory (hashable: usable as a jit static arg).

    Attributes:
      arch: the memory architecture (rules.MemoryArch).
      objective: inner objective (pred_V, target_V) -> scalar (rules.OBJECTIVES or your own).
      optimizer: inner optimizer (optimizers.InnerOptimizer).
      chunk_size: tokens per gradient reference point (SPEC A1/A2).
      read_after_write: tokens read the state after their own write (default: before, A1).
      remat_every: chunks per `jax.checkpoint` group (0 = no remat).
      closed_form: use the optimizer's `transition` closed form when it has one.
      manual_grads: in the closed form, merge the per-slot backward passes
        (`MemoryArch.weighted_grads`) instead of vmapping `jax.vjp` over the slots.
    """

    arch: MemoryArch
    objective: Objective
    optimizer: InnerOptimizer
    chunk_size: int = 64
    read_after_write: bool = False
    remat_every: int = 0
    closed_form: bool = True
    manual_grads: bool = True

    def __post_init__(self):
        if self.arch.grad_clip and not self.manual_grads:
            raise ValueError("grad_clip needs manual_grads=True (the per-slot vjp cross-check "
                             "path does not clip)")


class MemoryState(NamedTuple):
    """The carry: per-(batch, head) fast weights and optimizer state, and the last segment id.

    Attributes:
      params: fast weights, leaves [B, H, ...].
      opt_state: inner-optimizer state (tuple of pytrees), leaves [B, H, ...].
      prev_seg: [B] document id of the last token seen (a change at the next token = reset).
    """

    params: Params
    opt_state: tuple
    prev_seg: jax.Array


def _state_dtype(dtype) -> jnp.dtype:
    """Fast state is at least fp32, whatever the compute dtype (SPEC §7.1); fp64 stays fp64."""
    return jnp.promote_types(dtype, jnp.float32)


def init_state(spec: MemorySpec, init_params_H: Params, batch: int,
               prev_seg_B: jax.Array | None = None) -> MemoryState:
    """The state before any token: initial weights broadcast per sequence, fresh opt state."""
    params = jax.tree_util.tree_map(
        lambda w: jnp.broadcast_to(w, (batch,) + w.shape).astype(_state_dtype(w.dtype)),
        init_params_H)
    opt_state = jax.vmap(jax.vmap(spec.optimizer.init))(params)
    if prev_seg_B is None:
        prev_seg_B = jnp.zeros((batch,), jnp.int32)
    return MemoryState(params, opt_state, prev_seg_B)


def _tsum(coeffs, trees):
    """sum_j coeffs[j] * trees[j] for scalar coeffs and same-structure pytrees."""
    return jax.tree_util.tree_map(lambda *xs: sum(c * x for c, x in zip(coeffs, xs)), *trees)


def _token_coefficients(a_eff_CNN, b_CN, a_CNN, reset_C):
    """Per-token dual-form coefficients of slot 0 (the weights) inside a chunk.

    z_t = A_t z_{t-1} + b_t g_t (A_t cut to 0 at a document start, where A_t z_init enters):
      w_t = sum_m pz[t, m] z0_m + sum_m rz[t, m] zinit_m + sum_{s <= t} cw[t, s] g_s.
    One `lax.scan` over the C tokens carrying the contribution vectors of every g_s (C x N),
    exact for any transition matrices (no division by prefix products).
    """
    c, n = b_CN.shape
    rmask = jnp.zeros((c,), a_CNN.dtype) if reset_C is None else reset_C.astype(a_CNN.dtype)

    def step(carry, xs):
        e_CN, pz_NN, rz_NN = carry
        a_eff, b, a, r, onehot = xs
        e_CN = e_CN @ a_eff.T + onehot[:, None] * b[None]
        pz_NN, rz_NN = a_eff @ pz_NN, a_eff @ rz_NN + r * a
        return (e_CN, pz_NN, rz_NN), (e_CN[:, 0], pz_NN[0], rz_NN[0])

    eye = jnp.eye(n, dtype=a_CNN.dtype)
    carry = (jnp.zeros((c, n), a_CNN.dtype), eye, jnp.zeros_like(eye))
    xs = (a_eff_CNN, b_CN, a_CNN, rmask, jnp.eye(c, dtype=a_CNN.dtype))
    _, (cw_CC, pz_CN, rz_CN) = jax.lax.scan(step, carry, xs)
    return cw_CC, pz_CN, rz_CN


def _chunk_closed_form(spec, init_params, params, opt_state, q, k, v, gates, reset_C, valid_C):
    """One chunk for an optimizer with a `transition` (no per-token weight copies).

    End state: suffix products of the transitions (`lax.associative_scan`) give each token's
    weight in every state slot; the weighted gradient sums come from one shared backward
    (`MemoryArch.backprop` + `contract`). Read-after-write retrieval uses the dual form
    (`MemoryArch.apply_evolving`) with per-token coefficients from `_token_coefficients`.
    """
    arch, opt = spec.arch, spec.optimizer
    a_CNN, b_CN = opt.transition(gates)
    a_CNN, b_CN = a_CNN.astype(k.dtype), b_CN.astype(k.dtype)
    if valid_C is not None:  # padding: identity transition, no gradient (never writes)
        a_CNN = jnp.where(valid_C[:, None, None], a_CNN, jnp.eye(a_CNN.shape[-1], dtype=k.dtype))
        b_CN = jnp.where(valid_C[:, None], b_CN, 0.0)
    a_eff = a_CNN if reset_C is None else jnp.where(reset_C[:, None, None], 0.0, a_CNN)
    p_CNN, p_all_NN = suffix_products(a_eff)
    coef_NC = jnp.einsum("cij,cj->ic", p_CNN, b_CN)  # slot i weight of g_c (SPEC §4.4 dual form)
    n = a_CNN.shape[-1]
    z0 = (params, *opt_state)
    zinit = (init_params, *opt.init(init_params))
    after_C = None if reset_C is None else jnp.cumsum(reset_C.astype(jnp.int32)) > 0
    if spec.manual_grads:  # per-token layer inputs / errors at each token's reference weights
        hs, ds = arch.backprop(params, k, v, spec.objective)
        if after_C is not None:  # tokens of a document begun in this chunk: initial weights
            hs_i, ds_i = arch.backprop(init_params, k, v, spec.objective)
            pick = lambda x0, xi: jnp.where(after_C[:, None], xi, x0)
            hs, ds = list(map(pick, hs, hs_i)), list(map(pick, ds, ds_i))
        g = arch.contract(hs, ds, coef_NC)
    else:  # N vector-Jacobian products (kept as a cross-check and for exotic architectures)
        loss = token_loss(arch, spec.objective)
        loss_C = lambda w: jax.vmap(loss, (None, 0, 0))(w, k, v)
        wgrads = lambda w, c: jax.vmap(jax.vjp(loss_C, w)[1])(c)[0]
        if after_C is None:
            g = wgrads(params, coef_NC)
        else:
            g = jax.tree_util.tree_map(jnp.add, wgrads(params, jnp.where(after_C, 0.0, coef_NC)),
                                       wgrads(init_params, jnp.where(after_C, coef_NC, 0.0)))
    if q is None:
        y = None
    elif spec.read_after_write:
        cw_CC, pz_CN, rz_CN = _token_coefficients(a_eff, b_CN, a_CNN, reset_C)
        bases, base_coef = list(z0), pz_CN
        if reset_C is not None:
            bases, base_coef = bases + list(zinit), jnp.concatenate([pz_CN, rz_CN], axis=1)
        y = arch.apply_evolving(q, bases, base_coef, hs, ds, cw_CC)
    else:
        y = read(arch, init_params, params, q, after_C)
    zinit_terms = []
    if reset_C is not None:
        r_NN = jnp.einsum("cij,cjk,c->ik", p_CNN, a_CNN, reset_C.astype(k.dtype))
        zinit_terms = [(r_NN[i], zinit) for i in range(n)]
    new = []
    for i in range(n):
        zi = _tsum(p_all_NN[i], z0)
        zi = jax.tree_util.tree_map(lambda a, b, i=i: a + b[i], zi, g)
        if zinit_terms:
            zi = jax.tree_util.tree_map(jnp.add, zi, _tsum(*zinit_terms[i]))
        new.append(zi)
    return new[0], tuple(new[1:]), y


def _chunk_general(spec, init_params, params, opt_state, q, k, v, gates, reset_C, valid_C):
    """One chunk token by token: any optimizer, read-before or read-after-write.

    A `lax.scan` over the C tokens: each token's gradient at its reference weights (the
    chunk-start weights, or the initial weights after a document start inside the chunk), then the
    optimizer's `step`. Per-token gradients are never stacked: on CPU that materialisation (C |W|
    per sequence and head) costs more than the matrix-vector products it would batch.
    With read-after-write, token t is read right after its own write.
    """
    arch, opt = spec.arch, spec.optimizer
    grad = token_grad(arch, spec.objective)
    after_C = jnp.zeros(k.shape[:1], bool)
    if reset_C is not None:
        after_C = jnp.cumsum(reset_C.astype(jnp.int32)) > 0
    resets = jnp.zeros(k.shape[:1], bool) if reset_C is None else reset_C
    zinit = (init_params, tuple(opt.init(init_params)))

    valid = jnp.ones(k.shape[:1], bool) if valid_C is None else valid_C
    raw = spec.read_after_write and q is not None

    def tok(carry, xs):
        ctx_t, r_t, a_t, q_t, ok_t = xs
        w_ref = params if reset_C is None else jax.tree_util.tree_map(
            lambda i, p: jnp.where(a_t, i, p), init_params, params)
        w, s = jax.tree_util.tree_map(lambda a, b: jnp.where(r_t, b, a), carry, zinit)
        w, s = opt.step(w, s, grad(w_ref, ctx_t.k, ctx_t.v), ctx_t)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(ok_t, a, b), (w, tuple(s)), carry)
        return new, (arch.apply(new[0], q_t) if raw else None)

    (new_params, new_opt), y_raw = jax.lax.scan(
        tok, (params, tuple(opt_state)),
        (TokenContext(k, v, gates), resets, after_C, k if q is None else q, valid))
    y = y_raw if raw else read(arch, init_params, params, q, None if reset_C is None else after_C)
    return new_params, tuple(new_opt), y


def read(arch, init_params, params, q_CK, after_C):
    """y_t = M(W_ref; q_t) for a chunk: the chunk-start weights (A1), or the initial weights for
    tokens at/after a document start in the chunk (`after_C`, or None). None without queries."""
    if q_CK is None:
        return None
    y = arch.apply(params, q_CK)
    return y if after_C is None else jnp.where(after_C[:, None], arch.apply(init_params, q_CK), y)


def chunk_update(spec: MemorySpec, init_params: Params, params: Params, opt_state: tuple,
                 q_CK, k_CK, v_CV, gates_C: dict, reset_C=None, valid_C=None,
                 target_fn: Callable | None = None):
    """THE per-chunk primitive of every fast-weight layer (one sequence, one head, one chunk).

    Every token's inner gradient is taken at its reference weights (the chunk-start weights, or
    the initial weights after a document start inside the chunk, SPEC A1/A4), then the
    optimizer's rule runs over the chunk: its own `chunk` form, else the affine closed form of
    its `transition`, else a scan of its `step` (see `optimizers`; `spec.closed_form=False`
    always scans `step`). Nothing depends on the rule's name.

    Args:
      spec: arch, objective, optimizer and the form switches (chunk_size is not read here).
      init_params / (params, opt_state): initial weights / chunk-start state.
      q_CK: queries read with read-before-write (or read-after-write) semantics; None = no read.
      k_CK, v_CV: keys and values; gates_C: {name: [C]} gates.
      reset_C: document start per token (state -> initial state there), or None.
      valid_C: False for padding tokens (never write), or None.
      target_fn: weights -> [C, V] inner targets (HOPE's self-generated v^ = M(W_ref; v),
        Eq. 87), evaluated at the reference weights and held constant inside the inner gradient
        (A15) while the outer gradient flows through it (A14). None = the values.

    Returns:
      (params, opt_state, y_CV or None) at the end of the chunk.
    """
    after_C = None if reset_C is None else jnp.cumsum(reset_C.astype(jnp.int32)) > 0
    tgt = v_CV
    if target_fn is not None:
        tgt = target_fn(params)
        if after_C is not None:
            tgt = jnp.where(after_C[:, None], target_fn(init_params), tgt)
    opt = spec.optimizer
    raw = spec.read_after_write and q_CK is not None
    if spec.closed_form and opt.chunk is not None and not raw:
        w, s = opt.chunk(spec.arch, spec.objective, init_params, params, tuple(opt_state), k_CK,
                         tgt, gates_C, reset_C, valid_C)
        return w, tuple(s), read(spec.arch, init_params, params, q_CK, after_C)
    if spec.closed_form and opt.transition is not None and not (raw and not spec.manual_grads):
        return _chunk_closed_form(spec, init_params, params, opt_state, q_CK, k_CK, tgt, gates_C,
                                  reset_C, valid_C)
    return _chunk_general(spec, init_params, params, opt_state, q_CK, k_CK, tgt, gates_C,
                          reset_C, valid_C)


def memory_scan(spec: MemorySpec, init_params_H: Params, q_BHTK: jax.Array, k_BHTK: jax.Array,
                v_BHTV: jax.Array, gates_BHT: dict[str, jax.Array], *,
                segment_ids_BT: jax.Array | None = None,
                state: MemoryState | None = None,
                valid_T: jax.Array | None = None) -> tuple[jax.Array, MemoryState]:
    """Runs a fast-weight memory over a sequence, chunk-parallel (SPEC §4.4, §4.6, §7.1).

    Args:
      spec: static memory description (architecture, objective, optimizer, chunking).
      init_params_H: initial fast weights per head (leaves [H, ...]), the meta-learned init.
      q_BHTK, k_BHTK, v_BHTV: queries, keys and values per head.
      gates_BHT: per-token gates by name (see rules.squash_gates), any float dtype.
      segment_ids_BT: document id per token; the fast state resets at every change (also across
        calls, through `state.prev_seg`). None = one document per row.
      state: carry from a previous call (segment carry / streaming); None = fresh state.
        A sequence split into calls whose lengths are multiples of chunk_size gives exactly the
        one-pass result; token-by-token generation is a call with T = 1 and chunk_size = 1.
      valid_T: False for padding tokens (`frame.pad_to_chunk`): they never write; None = all.

    Returns:
      (y_BHTV retrieved values, in the state dtype (>= fp32), final MemoryState).
    """
    b, _, t = q_BHTK.shape[:3]
    dt = _state_dtype(q_BHTK.dtype)
    q, k, v = (x.astype(dt) for x in (q_BHTK, k_BHTK, v_BHTV))
    gates = {name: g.astype(dt) for name, g in gates_BHT.items()}
    init_params = jax.tree_util.tree_map(lambda w: w.astype(dt), init_params_H)
    use_reset = segment_ids_BT is not None
    if state is None:
        state = init_state(spec, init_params, b,
                           segment_ids_BT[:, 0] if use_reset else None)
    xs = {"q": q, "k": k, "v": v, "gates": gates}
    if use_reset:
        prev_BT = jnp.concatenate([state.prev_seg[:, None].astype(segment_ids_BT.dtype),
                                   segment_ids_BT[:, :-1]], axis=1)
        reset_BT = segment_ids_BT != prev_BT
        xs["reset"] = jnp.broadcast_to(reset_BT[:, None, :], q.shape[:3])
    if valid_T is not None:
        xs["valid"] = jnp.broadcast_to(valid_T, q.shape[:3])
    def per_seq(init_p, params, opt_state, xc, reset):
        return chunk_update(spec, init_p, params, opt_state, xc["q"], xc["k"], xc["v"],
                            xc["gates"], reset, xc.get("valid"))

    def batched(params, opt_state, xc, with_reset):
        if with_reset:
            f = lambda ip, p, o, x: per_seq(ip, p, o, x, x["reset"])
        else:
            f = lambda ip, p, o, x: per_seq(ip, p, o, x, None)
        return jax.vmap(jax.vmap(f, (0, 0, 0, 0)), (None, 0, 0, 0))(init_params, params,
                                                                  opt_state, xc)

    def body(carry, xc):
        params, opt_state = carry
        if use_reset:
            new_p, new_o, y = jax.lax.cond(
                jnp.any(xc["reset"]),
                lambda ops: batched(*ops, True), lambda ops: batched(*ops, False),
                (params, opt_state, xc))
        else:
            new_p, new_o, y = batched(params, opt_state, xc, False)
        return (new_p, new_o), y

    carry0 = (jax.tree_util.tree_map(lambda w: w.astype(dt), state.params),
              jax.tree_util.tree_map(lambda w: w.astype(dt), tuple(state.opt_state)))
    (params, opt_state), y = chunked_scan(body, carry0, xs, chunk_size=spec.chunk_size, axis=2,
                                          remat_every=spec.remat_every)
    prev_seg = segment_ids_BT[:, -1].astype(jnp.int32) if use_reset else state.prev_seg
    return y, MemoryState(params, opt_state, prev_seg)
