"""Fast chunked form of the linear-memory baselines: gated delta rule via the UT transform.

One kernel covers every linear fast-weight member of the paper's baselines (SPEC §1 "Architectures
as NSAM", Eqs. 14-18, 64, 65), all with zero initial state, read-after-write (y_t = q_t S_t) and
the row-vector convention of the engine (SPEC A11, state S [K, V], y = q S):

  dot   (Hebbian, Eq. 64):   S_t = a_t S_{t-1} + b_t k_t^T v_t
  delta (Eq. 65 + gate):     S_t = a_t (I - b_t k_t^T k_t) S_{t-1} + b_t k_t^T v_t

(a_t = retention, b_t = learning rate / write strength). With a_t = 1 the delta form is DeltaNet,
with data-dependent a_t Gated DeltaNet; the dot form is linear attention (a = b = 1), RetNet
(a = fixed per head) and Mamba2's SSD (a = exp(dt A), b = dt).

Within a chunk of C tokens starting from S_0 (FLA's chunked delta rule, Yang et al. 2024,
"Parallelizing Linear Transformers with the Delta Rule over Sequence Length"): write
S_t = a_t S_{t-1} + k_t^T u_t with the pseudo-values u_t = b_t (v_t - a_t k_t S_{t-1}). With
g_t = prod_{s<=t} a_s (from the chunk start) and G_ts = g_t / g_s,
  a_t S_{t-1} = g_t S_0 + sum_{s<t} G_ts k_s^T u_s, so
  (I + A) U = diag(b) V - diag(b g) K S_0,     A_ts = b_t G_ts (k_t . k_s) for s < t,
a unit lower-triangular system solved once per chunk (the "UT transform"):
  U = U~ - W S_0,   U~ = (I + A)^-1 diag(b) V,   W = (I + A)^-1 diag(b g) K.
Outputs and the next state are then matmuls:
  Y = diag(g) Q S_0 + (Q K^T . G . [s <= t]) U,      S_C = g_C S_0 + K^T diag(G_Cs) U.
U~, W and the C x C matrices do not depend on S_0, so they are computed for all chunks at once;
only the cheap S_0 propagation is a `lax.scan` over chunks. The dot form is the same with A = 0.

Decays are handled in log space (`log_retain`), so tiny retentions never divide. Documents reset
the state to zero at their first token (also mid-chunk): products across a boundary are masked.

Shape legend: B batch, H heads, T time, N chunks, C chunk, K key dim, V value dim.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from hope_jax.memory.dgd_chunk import unit_lower_inverse
from hope_jax.memory.scan import MemoryState, _state_dtype


def _split(x, n, c):
    """[B, H, T, ...] -> [B, H, N, C, ...]."""
    return x.reshape(x.shape[:2] + (n, c) + x.shape[3:])


def init_linear_state(batch: int, heads: int, dk: int, dv: int, dtype=jnp.float32,
                      prev_seg_B: jax.Array | None = None) -> MemoryState:
    """Zero state, shaped like the engine's `MemoryState` for a linear memory (params = (S,))."""
    if prev_seg_B is None:
        prev_seg_B = jnp.zeros((batch,), jnp.int32)
    return MemoryState((jnp.zeros((batch, heads, dk, dv), dtype),), (), prev_seg_B)


def chunk_linear_memory(q_BHTK: jax.Array, k_BHTK: jax.Array, v_BHTV: jax.Array,
                        gates_BHT: dict[str, jax.Array], *, delta: bool, chunk_size: int = 64,
                        segment_ids_BT: jax.Array | None = None,
                        state: MemoryState | None = None,
                        flush: bool = True) -> tuple[jax.Array, MemoryState]:
    """Runs the (gated) delta rule or the gated Hebbian rule chunk-parallel (module docstring).

    Args:
      q_BHTK, k_BHTK, v_BHTV: queries, keys, values per head.
      gates_BHT: "lr" (b_t, required) and either "log_retain" (log a_t, preferred) or "retain"
        (a_t); no retention gate = a_t = 1.
      delta: True for the delta rule (L2 objective), False for the Hebbian rule (dot product).
      chunk_size: C; T must be a multiple of it.
      segment_ids_BT: document ids; the state is zeroed at every change (also across calls).
      state: carry from a previous call (`MemoryState` with params = (S_BHKV,)); None = zero.
      flush: flush decay factors below eps^2 of the state dtype to 0 (PAPER.md D15; False keeps
        them: nothing visible changes at that precision, and XLA:CPU measured no speed change).

    Returns:
      (y_BHTV in the state dtype (>= fp32), final MemoryState).
    """
    b, h, t, dk = k_BHTK.shape
    dv = v_BHTV.shape[-1]
    c = chunk_size
    if t % c:
        raise ValueError(f"sequence length {t} is not a multiple of chunk_size {c}")
    n = t // c
    dt = _state_dtype(q_BHTK.dtype)
    q, k, v = (x.astype(dt) for x in (q_BHTK, k_BHTK, v_BHTV))
    lr = jnp.broadcast_to(gates_BHT["lr"].astype(dt), (b, h, t))
    if "log_retain" in gates_BHT:
        la = gates_BHT["log_retain"].astype(dt)
    elif "retain" in gates_BHT:
        la = jnp.log(gates_BHT["retain"].astype(dt))
    else:
        la = jnp.zeros((b, h, t), dt)
    la = jnp.broadcast_to(la, (b, h, t))
    if state is None:
        state = init_linear_state(b, h, dk, dv, dt,
                                  None if segment_ids_BT is None else segment_ids_BT[:, 0])
    if segment_ids_BT is None:
        reset = jnp.zeros((b, 1, t), bool)
    else:
        prev = jnp.concatenate([state.prev_seg[:, None].astype(segment_ids_BT.dtype),
                                segment_ids_BT[:, :-1]], axis=1)
        reset = (segment_ids_BT != prev)[:, None, :]
    # a log retention of -inf (a = 0) is a reset too; keep the cumulative sums finite
    la = jnp.maximum(la, -1e4)
    la = jnp.where(reset, 0.0, la)

    qn, kn, vn = _split(q, n, c), _split(k, n, c), _split(v, n, c)
    lrn, lan = _split(lr, n, c), _split(la, n, c)
    doc = jnp.cumsum(_split(jnp.broadcast_to(reset, (b, h, t)), n, c).astype(jnp.int32), -1)
    g_log = jnp.cumsum(lan, -1)  # log g_t, from the chunk start (t inclusive)
    ti = jnp.arange(c)
    lead = (1,) * (doc.ndim - 1)  # explicit ranks (tests run with rank promotion = raise)
    same = doc[..., :, None] == doc[..., None, :]
    incl = same & (ti[None, :] <= ti[:, None]).reshape(lead + (c, c))
    # Decay factors below eps^2 are flushed to 0: they are invisible at the dtype's precision,
    # and left alone they can become subnormal floats, slow on hardware that does not flush them
    # itself (on XLA:CPU the flush measured no speed difference: PAPER.md D15).
    cut = 2.0 * math.log(float(jnp.finfo(dt).eps)) if flush else -math.inf
    dexp = lambda x, keep: jnp.exp(jnp.where(keep & (x > cut), x, -jnp.inf))
    diff = g_log[..., :, None] - g_log[..., None, :]
    big_g = dexp(diff, incl)  # G_ts (0 outside s <= t, same document)
    g0 = dexp(g_log, doc == 0)  # g_t, 0 once a new document has begun
    g_end = dexp(g_log[..., -1:] - g_log, doc == doc[..., -1:])  # G_Cs

    bv = lrn[..., None] * vn
    if delta:
        strict = big_g * (ti[None, :] < ti[:, None]).reshape(lead + (c, c))
        a_mat = lrn[..., None] * strict * jnp.einsum("...tk,...sk->...ts", kn, kn)
        rhs = jnp.concatenate([bv, (lrn * g0)[..., None] * kn], axis=-1)
        sol = unit_lower_inverse(a_mat) @ rhs
        u_tilde, w = sol[..., :dv], sol[..., dv:]
    else:
        u_tilde, w = bv, None
    qk = jnp.einsum("...tk,...sk->...ts", qn, kn) * big_g  # [B, H, N, C, C]

    xs = {"u": u_tilde, "qk": qk, "q0": g0[..., None] * qn, "k_end": g_end[..., None] * kn,
          "g_last": g0[..., -1]}
    if w is not None:
        xs["w"] = w
    xs = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 2, 0), xs)  # chunks first

    def body(s_BHKV, x):
        u = x["u"]
        if "w" in x:
            u = u - jnp.einsum("bhck,bhkv->bhcv", x["w"], s_BHKV)
        y = jnp.einsum("bhck,bhkv->bhcv", x["q0"], s_BHKV) + jnp.einsum("bhts,bhsv->bhtv",
                                                                         x["qk"], u)
        s_next = (x["g_last"][..., None, None] * s_BHKV
                  + jnp.einsum("bhck,bhcv->bhkv", x["k_end"], u))
        return s_next, y

    s_end, y = jax.lax.scan(body, state.params[0].astype(dt), xs)
    y = jnp.moveaxis(y, 0, 2).reshape(b, h, t, dv)
    prev_seg = state.prev_seg if segment_ids_BT is None else segment_ids_BT[:, -1].astype(jnp.int32)
    return y, MemoryState((s_end,), (), prev_seg)
