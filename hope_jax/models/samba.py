"""Samba (Ren et al. 2024): Mamba-style layers and sliding-window attention, interleaved.

The paper's hybrid baseline (Table 1 "Samba*"). One scanned unit is two of Samba's layers:

  h = x + Mamba2(N(x));  h = h + MLP(N(h));  h = h + SWA(N(h));  y = h + MLP(N(h))

so `model.num_layers` counts (Mamba2 + MLP, SWA + MLP) pairs. The Mamba layer is the Mamba2 /
SSD mixer of `hope_jax.models.baselines` (dot-product memory with data-dependent scalar decay, run
by the same engine); Samba used Mamba-1, we use the Mamba2 form the issue asks for. SWA is RoPE
softmax attention over the last `model.memory.window` tokens within the document, computed
blockwise (O(T * window)); Samba's window is 2048.

Shape legend: B batch, T time, D width, H heads, K head dim.
"""

from __future__ import annotations

import flax.linen as nn

from hope_jax.config import ModelConfig
from hope_jax.models.baselines import Mamba2Mixer
from hope_jax.models.titans import local_attention
from hope_jax.models.transformer import ffn, norm, out_std
from hope_jax.nn.layers import DenseGeneral, dtype_of, rope


class SlidingWindowAttention(nn.Module):
    """Causal RoPE attention to the last `window` tokens of the same document."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        cfg = self.cfg
        kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype))
        h, kd, d = cfg.num_heads, cfg.head_dim, cfg.d_model
        proj = lambda n: DenseGeneral((h, kd), ("embed",), ("heads", "kv"), cfg.init_std,
                                      name=n, **kw)(x_BTD)
        q = rope(proj("q"), positions_BT, cfg.rope_theta)
        k = rope(proj("k"), positions_BT, cfg.rope_theta)
        window = cfg.memory.window
        o = local_attention(q, k, proj("v"), segment_ids_BT, block=min(window, x_BTD.shape[1]),
                            look_back=True, window=window)
        return DenseGeneral((d,), ("heads", "kv"), ("embed",), out_std(cfg), name="o", **kw)(o)


class SambaBlock(nn.Module):
    """Mamba2 -> MLP -> SWA -> MLP, each pre-norm residual."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        cfg = self.cfg
        h = x_BTD + Mamba2Mixer(cfg, name="mamba")(norm(cfg, "mamba_norm")(x_BTD), positions_BT,
                                                    segment_ids_BT)
        h = h + ffn(cfg, "mlp_1")(norm(cfg, "mlp_1_norm")(h))
        h = h + SlidingWindowAttention(cfg, name="swa")(norm(cfg, "swa_norm")(h), positions_BT,
                                                         segment_ids_BT)
        return h + ffn(cfg, "mlp_2")(norm(cfg, "mlp_2_norm")(h))
