"""Samba (Ren et al. 2024): Mamba-style layers and sliding-window attention, interleaved.

The paper's hybrid baseline (Table 1 "Samba*"). One scanned unit is two of Samba's layers:

  h = x + Mamba2(N(x));  h = h + MLP(N(h));  h = h + SWA(N(h));  y = h + MLP(N(h))

so `model.num_layers` counts (Mamba2 + MLP, SWA + MLP) pairs. The Mamba layer is the Mamba2 /
SSD mixer of `hope_jax.models.baselines` (dot-product memory with data-dependent scalar decay, run
by the same engine); Samba used Mamba-1, we use the Mamba2 form the issue asks for. SWA is RoPE
softmax attention over the last `model.memory.window` tokens within the document, computed
blockwise (O(T * window), the one `nn.attention.Attention`); Samba's window is 2048.
Decoding carries the Mamba2 mixer's state and conv tails and the SWA's KV cache.

Shape legend: B batch, T time, D width, H heads, K head dim.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hope_jax.models.baselines import Mamba2Mixer
from hope_jax.models.config import ModelConfig
from hope_jax.models.transformer import ffn, norm, out_std
from hope_jax.nn.attention import Attention, init_cache
from hope_jax.nn.layers import dtype_of


class SambaBlock(nn.Module):
    """Mamba2 -> MLP -> SWA -> MLP, each pre-norm residual."""

    cfg: ModelConfig

    @staticmethod
    def init_carry(cfg: ModelConfig, batch: int, max_len: int) -> dict:
        return {"mamba": Mamba2Mixer.init_carry(cfg, batch),
                "swa": init_cache(batch, max_len, cfg.num_heads, cfg.head_dim,
                                  jnp.promote_types(dtype_of(cfg.dtype), jnp.float32))}

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg = self.cfg
        get = (lambda k: None) if carry is None else carry.get
        m = Mamba2Mixer(cfg, name="mamba")(norm(cfg, "mamba_norm")(x_BTD), positions_BT,
                                           segment_ids_BT, get("mamba"))
        m, mamba = (m, None) if carry is None else m
        h = x_BTD + m
        h = h + ffn(cfg, "mlp_1")(norm(cfg, "mlp_1_norm")(h))
        swa = Attention(cfg.num_heads, cfg.num_heads, cfg.head_dim, cfg.memory.window,
                        cfg.rope_theta, cfg.init_std, out_std(cfg), dtype_of(cfg.dtype),
                        dtype_of(cfg.param_dtype), impl=cfg.attn_impl, name="swa")
        a = swa(norm(cfg, "swa_norm")(h), positions_BT, segment_ids_BT, get("swa"))
        a, cache = (a, None) if carry is None else a
        h = h + a
        y = h + ffn(cfg, "mlp_2")(norm(cfg, "mlp_2_norm")(h))
        return y if carry is None else (y, {"mamba": mamba, "swa": cache})
