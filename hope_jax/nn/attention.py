"""Causal softmax attention (full or sliding-window) with RoPE, GQA and document masking.

Shape legend: B batch, T query time, S key time, H query heads, G kv heads, K head dim, D width.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.nn.attention_kernels import fused_attention, resolve_impl
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
    f32 = jnp.promote_types(q_BTHK.dtype, jnp.float32)  # fp32 softmax (fp64 under x64 tests)
    logits = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSGK).astype(f32) * scale
    logits = jnp.where(mask_B1TS, logits, jnp.finfo(f32).min)
    p = jax.nn.softmax(logits, axis=-1).astype(v_BSGK.dtype)
    return jnp.einsum("bhts,bshk->bthk", p, v_BSGK)


def attend_query_blocks(q_BTHK, k_BTGK, v_BTGK, idx_BT, seg_BT, window: int, block: int):
    """Causal self-attention computed `block` queries at a time: the logits of a block are
    [block, T] instead of [T, T], and `jax.checkpoint` recomputes them in the backward pass, so
    activation memory is O(block x T) per layer instead of O(T^2). Same result as `attend` with
    the full `causal_mask` (the masked half is still computed: no FLOP saving)."""
    b, t, h, k = q_BTHK.shape
    n = t // block
    to_blocks = lambda x: jnp.moveaxis(x.reshape((b, n, block) + x.shape[2:]), 1, 0)  # noqa: E731

    @jax.checkpoint
    def one(xs):
        q, iq, sq = xs
        return attend(q, k_BTGK, v_BTGK, causal_mask(iq, idx_BT, sq, seg_BT, window))

    o_NBCHK = jax.lax.map(one, (to_blocks(q_BTHK), to_blocks(idx_BT), to_blocks(seg_BT)))
    return jnp.moveaxis(o_NBCHK, 0, 1).reshape(b, t, h, k)


class Attention(nn.Module):
    """Multi-head causal attention with RoPE on per-document positions.

    Attributes:
      num_heads, num_kv_heads, head_dim: projection shapes.
      window: sliding window (0 = full causal).
      rope_theta: RoPE base.
      q_block: queries per block of `attend_query_blocks` for sequences longer than this and a
        multiple of it (0 = always the full [T, T] logits).
      impl: `model.attn_impl`; a fused kernel (attention_kernels.py) replaces the XLA path
        when training / scoring (not with a KV cache).
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
    q_block: int = 0
    impl: str = "auto"

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT=None, cache=None):
        """Returns o_BTD, or (o_BTD, new_cache) when a KV cache is given.

        The cache (see `init_cache`) holds keys/values/segment ids of the tokens seen so far in a
        fixed-size buffer; `x_BTD` are the next T tokens (segments of a sequence, or decoding
        with T = 1): they attend to the cached tokens and to themselves, causally.
        """
        d = x_BTD.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h, g, k = self.num_heads, self.num_kv_heads, self.head_dim
        q = DenseGeneral((h, k), ("embed",), ("heads", "kv"), self.std, name="q", **kw)(x_BTD)
        kk = DenseGeneral((g, k), ("embed",), ("heads", "kv"), self.std, name="k", **kw)(x_BTD)
        v = DenseGeneral((g, k), ("embed",), ("heads", "kv"), self.std, name="v", **kw)(x_BTD)
        q = rope(q, positions_BT, self.rope_theta)
        kk = rope(kk, positions_BT, self.rope_theta)
        b, t = x_BTD.shape[:2]
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones((b, t), jnp.int32)
        out = DenseGeneral((d,), ("heads", "kv"), ("embed",), self.out_std or self.std, name="o",
                           **kw)
        idx_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
        if cache is None and resolve_impl(self.impl, q.dtype, k, t) != "xla":
            return out(fused_attention(q, kk, v, segment_ids_BT, self.window, self.impl))
        if cache is None and self.q_block and t > self.q_block and t % self.q_block == 0:
            return out(attend_query_blocks(q, kk, v, idx_BT, segment_ids_BT, self.window,
                                           self.q_block))
        if cache is None:
            mask = causal_mask(idx_BT, idx_BT, segment_ids_BT, segment_ids_BT, self.window)
            return out(attend(q, kk, v, mask))
        start = cache["len"].astype(jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        k_all = jax.lax.dynamic_update_slice(cache["k"], kk.astype(cache["k"].dtype),
                                             (zero, start, zero, zero))
        v_all = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype),
                                             (zero, start, zero, zero))
        seg_all = jax.lax.dynamic_update_slice(cache["seg"], segment_ids_BT.astype(jnp.int32),
                                               (zero, start))
        s = k_all.shape[1]
        idx_BS = jnp.broadcast_to(jnp.arange(s), (b, s))
        mask = causal_mask(idx_BT + start, idx_BS, segment_ids_BT, seg_all, self.window)
        o = attend(q, k_all.astype(q.dtype), v_all.astype(q.dtype), mask)
        return out(o), {"k": k_all, "v": v_all, "seg": seg_all, "len": start + t}


def init_cache(batch: int, max_len: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32):
    """An empty KV cache for `Attention(..., cache=...)` (segment id 0 never matches a token)."""
    return {"k": jnp.zeros((batch, max_len, num_kv_heads, head_dim), dtype),
            "v": jnp.zeros((batch, max_len, num_kv_heads, head_dim), dtype),
            "seg": jnp.zeros((batch, max_len), jnp.int32), "len": jnp.zeros((), jnp.int32)}
