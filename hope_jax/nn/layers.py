"""Stateless-math building blocks with logical axis annotations on every parameter.

Shape legend: B batch, T time, D model width, H heads, K head dim (keys), F hidden width,
V vocabulary, W conv kernel width.

Logical parameter axes (mapped to mesh axes in `hope_jax.sharding`): `embed` (D), `mlp` (F),
`heads` (H), `kv` (K), `vocab` (V), `conv` (W), `layers` (stacked by nn.scan).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "float64": jnp.float64,
}


def dtype_of(name: str):
    return DTYPES[name]


def _init(std: float, axes: Sequence[str]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), tuple(axes))


class DenseGeneral(nn.Module):
    """y = x @ W over the last `len(in_axes)` dims, no bias (Llama style).

    Attributes:
      features: output shape (tuple), e.g. (H, K).
      in_axes / out_axes: logical names of input and output dims of the kernel.
      std: init standard deviation (scaled by fan-in when None).
    """

    features: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    std: float | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        n_in = len(self.in_axes)
        in_shape = x.shape[-n_in:]
        fan_in = 1
        for s in in_shape:
            fan_in *= s
        std = self.std if self.std is not None else fan_in**-0.5
        w = self.param(
            "kernel", _init(std, self.in_axes + self.out_axes), in_shape + self.features,
            self.param_dtype,
        )
        x, w = x.astype(self.dtype), w.astype(self.dtype)
        contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
        return jax.lax.dot_general(x, w, (contract, ((), ())))


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, returned in the input dtype."""

    eps: float = 1e-6
    axis_name: str = "embed"
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
            (x.shape[-1],), self.param_dtype,
        )
        f32 = jnp.promote_types(x.dtype, jnp.float32)  # fp32 at least (fp64 stays fp64)
        x32 = x.astype(f32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = jnp.reshape(scale.astype(f32), (1,) * (x.ndim - 1) + (-1,))
        return (y * scale).astype(x.dtype)


class Embed(nn.Module):
    """Token embedding table [V, D]; `attend` gives the tied output logits."""

    vocab_size: int
    features: int
    std: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding", _init(self.std, ("vocab", "embed")), (self.vocab_size, self.features),
            self.param_dtype,
        )

    def __call__(self, ids_BT):
        return jnp.take(self.embedding, ids_BT, axis=0).astype(self.dtype)

    def attend(self, x_BTD):
        return jnp.einsum("btd,vd->btv", x_BTD.astype(self.dtype),
                          self.embedding.astype(self.dtype))


class SwiGLU(nn.Module):
    """FFN(x) = W_down (silu(W_gate x) * W_up x)."""

    hidden: int
    std: float = 0.02
    out_std: float | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BTD):
        d = x_BTD.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        gate = DenseGeneral((self.hidden,), ("embed",), ("mlp",), self.std, name="gate",
                            **kw)(x_BTD)
        up = DenseGeneral((self.hidden,), ("embed",), ("mlp",), self.std, name="up", **kw)(x_BTD)
        h = nn.silu(gate) * up
        return DenseGeneral((d,), ("mlp",), ("embed",), self.out_std or self.std, name="down",
                            **kw)(h)


def rope(x_BTHK, positions_BT, theta: float = 10000.0):
    """Rotary position embedding (half-split convention), computed in fp32."""
    k = x_BTHK.shape[-1]
    f32 = jnp.promote_types(x_BTHK.dtype, jnp.float32)
    freq_K2 = theta ** (-jnp.arange(0, k, 2, dtype=f32) / k)
    ang_BTK2 = positions_BT.astype(f32)[..., None] * freq_K2[None, None, :]
    sin, cos = jnp.sin(ang_BTK2)[:, :, None, :], jnp.cos(ang_BTK2)[:, :, None, :]
    x = x_BTHK.astype(f32)
    x1, x2 = x[..., : k // 2], x[..., k // 2 :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTHK.dtype)


class ShortConv(nn.Module):
    """Causal depthwise 1-D convolution over time (Titans §4.4, SPEC A16), kernel `width`.

    With `segment_ids_BT`, taps never reach across a document boundary. Initialised to identity
    (last tap 1) so that a fresh layer passes its input through; `bias` adds a learned per-channel
    bias (zero at init; mamba_ssm's Mamba2 convs have one).
    """

    width: int = 4
    axis_name: str = "embed"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    bias: bool = False

    @nn.compact
    def __call__(self, x_BTD, segment_ids_BT=None):
        d = x_BTD.shape[-1]

        def init(key, shape, dtype):
            return jnp.zeros(shape, dtype).at[-1].set(1.0)

        w_WD = self.param(
            "kernel", nn.with_logical_partitioning(init, ("conv", self.axis_name)),
            (self.width, d), self.param_dtype,
        ).astype(self.dtype)
        x = x_BTD.astype(self.dtype)
        t = x.shape[1]
        w_W11D = w_WD[:, None, None, :]
        out = x * w_W11D[-1]
        for lag in range(1, self.width):
            if lag >= t:
                break
            shifted = jnp.pad(x, ((0, 0), (lag, 0), (0, 0)))[:, :t]
            if segment_ids_BT is not None:
                same = segment_ids_BT == jnp.pad(segment_ids_BT, ((0, 0), (lag, 0)),
                                                 constant_values=-1)[:, :t]
                shifted = shifted * same[..., None].astype(x.dtype)
            out = out + shifted * w_W11D[-1 - lag]
        if self.bias:
            b_D = self.param("bias", nn.with_logical_partitioning(
                nn.initializers.zeros, (self.axis_name,)), (d,), self.param_dtype)
            out = out + b_D.astype(out.dtype)[None, None, :]
        return out
