"""The built-in models and their capabilities (`registry.ModelSpec`), registered on import.

Shape legend: none (configuration only).
"""

from __future__ import annotations

import math

from hope_jax.memory import cms
from hope_jax.models.baselines import BASELINE_MODELS, TTTMixer
from hope_jax.models.config import ModelConfig
from hope_jax.models.hope import HopeAttentionBlock, HopeBlock
from hope_jax.models.registry import register_model
from hope_jax.models.samba import SambaBlock
from hope_jax.models.titans import TITANS_MODELS
from hope_jax.models.transformer import TransformerBlock


def _one(cfg: ModelConfig) -> int:
    return 1


def _memory_chunk(cfg: ModelConfig) -> int:
    """Titans' chunked memory and TTT's mini-batch (the model itself): commit whole chunks."""
    return cfg.inner.chunk_size


def _hope_chunk(cfg: ModelConfig, mixer_chunk: int) -> int:
    """Replay chunk of a HOPE block: the mixer's chunk, or with `ntp` the fastest CMS period (the
    decoder then commits segments, `models/decode.py`); 0 for the `local` signal (not yet)."""
    hc = cfg.hope
    live = [p for p in hc.cms_periods if p]
    if hc.cms_signal == "local" and live:
        return 0
    if hc.cms_signal == "ntp" and live:
        return live[0]  # a multiple of the mixer's chunks (config check)
    return mixer_chunk


def _hope_decode(cfg: ModelConfig) -> int:
    hc = cfg.hope
    c = cfg.inner.chunk_size
    return _hope_chunk(cfg, math.lcm(c, hc.other_chunk_size or c))


def _hope_attention_decode(cfg: ModelConfig) -> int:
    return _hope_chunk(cfg, 1)


def _wrap_cms_outer(tx, axes, cfg: ModelConfig):
    """CMS levels with the `outer` signal get `tx`'s update once every P steps (SPEC §7.0)."""
    hc = cfg.hope
    return cms.wrap_outer_levels(tx, axes, hc.cms_periods, hc.cms_signal,
                                 is_leaf=lambda x: isinstance(x, tuple))


# SPEC §7: M_mem chunk 16, DGD (A9), eta_t <= 1
_HOPE = dict(supports_ntp=True, wrap_optimizer=_wrap_cms_outer, legacy_section="hope",
             inner_defaults={"chunk_size": 16, "optimizer": "dgd", "lr_max": 1.0})

register_model("transformer", TransformerBlock, decode_chunk=_one, full_attention=True)
for _name, _block in TITANS_MODELS.items():  # chunked neural memory: commit whole chunks
    register_model(_name, _block, decode_chunk=_memory_chunk)
register_model("hope", HopeBlock, decode_chunk=_hope_decode, **_HOPE)
register_model("hope_attention", HopeAttentionBlock, decode_chunk=_hope_attention_decode,
               full_attention=True, **_HOPE)
for _name, _block in BASELINE_MODELS.items():  # the paper's baselines (SPEC §5, §6)
    register_model(_name, _block, decode_chunk=_memory_chunk if _block.mixer is TTTMixer else _one)
register_model("samba", SambaBlock, decode_chunk=_one, layers_per_block=2)
