"""Causal softmax attention (full or sliding-window) with RoPE, GQA and document masking.

Shape legend: B batch, T query time, S key time, H query heads, G kv heads, K head dim, D width.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.nn.layers import DenseGeneral, rope


def causal_mask(positions_q_BT, positions_k_BS, segq_BT=None, segk_BS=None, window: int = 0):
    """Boolean [B, 1, T, S] mask: key s visible from query t iff same document, s <= t, in window.

    Positions are absolute indices in the packed row (not the per-document positions), so the
    same helper serves training (T == S) and decoding against a cache.
    """
    q = positions_q_BT[:, None, :, None]
    k = positions_k_BS[:, None, None, :]
    m = k <= q
    if window:
        m = m & (q - k < window)
    if segq_BT is not None:
        m = m & (segq_BT[:, None, :, None] == segk_BS[:, None, None, :])
    return m


def attend(q_BTHK, k_BSGK, v_BSGK, mask_B1TS):
    """Scaled dot-product attention in fp32 softmax; GQA by repeating kv heads."""
    h, g = q_BTHK.shape[2], k_BSGK.shape[2]
    if g != h:
        k_BSGK = jnp.repeat(k_BSGK, h // g, axis=2)
        v_BSGK = jnp.repeat(v_BSGK, h // g, axis=2)
    scale = q_BTHK.shape[-1] ** -0.5
    logits = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSGK).astype(jnp.float32) * scale
    logits = jnp.where(mask_B1TS, logits, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(logits, axis=-1).astype(v_BSGK.dtype)
    return jnp.einsum("bhts,bshk->bthk", p, v_BSGK)


class Attention(nn.Module):
    """Multi-head causal attention with RoPE on per-document positions.

    Attributes:
      num_heads, num_kv_heads, head_dim: projection shapes.
      window: sliding window (0 = full causal).
      rope_theta: RoPE base.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    window: int = 0
    rope_theta: float = 10000.0
    std: float = 0.02
    out_std: float | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT=None):
        d = x_BTD.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h, g, k = self.num_heads, self.num_kv_heads, self.head_dim
        q = DenseGeneral((h, k), ("embed",), ("heads", "kv"), self.std, name="q", **kw)(x_BTD)
        kk = DenseGeneral((g, k), ("embed",), ("heads", "kv"), self.std, name="k", **kw)(x_BTD)
        v = DenseGeneral((g, k), ("embed",), ("heads", "kv"), self.std, name="v", **kw)(x_BTD)
        q = rope(q, positions_BT, self.rope_theta)
        kk = rope(kk, positions_BT, self.rope_theta)
        t = x_BTD.shape[1]
        idx_BT = jnp.broadcast_to(jnp.arange(t), x_BTD.shape[:2])
        mask = causal_mask(idx_BT, idx_BT, segment_ids_BT, segment_ids_BT, self.window)
        o = attend(q, kk, v, mask)
        return DenseGeneral((d,), ("heads", "kv"), ("embed",), self.out_std or self.std, name="o",
                            **kw)(o)
