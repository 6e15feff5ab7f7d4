"""Titans neural long-term memory layer (Titans §3-4.4, SPEC §4.6) as a Linen module.

x -> q, k, v projections -> causal depthwise conv (kernel 4) -> SiLU -> L2-norm(q, k)
  -> data-dependent gates (lr theta_t, momentum eta_t, forget alpha_t) from x, fp32
  -> fast-weight memory run chunk-parallel by `memory_scan` (per head, per sequence)
  -> RMSNorm per head * sigmoid(x W_g) gate -> output projection.

The meta-learned initial fast weights are ordinary params (`mem_w{i}`, one per head); the fast
state lives only inside the scan carry (SPEC §7.1, A14: outer gradients flow through every write).

Shape legend: B batch, T time, D width, H heads, K head dim, C chunk.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.memory import frame
from hope_jax.memory.config import InnerConfig, MemoryConfig
from hope_jax.memory.optimizers import make_inner_optimizer
from hope_jax.memory.rules import chunk_mean, gate_bias, get_objective, make_arch, squash_gates
from hope_jax.memory.scan import MemorySpec, MemoryState, memory_scan

_VECS = ("q", "k", "v")
_LEGACY = object()  # marks the legacy two-argument call (x, segment_ids)


def memory_spec(mc: MemoryConfig, ic: InnerConfig, head_dim: int) -> MemorySpec:
    """The engine description of a memory shape `mc` and inner loop `ic` (resolved: no
    sentinel left, see `ModelConfig`) for heads of width `head_dim`."""
    arch = make_arch(mc.arch, head_dim, head_dim, mc.depth, mc.hidden_mult, mc.activation,
                     mc.residual, ic.out_norm, ic.out_gain, ic.grad_clip)
    opt = make_inner_optimizer(ic.optimizer, ic.momentum, ic.retention)
    return MemorySpec(arch, get_objective(ic.objective), opt, ic.chunk_size, mc.read_after_write,
                      ic.remat_every, ic.closed_form)


class NeuralMemory(nn.Module):
    """Neural memory sequence mixer: [B, T, D] -> [B, T, D] (strictly causal, SPEC A1).

    Call forms:
      `(x_BTD, positions_BT, segment_ids_BT, state=None) -> (y_BTD, new_state)`: the state
        (`frame` layout: {"fast": {"mem": (params, opt_state)}, "conv", "conv_seg", "prev_seg"};
        None = fresh; `init_state(batch)` builds one without params) is carried across calls:
        a sequence split into calls whose lengths are multiples of `mem.chunk_size` gives the
        one-pass result; a shorter tail is padded (padding never writes).
      `(x_BTD, segment_ids_BT) -> y_BTD`: the legacy state-less form (kept until the model
        bodies pass positions and a state).

    Attributes:
      num_heads, head_dim: memory heads (each has its own fast weights).
      mem: the memory shape section (`model.memory`); inner: its inner loop (`model.inner`).
      init_std / out_std: projection init scales; dtype / param_dtype: compute and param dtypes.
    """

    num_heads: int
    head_dim: int
    mem: MemoryConfig
    inner: InnerConfig
    init_std: float = 0.02
    out_std: float | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _state_dtype(self):
        return jnp.promote_types(self.param_dtype, jnp.float32)  # gates / fast state >= fp32

    def init_state(self, batch: int) -> dict:
        """A fresh state for `batch` rows, without params (pure: `frame.zero_state`)."""
        spec = memory_spec(self.mem, self.inner, self.head_dim)
        shapes = tuple((self.num_heads,) + s for s in spec.arch.shapes())
        return frame.zero_state({"mem": shapes}, spec.optimizer.init, batch, _VECS,
                                self.inner.conv_width, self.num_heads * self.head_dim,
                                self._state_dtype())

    @nn.compact
    def __call__(self, x_BTD, positions_BT=None, segment_ids_BT=_LEGACY, state=None):
        legacy = segment_ids_BT is _LEGACY
        if legacy:  # (x, segment_ids): the second argument is the document ids
            segment_ids_BT, positions_BT = positions_BT, None
        del positions_BT  # position-free: order enters through the recurrence and the convs
        mc, ic, h, kd, seg = self.mem, self.inner, self.num_heads, self.head_dim, segment_ids_BT
        b, t, d = x_BTD.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        f32 = self._state_dtype()
        spec = memory_spec(mc, ic, kd)
        arch = spec.arch

        def init_mem(key, shape, dtype):
            return jax.vmap(lambda kk: arch.init(kk, dtype))(jax.random.split(key, h))

        init_params = tuple(
            self.param(f"mem_w{i}", nn.with_logical_partitioning(
                lambda key, shape, dtype, i=i: init_mem(key, shape, dtype)[i],
                ("heads", None, None)), (h,) + s, f32)
            for i, s in enumerate(arch.shapes()))
        init = {"mem": init_params}
        if state is None:
            state = frame.fresh_state(init, spec.optimizer.init, b, _VECS, ic.conv_width,
                                      h * kd, f32, seg)
        state = frame.begin(state, init, spec.optimizer.init, f32)
        seg_c = frame.conv_segments(state, seg)
        vecs, new_conv = {}, {}
        for n in _VECS:
            vecs[n], new_conv[n] = frame.proj_conv(x_BTD, n, h, kd, ic.conv_width,
                                                   state["conv"][n], seg_c, self.init_std, kw)
        q, k, v = vecs["q"], vecs["k"], vecs["v"]  # SiLU on q, k, v (Titans §4.4)
        if mc.qk_norm:
            q, k = frame.l2norm(q), frame.l2norm(k)
        logits = {}
        for name in spec.optimizer.gates:  # the gates the inner rule reads
            value = {"lr": ic.lr_init, "momentum": ic.momentum_init,
                     "retain": 1.0 - ic.forget_init}[name]
            bias = gate_bias(name, value, ic.lr_max)
            logits[name] = frame.static_gate(self, x_BTD, name, h, bias, f32, f32,
                                             self.param_dtype, self.init_std)  # SPEC A7
        c = spec.chunk_size
        (q, k, v, logits), valid = frame.pad_to_chunk((q, k, v, logits), c, 1, t)
        if mc.gate_granularity == "chunk":
            logits = {n: chunk_mean(g, c) for n, g in logits.items()}
        gates = squash_gates(logits, ic.lr_max)
        mseg = None
        if ic.doc_reset and seg is not None:
            mseg = jnp.pad(seg, ((0, 0), (0, (-t) % c)), mode="edge")
        to_bh = lambda x: jnp.moveaxis(x, 1, 2)  # [B, T, H, ...] -> [B, H, T, ...]
        params, opt_state = state["fast"]["mem"]
        prev = state["prev_seg"] if mseg is None else jnp.where(
            state["prev_seg"] < 0, mseg[:, 0], state["prev_seg"])  # fresh rows: no extra reset
        y, ms = memory_scan(spec, init_params, to_bh(q), to_bh(k), to_bh(v),
                            {n: to_bh(g) for n, g in gates.items()}, segment_ids_BT=mseg,
                            state=MemoryState(params, opt_state, prev), valid_T=valid)
        y = jnp.moveaxis(y, 2, 1)[:, :t]  # [B, T, H, K], fp32
        out = frame.output(x_BTD, y, d, self.init_std, self.out_std or self.init_std, f32, kw)
        if legacy:
            return out
        fast = {"mem": (ms.params, ms.opt_state)}
        return out, frame.end_state(state, fast, new_conv, seg, seg_c, ic.conv_width)
