"""The language model: embed -> stacked blocks -> RMSNorm -> logits, and the model registry.

A model is a block type: `MODELS[name]` is a Linen module class constructed as `Block(cfg)` and
called as `block(x_BTD, positions_BT, segment_ids_BT) -> x_BTD`. Everything else (embedding,
stacking with nn.scan, remat, output head) is shared, so a new model only registers its block.

Shape legend: B batch, T time, D width, V vocabulary, L layers.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hope_jax.config import ModelConfig
from hope_jax.models.baselines import BASELINE_MODELS
from hope_jax.models.hope import HopeAttentionBlock, HopeBlock
from hope_jax.models.ntp import ntp_forward, ntp_segment
from hope_jax.models.samba import SambaBlock
from hope_jax.models.titans import TITANS_MODELS
from hope_jax.models.transformer import TransformerBlock, norm
from hope_jax.nn.layers import DenseGeneral, Embed, dtype_of

MODELS: dict[str, type[nn.Module]] = {
    "transformer": TransformerBlock, **TITANS_MODELS,
    "hope": HopeBlock, "hope_attention": HopeAttentionBlock,
    **BASELINE_MODELS, "samba": SambaBlock,  # the paper's baselines (SPEC §5, §6)
}


def register_model(name: str, block_cls: type[nn.Module]) -> None:
    """Adds a block type to the registry under `name` (usable as `config.model.name`)."""
    MODELS[name] = block_cls


class _ScanCell(nn.Module):
    """Adapts a block to nn.scan's (carry, xs) -> (carry, ys) signature."""

    block_cls: type[nn.Module]
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        return self.block_cls(self.cfg, name="block")(x_BTD, positions_BT, segment_ids_BT), None


def _block_cls(cfg: ModelConfig):
    cls = MODELS[cfg.name]
    if cfg.remat == "block":
        cls = nn.remat(cls, prevent_cse=not cfg.scan_layers)
    return cls


class LM(nn.Module):
    """Decoder-only LM over `cfg.num_layers` blocks of type `MODELS[cfg.name]`."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None):
        """Returns logits [B, T, V] (compute dtype).

        Args:
          tokens_BT: int token ids.
          positions_BT: position of each token inside its document (RoPE); default arange.
          segment_ids_BT: document id of each token in a packed row (attention and fast-memory
            state never cross a document boundary); default one document per row.
        """
        cfg = self.cfg
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        b, t = tokens_BT.shape
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones((b, t), jnp.int32)
        block_cls = _block_cls(cfg)
        if getattr(MODELS[cfg.name], "supports_ntp", False) and ntp_segment(cfg, t):
            return ntp_forward(cfg, block_cls, tokens_BT, positions_BT, segment_ids_BT)
        embed = Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, dt, pdt, name="embed")
        x = embed(tokens_BT)
        if cfg.scan_layers:
            stack = nn.scan(
                _ScanCell,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(block_cls, cfg, name="blocks")
            x, _ = stack(x, positions_BT, segment_ids_BT)
        else:
            for i in range(cfg.num_layers):
                x = block_cls(cfg, name=f"block_{i}")(x, positions_BT, segment_ids_BT)
        x = norm(cfg, "final_norm")(x)
        if cfg.tie_embeddings:
            return embed.attend(x)
        head = DenseGeneral((cfg.vocab_size,), ("embed",), ("vocab",), cfg.init_std, dt, pdt,
                            name="head")
        return head(x)
