"""Causal softmax attention with RoPE, GQA and document masking: full, sliding-window, or
segmented (queries see only their own block), with learned persistent tokens and context keys.

The ONE attention of the library: Transformer++ (full or windowed), Hope-Attention, Samba's SWA,
Titans MAG / MAL (SWA + persistent tokens) and MAC (segments + memory-retrieval context) all use
`Attention`. The parallel forward of a windowed or segmented attention is blockwise
(`local_attention`, O(T x block)); decoding appends to a KV cache (`init_cache`) and applies
the same mask (window / segment / document / causal), so both paths give the same outputs.

Shape legend: B batch, T query time, S key time, H query heads, G kv heads, K head dim, D width,
P persistent tokens.
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


def _blocks(x, n):
    """[B, T, ...] -> [B * n, T / n, ...]."""
    return x.reshape((x.shape[0] * n, x.shape[1] // n) + x.shape[2:])


def local_attention(q_BTHK, k_BTHK, v_BTHK, seg_BT, *, block: int, look_back: bool,
                    window: int = 0, pk_PHK=None, pv_PHK=None, ctx_k_BTHK=None, ctx_v_BTHK=None):
    """Blockwise causal attention within documents (the parallel form of `Attention`'s window /
    segment masks).

    Queries in block i see keys of block i (and of block i-1 when `look_back`), restricted to
    s <= t, t - s < window (if window) and the same document; persistent keys are always visible;
    context keys (MAC) follow the same mask as the block's own keys.
    """
    b, t, h, kd = q_BTHK.shape
    pad = (-t) % block
    padt = lambda x, val=0: jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2),
                                    constant_values=val)
    q, k, v = padt(q_BTHK), padt(k_BTHK), padt(v_BTHK)
    seg = padt(seg_BT, -1)
    tp = t + pad
    n = tp // block
    idx = jnp.broadcast_to(jnp.arange(tp), (b, tp))
    qi, si = _blocks(idx, n), _blocks(seg, n)
    mask_cur = causal_mask(qi, qi, si, si, window)
    keys, vals, masks = [_blocks(k, n)], [_blocks(v, n)], [mask_cur]
    if look_back:
        shift = lambda x, val=0: jnp.pad(x, ((0, 0), (block, 0)) + ((0, 0),) * (x.ndim - 2),
                                         constant_values=val)[:, :tp]
        keys.insert(0, _blocks(shift(k), n))
        vals.insert(0, _blocks(shift(v), n))
        masks.insert(0, causal_mask(qi, qi - block, si, _blocks(shift(seg, -2), n), window))
    if ctx_k_BTHK is not None:
        keys.append(_blocks(padt(ctx_k_BTHK), n))
        vals.append(_blocks(padt(ctx_v_BTHK), n))
        masks.append(mask_cur)
    if pk_PHK is not None:
        bn, p = b * n, pk_PHK.shape[0]
        keys.insert(0, jnp.broadcast_to(pk_PHK[None], (bn,) + pk_PHK.shape).astype(k.dtype))
        vals.insert(0, jnp.broadcast_to(pv_PHK[None], (bn,) + pv_PHK.shape).astype(v.dtype))
        masks.insert(0, jnp.ones((bn, 1, block, p), bool))
    o = attend(_blocks(q, n), jnp.concatenate(keys, 1), jnp.concatenate(vals, 1),
               jnp.concatenate(masks, -1))
    return o.reshape(b, tp, h, kd)[:, :t]


def _persistent(pk_PGK, b: int, t: int):
    """Persistent keys for every row and an always-true mask [B, 1, T, P] (or Nones)."""
    if pk_PGK is None:
        return None, None
    p = pk_PGK.shape[0]
    return jnp.broadcast_to(pk_PGK[None], (b,) + pk_PGK.shape), jnp.ones((b, 1, t, p), bool)


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
      n_persistent: learned data-independent tokens (Titans §3.3) projected by k / v without
        RoPE and visible from every query (param `persistent` [P, D]).
      segment_len: > 0: a query sees only keys of its own block of `segment_len` positions
        (Titans MAC's segments; counted from position 0 of the row).
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
    n_persistent: int = 0
    segment_len: int = 0

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT=None, cache=None, ctx_BTD=None):
        """Returns o_BTD, or (o_BTD, new_cache) when a KV cache is given.

        The cache (see `init_cache`) holds keys/values/segment ids of the tokens seen so far in a
        fixed-size buffer; `x_BTD` are the next T tokens (segments of a sequence, or decoding
        with T = 1): they attend to the cached tokens and to themselves, causally.
        `ctx_BTD` (MAC): one context token per position, projected by k / v (RoPE at the same
        position) and masked like the position's own key (cached as "ck" / "cv").
        """
        d = x_BTD.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h, g, k = self.num_heads, self.num_kv_heads, self.head_dim
        q = DenseGeneral((h, k), ("embed",), ("heads", "kv"), self.std, name="q", **kw)(x_BTD)
        kproj = DenseGeneral((g, k), ("embed",), ("heads", "kv"), self.std, name="k", **kw)
        vproj = DenseGeneral((g, k), ("embed",), ("heads", "kv"), self.std, name="v", **kw)
        kk, v = kproj(x_BTD), vproj(x_BTD)
        q = rope(q, positions_BT, self.rope_theta)
        kk = rope(kk, positions_BT, self.rope_theta)
        b, t = x_BTD.shape[:2]
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones((b, t), jnp.int32)
        out = DenseGeneral((d,), ("heads", "kv"), ("embed",), self.out_std or self.std, name="o",
                           **kw)
        pk = pv = ck = cv = None
        if self.n_persistent:
            p_PD = self.param("persistent", nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (None, "embed")), (self.n_persistent, d),
                self.param_dtype)
            pk, pv = kproj(p_PD), vproj(p_PD)
        if ctx_BTD is not None:
            ck = rope(kproj(ctx_BTD), positions_BT, self.rope_theta)
            cv = vproj(ctx_BTD)
        idx_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
        extra = self.segment_len or pk is not None or ck is not None
        if cache is None and not extra and resolve_impl(self.impl, q.dtype, k, t) != "xla":
            return out(fused_attention(q, kk, v, segment_ids_BT, self.window, self.impl))
        if cache is None and (self.window or extra):
            block = min(self.segment_len or self.window or t, t)
            return out(local_attention(q, kk, v, segment_ids_BT, block=block,
                                       look_back=not self.segment_len, window=self.window,
                                       pk_PHK=pk, pv_PHK=pv, ctx_k_BTHK=ck, ctx_v_BTHK=cv))
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
        if self.segment_len:
            blk_q, blk_k = (idx_BT + start) // self.segment_len, idx_BS // self.segment_len
            mask = mask & (blk_q[:, None, :, None] == blk_k[:, None, None, :])
        new = {"k": k_all, "v": v_all, "seg": seg_all, "len": start + t}
        keys, vals, masks = [k_all], [v_all], [mask]
        if ck is not None:
            for name, x in (("ck", ck), ("cv", cv)):
                new[name] = jax.lax.dynamic_update_slice(cache[name], x.astype(cache[name].dtype),
                                                         (zero, start, zero, zero))
            keys.append(new["ck"])
            vals.append(new["cv"])
            masks.append(mask)
        if pk is not None:
            (pk_b, pmask), (pv_b, _) = _persistent(pk, b, t), _persistent(pv, b, t)
            keys.insert(0, pk_b.astype(k_all.dtype))
            vals.insert(0, pv_b.astype(v_all.dtype))
            masks.insert(0, pmask)
        o = attend(q, jnp.concatenate(keys, 1).astype(q.dtype),
                   jnp.concatenate(vals, 1).astype(q.dtype), jnp.concatenate(masks, -1))
        return out(o), new


def init_cache(batch: int, max_len: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32,
               context: bool = False):
    """An empty KV cache for `Attention(..., cache=...)` (segment id 0 never matches a token);
    `context` adds the caches of the context keys / values ("ck", "cv", Titans MAC)."""
    zeros = lambda: jnp.zeros((batch, max_len, num_kv_heads, head_dim), dtype)  # noqa: E731
    cache = {"k": zeros(), "v": zeros(), "seg": jnp.zeros((batch, max_len), jnp.int32),
             "len": jnp.zeros((), jnp.int32)}
    if context:
        cache |= {"ck": zeros(), "cv": zeros()}
    return cache
