"""Transformer++ block (Llama style): pre-RMSNorm, RoPE attention, SwiGLU FFN, no biases.

Shape legend: B batch, T time, D width.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hope_jax.models.config import ModelConfig
from hope_jax.nn.attention import Attention, init_cache
from hope_jax.nn.layers import RMSNorm, SwiGLU, dtype_of


def out_std(cfg: ModelConfig) -> float:
    """Residual-branch output init scaled by depth (GPT-2 / Llama practice)."""
    return cfg.init_std / (2 * cfg.num_layers) ** 0.5


def ffn(cfg: ModelConfig, name: str = "mlp") -> SwiGLU:
    """The SwiGLU FFN shared by every block type of the config."""
    return SwiGLU(cfg.hidden, cfg.init_std, out_std(cfg), dtype_of(cfg.dtype),
                  dtype_of(cfg.param_dtype), name=name)


def norm(cfg: ModelConfig, name: str) -> RMSNorm:
    return RMSNorm(cfg.norm_eps, param_dtype=dtype_of(cfg.param_dtype), name=name)


class TransformerBlock(nn.Module):
    """h = x + Attn(Norm(x)); y = h + FFN(Norm(h))."""

    cfg: ModelConfig

    @staticmethod
    def init_carry(cfg: ModelConfig, batch: int, max_len: int) -> dict:
        """An empty KV cache of `max_len` tokens (nn/attention.py `init_cache`)."""
        return init_cache(batch, max_len, cfg.kv_heads, cfg.head_dim,
                          jnp.promote_types(dtype_of(cfg.dtype), jnp.float32))

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        """Returns the block output, or (output, new KV cache) when a cache `carry` is given."""
        cfg, cache = self.cfg, carry
        attn = Attention(cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.attn_window,
                         cfg.rope_theta, cfg.init_std, out_std(cfg), dtype_of(cfg.dtype),
                         dtype_of(cfg.param_dtype), q_block=cfg.attn_q_block,
                         impl=cfg.attn_impl, name="attn")
        a = attn(norm(cfg, "attn_norm")(x_BTD), positions_BT, segment_ids_BT, cache=cache)
        if cache is not None:
            a, cache = a
        h = x_BTD + a
        y = h + ffn(cfg)(norm(cfg, "mlp_norm")(h))
        return y if cache is None else (y, cache)
