"""The paper's baselines as configurations of the one associative-memory engine (SPEC §1, §5).

Nested Learning's claim (SPEC §1 "Architectures as NSAM"): linear attention, RetNet, Mamba2,
DeltaNet, Gated DeltaNet and TTT are all associative memories M(k) -> v that differ only in
  objective   the inner loss L~(M(k); v): dot product -<M k, v> (Hebbian, Eqs. 14-18, 64) or
              L2 regression 1/2 ||M k - v||^2 (delta rule, Eq. 65; TTT's reconstruction loss);
  retention   what is kept of M_{t-1}: nothing decays, a fixed per-head decay, or a
              data-dependent scalar decay (the "retention gate" alpha_t of Eq. 64);
  optimizer   one GD step per token (exact online update) or TTT's mini-batch GD (gradients of
              a chunk at its start state, SPEC A1 / §4.4);
  memory      a linear map (matrix-valued state) or an MLP (TTT-MLP).
Each `Baseline` below names those four choices; `engine_spec` turns one into a `MemorySpec` of
`hope_jax.memory.scan.memory_scan` (the same engine Titans and HOPE use) and `engine_inputs` maps
the layer's (q, k, v, write strength b_t, log retention log a_t) onto the engine's inputs.
The linear members also have the fast chunked form `hope_jax.memory.delta_chunk` behind
`linear_memory` (same inputs, same state type); tests prove both equal the papers' recurrences.

Engine semantics used here: read-after-write (y_t = M_t(q_t), the papers' convention), zero or
learned initial state, row vectors (y = q W, SPEC A11). For the delta rule the engine's chunk-start
gradient (SPEC A1) is exact only at chunk size 1, so `engine_spec` uses C = 1 for it (TTT's
mini-batch is different: there the chunk IS the model).

Gated DeltaNet, S_t = a_t (I - b_t k_t^T k_t) S_{t-1} + b_t k_t^T v_t, is GD on the L2 objective
taken from the retained state a_t S_{t-1} (Miras' retention form). The engine's Titans optimizer
takes the step from S_{t-1}: M_t = keep M - lr grad L~(M; k, v~). The two are the same affine map
with keep = a_t, lr = a_t b_t and target v~ = v_t / a_t (expand both: a S - a b k^T k S + b k^T v),
which is what `engine_inputs` passes; the fast form never divides.

Shape legend: B batch, H heads, T time, K key dim, V value dim.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hope_jax.memory import optimizers, rules
from hope_jax.memory.delta_chunk import chunk_linear_memory, init_linear_state
from hope_jax.memory.scan import MemorySpec, MemoryState, memory_scan


@dataclasses.dataclass(frozen=True)
class Baseline:
    """One row of the paper's Table 1 as (objective, retention, optimizer, memory)."""

    name: str
    paper: str
    objective: str  # "dot" | "l2"  (rules.OBJECTIVES)
    retention: str  # "none" | "fixed" (per head) | "data" (per token and head)
    optimizer: str  # "gd" (one step per token) | "minibatch_gd" (TTT, chunk = mini-batch)
    memory: str  # "linear" | "mlp" (TTT: residual f(x) = x + Norm(g(x)))
    depth: int = 1  # memory layers (TTT-MLP: 2)

    @property
    def linear(self) -> bool:
        return self.memory == "linear"

    @property
    def delta(self) -> bool:
        return self.objective == "l2"


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("linear_attention", "Katharopoulos et al. 2020", "dot", "none", "gd", "linear"),
    Baseline("retnet", "Sun et al. 2023", "dot", "fixed", "gd", "linear"),
    Baseline("mamba2", "Dao & Gu 2024 (SSD)", "dot", "data", "gd", "linear"),
    Baseline("deltanet", "Schlag et al. 2021; Yang et al. 2024", "l2", "none", "gd", "linear"),
    Baseline("gated_deltanet", "Yang et al. 2025", "l2", "data", "gd", "linear"),
    Baseline("ttt_linear", "Sun et al. 2024", "l2", "none", "minibatch_gd", "mlp", 1),
    Baseline("ttt_mlp", "Sun et al. 2024", "l2", "none", "minibatch_gd", "mlp", 2),
)}


def memory_arch(b: Baseline, dk: int, dv: int, hidden_mult: float = 4.0) -> rules.MemoryArch:
    """The fast model: a K x V matrix, or TTT's f(x) = x + RMSNorm(g(x)) (g linear or 2-layer MLP).

    TTT's LayerNorm inside f is the engine's parameter-free RMS normalisation (`out_norm`).
    """
    if b.linear:
        return rules.make_arch("linear", dk, dv)
    hidden = max(1, int(round(hidden_mult * dk))) if b.depth > 1 else dk
    return rules.MemoryArch("mlp", dk, dv, b.depth, hidden, "gelu", residual=True, out_norm=True)


def engine_spec(b: Baseline, dk: int, dv: int, chunk_size: int = 16, hidden_mult: float = 4.0,
                remat_every: int = 0) -> MemorySpec:
    """The baseline as a `MemorySpec` of the generic engine (read-after-write).

    Chunk size: dot-product members are exact for any C (their gradient does not depend on M);
    GD members with the L2 objective need C = 1 for the per-token recurrence; TTT uses C as its
    mini-batch.
    """
    opt = optimizers.titans(momentum=False, decay=b.retention != "none")
    chunk = 1 if (b.delta and b.optimizer == "gd") else chunk_size
    return MemorySpec(memory_arch(b, dk, dv, hidden_mult), rules.OBJECTIVES[b.objective], opt,
                      chunk, read_after_write=True, remat_every=remat_every)


def engine_inputs(b: Baseline, v_BHTV: jax.Array, lr_BHT: jax.Array,
                  log_retain_BHT: jax.Array | None) -> tuple[jax.Array, dict]:
    """(values, gates) for `memory_scan` from the layer's write strength and log retention."""
    gates = {"lr": lr_BHT}
    if b.retention == "none":
        return v_BHTV, gates
    keep = jnp.exp(log_retain_BHT)
    gates["retain"] = keep
    if b.delta:  # GD from the retained state (module docstring): lr a b, target v / a
        gates["lr"] = lr_BHT * keep
        v_BHTV = v_BHTV / keep[..., None]
    return v_BHTV, gates


def linear_memory(b: Baseline, q_BHTK, k_BHTK, v_BHTV, lr_BHT, log_retain_BHT=None, *,
                  impl: str = "fast", chunk_size: int = 64, segment_ids_BT=None,
                  state: MemoryState | None = None) -> tuple[jax.Array, MemoryState]:
    """A linear-memory baseline over a sequence, by the fast chunked form or the generic engine.

    Zero initial state (as in the papers), read-after-write. Both paths return the same
    `MemoryState` (params = (S_BHKV,)), so a state from one continues in the other.
    """
    if not b.linear:
        raise ValueError(f"{b.name} has an MLP memory: use memory_scan with engine_spec")
    bsz, h, _, dk = k_BHTK.shape
    dv = v_BHTV.shape[-1]
    if impl == "fast":
        gates = {"lr": lr_BHT}
        if log_retain_BHT is not None and b.retention != "none":
            gates["log_retain"] = log_retain_BHT
        return chunk_linear_memory(q_BHTK, k_BHTK, v_BHTV, gates, delta=b.delta,
                                   chunk_size=chunk_size, segment_ids_BT=segment_ids_BT,
                                   state=state)
    if impl != "engine":
        raise ValueError(f"impl must be 'fast' or 'engine', got {impl!r}")
    spec = engine_spec(b, dk, dv, chunk_size)
    v, gates = engine_inputs(b, v_BHTV, lr_BHT, log_retain_BHT)
    init = (jnp.zeros((h, dk, dv), jnp.promote_types(q_BHTK.dtype, jnp.float32)),)
    if state is None and segment_ids_BT is not None:
        state = init_linear_state(bsz, h, dk, dv, init[0].dtype, segment_ids_BT[:, 0])
    return memory_scan(spec, init, q_BHTK, k_BHTK, v, gates, segment_ids_BT=segment_ids_BT,
                       state=state)
