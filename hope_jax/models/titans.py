"""Titans blocks (Titans §4, SPEC §4.6): LMM, MAG, MAL, MAC — each `Block(cfg)(x, pos, seg)`.

All blocks are pre-norm residual: a sequence-mixing sublayer (memory and/or attention), then the
SwiGLU FFN shared with Transformer++ (`transformer.ffn` / `transformer.norm`).

  LMM  h = x + Mem(N(x))                                  memory-only mixer ("Titans (LMM)")
  MAG  h = x + W_o[ N_a(SWA*(N(x))) * sigmoid(N_m(Mem(N(x)))) ]   attention gated by memory
  MAL  h = x + Mem(N(x));  h = h + SWA*(N(h))             memory layer followed by SWA (H3-like)
  MAC  h = x + SegAttn*([persistent | Mem(N(x))_seg | N(x)_seg])   memory as context

SWA* / SegAttn* attend also to `n_persistent` learned persistent-memory tokens (always visible,
no RoPE). Both are `nn.attention.Attention` (blockwise in the parallel forward: SWA in blocks of
`window` queries looking at their own and the previous block, O(T * window); MAC within segments
of `segment_len`, O(T * segment); a KV cache when decoding).
Decoding: the carry is {"memory": NeuralMemory state, "attn": KV cache}; the memory is chunked,
so the decoder commits whole chunks of `inner.chunk_size` (`models/decode.py`).
Our reading of Titans where it is loose (documented deviations): MAG's "⊗" is RMSNorm + sigmoid
gating followed by a projection; MAC reads and writes the memory from the block input (as
lucidrains' MAC) instead of writing the attention output, and retrieval uses the state before the
current chunk (SPEC A1), so the final "y ⊗ M*(y)" step is omitted.

Shape legend: B batch, T time, D width, H heads, K head dim, P persistent tokens, S key time.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hope_jax.memory.titans import NeuralMemory
from hope_jax.models.config import ModelConfig
from hope_jax.models.transformer import ffn, norm, out_std
from hope_jax.nn.attention import Attention, init_cache
from hope_jax.nn.layers import DenseGeneral, RMSNorm, dtype_of


def _attention(cfg: ModelConfig, segmented: bool = False) -> Attention:
    """SWA (window `memory.window`) or MAC's segment attention, with persistent tokens: the one
    `nn.attention.Attention` (parallel form blockwise, decode with a KV cache)."""
    mc = cfg.memory
    return Attention(cfg.num_heads, cfg.num_heads, cfg.head_dim, 0 if segmented else mc.window,
                     cfg.rope_theta, cfg.init_std, out_std(cfg), dtype_of(cfg.dtype),
                     dtype_of(cfg.param_dtype), n_persistent=mc.n_persistent,
                     segment_len=mc.segment_len if segmented else 0,
                     impl=cfg.attn_impl, name="attn")


def _cache(cfg: ModelConfig, batch: int, max_len: int, context: bool = False) -> dict:
    return init_cache(batch, max_len, cfg.num_heads, cfg.head_dim,
                      jnp.promote_types(dtype_of(cfg.dtype), jnp.float32), context)


def _carry_of(attn: bool, context: bool = False):
    """The block's `init_carry`: the memory state (+ the attention's KV cache)."""
    def init_carry(cfg: ModelConfig, batch: int, max_len: int) -> dict:
        mem = {"memory": neural_memory(cfg).init_state(batch)}
        return mem | ({"attn": _cache(cfg, batch, max_len, context)} if attn else {})
    return staticmethod(init_carry)


def _split(carry, key):
    return None if carry is None else carry[key]


def _attend(cfg: ModelConfig, x, positions, segment_ids, carry, segmented=False, **kw):
    """(attention output, its new KV cache or None)."""
    a = _attention(cfg, segmented)(x, positions, segment_ids, _split(carry, "attn"), **kw)
    return (a, None) if carry is None else a


def _remember(cfg: ModelConfig, x, positions, segment_ids, carry):
    """(memory read-out, its new state)."""
    return neural_memory(cfg)(x, positions, segment_ids, _split(carry, "memory"))


def _ffn_out(cfg: ModelConfig, h, carry, **new):
    """h + FFN(N(h)); with a carry, also the block's new carry."""
    y = h + ffn(cfg)(norm(cfg, "mlp_norm")(h))
    return y if carry is None else (y, new)


def neural_memory(cfg: ModelConfig, name: str = "memory") -> NeuralMemory:
    """The Titans memory layer shaped by a model config (heads, width, dtypes, sections `memory`
    and `inner`)."""
    return NeuralMemory(cfg.num_heads, cfg.head_dim, cfg.memory, cfg.inner, cfg.init_std,
                        out_std(cfg), dtype_of(cfg.dtype), dtype_of(cfg.param_dtype), name=name)


class TitansLMM(nn.Module):
    """Titans (LMM): the neural memory as the only sequence mixer."""

    cfg: ModelConfig
    init_carry = _carry_of(attn=False)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg = self.cfg
        m, mem = _remember(cfg, norm(cfg, "mem_norm")(x_BTD), positions_BT, segment_ids_BT, carry)
        return _ffn_out(cfg, x_BTD + m, carry, memory=mem)


class TitansMAG(nn.Module):
    """Memory as a gate: sliding-window attention and memory branches combined by gating."""

    cfg: ModelConfig
    init_carry = _carry_of(attn=True)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg = self.cfg
        xn = norm(cfg, "mix_norm")(x_BTD)
        a, cache = _attend(cfg, xn, positions_BT, segment_ids_BT, carry)
        m, mem = _remember(cfg, xn, positions_BT, segment_ids_BT, carry)
        pdt = dtype_of(cfg.param_dtype)
        a = RMSNorm(cfg.norm_eps, param_dtype=pdt, name="attn_out_norm")(a)
        g = RMSNorm(cfg.norm_eps, param_dtype=pdt, name="mem_out_norm")(m)
        o = (a.astype(jnp.float32) * nn.sigmoid(g.astype(jnp.float32))).astype(a.dtype)
        o = DenseGeneral((cfg.d_model,), ("embed",), ("embed",), out_std(cfg), dtype_of(cfg.dtype),
                         pdt, name="gate_out")(o)
        return _ffn_out(cfg, x_BTD + o, carry, memory=mem, attn=cache)


class TitansMAL(nn.Module):
    """Memory as a layer: memory sublayer, then sliding-window attention, then FFN."""

    cfg: ModelConfig
    init_carry = _carry_of(attn=True)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg = self.cfg
        m, mem = _remember(cfg, norm(cfg, "mem_norm")(x_BTD), positions_BT, segment_ids_BT, carry)
        h = x_BTD + m
        a, cache = _attend(cfg, norm(cfg, "attn_norm")(h), positions_BT, segment_ids_BT, carry)
        return _ffn_out(cfg, h + a, carry, memory=mem, attn=cache)


class TitansMAC(nn.Module):
    """Memory as context: segment attention over [persistent | memory retrievals | segment]."""

    cfg: ModelConfig
    init_carry = _carry_of(attn=True, context=True)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg = self.cfg
        xn = norm(cfg, "mix_norm")(x_BTD)
        # h_t = M_{c-1}(q_t): past chunks only (A1)
        m, mem = _remember(cfg, xn, positions_BT, segment_ids_BT, carry)
        a, cache = _attend(cfg, xn, positions_BT, segment_ids_BT, carry, segmented=True, ctx_BTD=m)
        return _ffn_out(cfg, x_BTD + a, carry, memory=mem, attn=cache)


TITANS_MODELS = {"titans_lmm": TitansLMM, "titans_mag": TitansMAG, "titans_mal": TitansMAL,
                 "titans_mac": TitansMAC}
