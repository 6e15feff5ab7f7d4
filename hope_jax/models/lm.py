"""The ONE LM body: embed -> stacked blocks -> RMSNorm -> logits, with an explicit carry.

`LM(cfg)(tokens, positions, segment_ids, carry=None)`:
  * carry None: the parallel forward over a whole sequence, returns logits (training, eval);
  * carry given (per-layer state stacked on a leading [L] axis, `registry.init_carry`): the same
    body continues from that state and returns (logits, new carry). The decoder
    (`models/decode.py`) and the in-context CMS segment driver (`models/ntp.py`) are drivers
    around this body; none of them re-implements the forward.

A model is a block type registered in `registry.MODELS`: `Block(cfg)(x, positions, segment_ids,
carry=None)` returns x (carry None) or (x, new carry). Everything else (embedding, stacking with
nn.scan, remat, output head) is shared, so a new model only registers its block.

Shape legend: B batch, T time, D width, V vocabulary, L layers.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.models import catalog  # noqa: F401  (registers the built-in models)
from hope_jax.models.config import ModelConfig
from hope_jax.models.ntp import ntp_forward, ntp_segment
from hope_jax.models.registry import MODELS, model_spec, register_model
from hope_jax.models.transformer import norm
from hope_jax.nn.layers import DenseGeneral, Embed, dtype_of

__all__ = ["LM", "MODELS", "model_spec", "register_model"]


class _ScanCell(nn.Module):
    """Adapts a block to nn.scan's (carry, xs) -> (carry, ys) signature (layer carry scanned)."""

    block_cls: type[nn.Module]
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry):
        block = self.block_cls(self.cfg, name="block")
        if carry is None:
            return block(x_BTD, positions_BT, segment_ids_BT), None
        return block(x_BTD, positions_BT, segment_ids_BT, carry)


def _block_cls(cfg: ModelConfig):
    cls = model_spec(cfg).block
    if cfg.remat == "block":
        cls = nn.remat(cls, prevent_cse=not cfg.scan_layers)
    return cls


class LM(nn.Module):
    """Decoder-only LM over `cfg.num_layers` blocks of the registered model `cfg.name`."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, carry=None):
        """Returns logits [B, T, V] (compute dtype), or (logits, new carry) when `carry` is given.

        Args:
          tokens_BT: int token ids.
          positions_BT: position of each token inside its document (RoPE); default arange.
          segment_ids_BT: document id of each token in a packed row (attention and fast-memory
            state never cross a document boundary); default one document per row.
          carry: per-layer state stacked on [L] (`registry.init_carry`), or None.
        """
        cfg = self.cfg
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        b, t = tokens_BT.shape
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones((b, t), jnp.int32)
        if carry is None and model_spec(cfg).supports_ntp and ntp_segment(cfg, t):
            return ntp_forward(LM(cfg, name="ntp"), cfg, tokens_BT, positions_BT, segment_ids_BT)
        block_cls = _block_cls(cfg)
        embed = Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, dt, pdt, name="embed")
        x = embed(tokens_BT)
        if cfg.scan_layers:
            stack = nn.scan(
                _ScanCell,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, 0),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(block_cls, cfg, name="blocks")
            x, carry = stack(x, positions_BT, segment_ids_BT, carry)
        elif carry is None:
            for i in range(cfg.num_layers):
                x = block_cls(cfg, name=f"block_{i}")(x, positions_BT, segment_ids_BT)
        else:
            new = []
            for i in range(cfg.num_layers):
                c = jax.tree_util.tree_map(lambda a, i=i: a[i], carry)
                x, c = block_cls(cfg, name=f"block_{i}")(x, positions_BT, segment_ids_BT, c)
                new.append(c)
            carry = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *new)
        if carry is not None and "teach" in carry:  # HOPE cms_grad="residual" (models/hope.py)
            carry = dict(carry)
            x = x + jnp.sum(carry.pop("teach"), 0)
        x = norm(cfg, "final_norm")(x)
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = DenseGeneral((cfg.vocab_size,), ("embed",), ("vocab",), cfg.init_std, dt,
                                  pdt, name="head")(x)
        return logits if carry is None else (logits, carry)
