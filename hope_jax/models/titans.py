"""Titans blocks (Titans §4, SPEC §4.6): LMM, MAG, MAL, MAC — each `Block(cfg)(x, pos, seg)`.

All blocks are pre-norm residual: a sequence-mixing sublayer (memory and/or attention), then the
SwiGLU FFN shared with Transformer++ (`transformer.ffn` / `transformer.norm`).

  LMM  h = x + Mem(N(x))                                  memory-only mixer ("Titans (LMM)")
  MAG  h = x + W_o[ N_a(SWA*(N(x))) * sigmoid(N_m(Mem(N(x)))) ]   attention gated by memory
  MAL  h = x + Mem(N(x));  h = h + SWA*(N(h))             memory layer followed by SWA (H3-like)
  MAC  h = x + SegAttn*([persistent | Mem(N(x))_seg | N(x)_seg])   memory as context

SWA* / SegAttn* attend also to `n_persistent` learned persistent-memory tokens (always visible,
no RoPE). Attention is computed blockwise: SWA in blocks of `window` queries looking at their own
and the previous block (O(T * window)); MAC within segments of `segment_len` (O(T * segment)).
Our reading of Titans where it is loose (documented deviations): MAG's "⊗" is RMSNorm + sigmoid
gating followed by a projection; MAC reads and writes the memory from the block input (as
lucidrains' MAC) instead of writing the attention output, and retrieval uses the state before the
current chunk (SPEC A1), so the final "y ⊗ M*(y)" step is omitted.

Shape legend: B batch, T time, D width, H heads, K head dim, P persistent tokens, S key time.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hope_jax.config import ModelConfig
from hope_jax.memory.titans import neural_memory
from hope_jax.models.transformer import ffn, norm, out_std
from hope_jax.nn.attention import attend, causal_mask
from hope_jax.nn.layers import DenseGeneral, RMSNorm, dtype_of, rope


def _blocks(x, n):
    """[B, T, ...] -> [B * n, T / n, ...]."""
    return x.reshape((x.shape[0] * n, x.shape[1] // n) + x.shape[2:])


def local_attention(q_BTHK, k_BTHK, v_BTHK, seg_BT, *, block: int, look_back: bool,
                    window: int = 0, pk_PHK=None, pv_PHK=None, ctx_k_BTHK=None, ctx_v_BTHK=None):
    """Blockwise causal attention within documents.

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
    if pk_PHK is not None and pk_PHK.shape[0]:
        bn, p = b * n, pk_PHK.shape[0]
        keys.insert(0, jnp.broadcast_to(pk_PHK[None], (bn,) + pk_PHK.shape).astype(k.dtype))
        vals.insert(0, jnp.broadcast_to(pv_PHK[None], (bn,) + pv_PHK.shape).astype(v.dtype))
        masks.insert(0, jnp.ones((bn, 1, block, p), bool))
    o = attend(_blocks(q, n), jnp.concatenate(keys, 1), jnp.concatenate(vals, 1),
               jnp.concatenate(masks, -1))
    return o.reshape(b, tp, h, kd)[:, :t]


class LocalAttention(nn.Module):
    """Multi-head RoPE attention with persistent tokens, sliding-window or segmented (MAC)."""

    cfg: ModelConfig
    segmented: bool = False

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, ctx_BTD=None):
        cfg, mc = self.cfg, self.cfg.memory
        kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype))
        h, kd, d = cfg.num_heads, cfg.head_dim, cfg.d_model
        proj = {n: DenseGeneral((h, kd), ("embed",), ("heads", "kv"), cfg.init_std, name=n, **kw)
                for n in ("q", "k", "v")}
        q = rope(proj["q"](x_BTD), positions_BT, cfg.rope_theta)
        k = rope(proj["k"](x_BTD), positions_BT, cfg.rope_theta)
        v = proj["v"](x_BTD)
        pk = pv = None
        if mc.n_persistent:  # learned data-independent tokens (Titans §3.3), projected like x
            p_PD = self.param("persistent", nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (None, "embed")), (mc.n_persistent, d),
                dtype_of(cfg.param_dtype))
            pk, pv = proj["k"](p_PD), proj["v"](p_PD)
        ctx_k = ctx_v = None
        if ctx_BTD is not None:
            ctx_k = rope(proj["k"](ctx_BTD), positions_BT, cfg.rope_theta)
            ctx_v = proj["v"](ctx_BTD)
        t = x_BTD.shape[1]
        if self.segmented:
            block, look_back, window = min(mc.segment_len, t), False, 0
        else:
            block, look_back, window = min(mc.window, t), True, mc.window
        o = local_attention(q, k, v, segment_ids_BT, block=block, look_back=look_back,
                            window=window, pk_PHK=pk, pv_PHK=pv, ctx_k_BTHK=ctx_k,
                            ctx_v_BTHK=ctx_v)
        return DenseGeneral((d,), ("heads", "kv"), ("embed",), out_std(cfg), name="o", **kw)(o)


def _memory(cfg: ModelConfig, name: str = "memory"):
    return neural_memory(cfg, name, out_std(cfg))


class TitansLMM(nn.Module):
    """Titans (LMM): the neural memory as the only sequence mixer."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        cfg = self.cfg
        h = x_BTD + _memory(cfg)(norm(cfg, "mem_norm")(x_BTD), segment_ids_BT)
        return h + ffn(cfg)(norm(cfg, "mlp_norm")(h))


class TitansMAG(nn.Module):
    """Memory as a gate: sliding-window attention and memory branches combined by gating."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        cfg = self.cfg
        xn = norm(cfg, "mix_norm")(x_BTD)
        a = LocalAttention(cfg, name="attn")(xn, positions_BT, segment_ids_BT)
        m = _memory(cfg)(xn, segment_ids_BT)
        pdt = dtype_of(cfg.param_dtype)
        a = RMSNorm(cfg.norm_eps, param_dtype=pdt, name="attn_out_norm")(a)
        g = RMSNorm(cfg.norm_eps, param_dtype=pdt, name="mem_out_norm")(m)
        o = (a.astype(jnp.float32) * nn.sigmoid(g.astype(jnp.float32))).astype(a.dtype)
        o = DenseGeneral((cfg.d_model,), ("embed",), ("embed",), out_std(cfg), dtype_of(cfg.dtype),
                         pdt, name="gate_out")(o)
        h = x_BTD + o
        return h + ffn(cfg)(norm(cfg, "mlp_norm")(h))


class TitansMAL(nn.Module):
    """Memory as a layer: memory sublayer, then sliding-window attention, then FFN."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        cfg = self.cfg
        h = x_BTD + _memory(cfg)(norm(cfg, "mem_norm")(x_BTD), segment_ids_BT)
        h = h + LocalAttention(cfg, name="attn")(norm(cfg, "attn_norm")(h), positions_BT,
                                                 segment_ids_BT)
        return h + ffn(cfg)(norm(cfg, "mlp_norm")(h))


class TitansMAC(nn.Module):
    """Memory as context: segment attention over [persistent | memory retrievals | segment]."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        cfg = self.cfg
        xn = norm(cfg, "mix_norm")(x_BTD)
        m = _memory(cfg)(xn, segment_ids_BT)  # h_t = M_{c-1}(q_t): past chunks only (A1)
        a = LocalAttention(cfg, segmented=True, name="attn")(xn, positions_BT, segment_ids_BT,
                                                               ctx_BTD=m)
        h = x_BTD + a
        return h + ffn(cfg)(norm(cfg, "mlp_norm")(h))


TITANS_MODELS = {"titans_lmm": TitansLMM, "titans_mag": TitansMAG, "titans_mal": TitansMAL,
                 "titans_mac": TitansMAC}
