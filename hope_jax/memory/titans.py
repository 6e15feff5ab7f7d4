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

from hope_jax.memory.config import MemoryConfig
from hope_jax.memory.optimizers import make_inner_optimizer
from hope_jax.memory.rules import OBJECTIVES, chunk_mean, gate_bias, make_arch, squash_gates
from hope_jax.memory.scan import MemorySpec, memory_scan
from hope_jax.nn.layers import DenseGeneral, RMSNorm, ShortConv, dtype_of


def memory_spec(mc: MemoryConfig, head_dim: int) -> MemorySpec:
    """The engine description of a `MemoryConfig` for heads of width `head_dim`."""
    arch = make_arch(mc.arch, head_dim, head_dim, mc.depth, mc.hidden_mult, mc.activation,
                     mc.residual, mc.out_norm)
    opt = make_inner_optimizer(mc.inner_opt, mc.momentum, mc.decay)
    return MemorySpec(arch, OBJECTIVES[mc.objective], opt, mc.chunk_size, mc.read_after_write,
                      mc.remat_every, mc.closed_form)


def gate_names(mc: MemoryConfig) -> tuple[str, ...]:
    """Which gates the configured optimizer reads (DGD always has a retention gate, A9)."""
    names = ["lr"]
    if mc.momentum:
        names.append("momentum")
    if mc.decay or mc.inner_opt == "dgd":
        names.append("retain")
    return tuple(names)


def _l2norm(x, eps: float = 1e-6):
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, -1, keepdims=True) + eps)).astype(x.dtype)


class NeuralMemory(nn.Module):
    """Neural memory sequence mixer: [B, T, D] -> [B, T, D] (strictly causal, SPEC A1).

    Attributes:
      num_heads, head_dim: memory heads (each has its own fast weights).
      mem: the memory config section.
      init_std / out_std: projection init scales; dtype / param_dtype: compute and param dtypes.
    """

    num_heads: int
    head_dim: int
    mem: MemoryConfig
    init_std: float = 0.02
    out_std: float | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BTD, segment_ids_BT=None):
        mc, h, kd = self.mem, self.num_heads, self.head_dim
        b, t, d = x_BTD.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        f32 = jnp.promote_types(self.param_dtype, jnp.float32)  # gates / fast state >= fp32

        def qkv(name, norm):
            y = DenseGeneral((h * kd,), ("embed",), ("heads",), self.init_std, name=name, **kw)(
                x_BTD)
            y = ShortConv(mc.conv_width, "heads", name=f"{name}_conv", **kw)(y, segment_ids_BT)
            y = nn.silu(y).reshape(b, t, h, kd)  # SiLU on q, k, v (Titans §4.4)
            return _l2norm(y) if norm else y

        q, k, v = qkv("q", mc.qk_norm), qkv("k", mc.qk_norm), qkv("v", False)
        logits = {}
        for name in gate_names(mc):
            init = {"lr": mc.lr_init, "momentum": mc.momentum_init,
                    "retain": 1.0 - mc.forget_init}[name]
            bias = self.param(f"{name}_bias",
                              nn.with_logical_partitioning(
                                  nn.initializers.constant(gate_bias(name, init, mc.lr_max)),
                                  ("heads",)), (h,), f32)
            lg = DenseGeneral((h,), ("embed",), ("heads",), self.init_std, name=f"{name}_gate",
                              dtype=f32, param_dtype=self.param_dtype)(x_BTD)
            logits[name] = lg + bias[None, None, :]  # [B, T, H], fp32 (SPEC A7)
        spec = memory_spec(mc, kd)
        arch = spec.arch

        def init_mem(key, shape, dtype):
            return jax.vmap(lambda kk: arch.init(kk, dtype))(jax.random.split(key, h))

        init_params = tuple(
            self.param(f"mem_w{i}", nn.with_logical_partitioning(
                lambda key, shape, dtype, i=i: init_mem(key, shape, dtype)[i],
                ("heads", None, None)), (h,) + s, f32)
            for i, s in enumerate(arch.shapes()))

        c = spec.chunk_size
        pad = (-t) % c
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        logits = {n: jnp.pad(g, ((0, 0), (0, pad), (0, 0))) for n, g in logits.items()}
        if mc.gate_granularity == "chunk":
            logits = {n: chunk_mean(g, c) for n, g in logits.items()}
        gates = squash_gates(logits, mc.lr_max)
        if pad:  # padded tail tokens never write (lr 0); outputs for real tokens are causal
            gates["lr"] = gates["lr"] * (jnp.arange(t + pad) < t)[None, :, None]
        seg = None
        if mc.doc_reset and segment_ids_BT is not None:
            seg = jnp.pad(segment_ids_BT, ((0, 0), (0, pad)), mode="edge")
        to_bh = lambda x: jnp.moveaxis(x, 1, 2)  # [B, T, H, ...] -> [B, H, T, ...]
        y, _ = memory_scan(spec, init_params, to_bh(q), to_bh(k), to_bh(v),
                           {n: to_bh(g) for n, g in gates.items()}, segment_ids_BT=seg)
        y = jnp.moveaxis(y, 2, 1)[:, :t]  # [B, T, H, K], fp32
        y = RMSNorm(axis_name="kv", param_dtype=self.param_dtype, name="out_norm")(y)
        gate = DenseGeneral((h, kd), ("embed",), ("heads", "kv"), self.init_std, name="out_gate",
                            **kw)(x_BTD)
        y = (y * jax.nn.sigmoid(gate.astype(f32))).astype(self.dtype)  # Titans §4.4
        return DenseGeneral((d,), ("heads", "kv"), ("embed",), self.out_std or self.init_std,
                            name="out", **kw)(y)


def neural_memory(cfg, name: str = "memory", out_std: float | None = None) -> NeuralMemory:
    """A `NeuralMemory` shaped by a `ModelConfig` (heads and width of the model)."""
    return NeuralMemory(cfg.num_heads, cfg.head_dim, cfg.memory, cfg.init_std, out_std,
                        dtype_of(cfg.dtype), dtype_of(cfg.param_dtype), name=name)
