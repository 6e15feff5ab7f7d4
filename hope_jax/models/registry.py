"""The model registry: a block type plus what the model can do, read by capability, never by name.

`ModelSpec` fields are the capabilities every driver asks about:
  decode_chunk(cfg)     tokens per committed recurrent-decode step (C), 0 = cannot decode
                        (`models/decode.py`; the step replays the partial chunk from the state
                        committed at the last multiple of C, so decoding is exact);
  supports_ntp          the LM may run it segment by segment with in-context CMS (`models/ntp.py`);
  wrap_optimizer        (tx, logical_axes, cfg) -> tx: model-specific outer-optimizer wrapping
                        (HOPE: CMS levels with the `outer` signal step every P optimizer steps);
  inner_defaults        the model's own values of the `model.inner` keys left at their
                        sentinel (chunk_size 0, optimizer "", lr_max 0): Titans and the baselines
                        chunk 64 / titans / 0.1, HOPE 16 / dgd / 1 (SPEC §7);
  legacy_section        the config section its inner-loop keys lived in before `model.inner`
                        ("memory"; HOPE "hope"), for `hope_jax.config_legacy`;
  full_attention        the block runs global causal softmax attention (attention FLOPs);
  layers_per_block      mixer layers in one block (Samba: 2).
Every block class also provides `init_carry(cfg, batch, max_len)`, its fresh per-layer carry
(KV caches, fast state, conv tails) for the LM body's `carry` argument; `None` leaves stand for
state the layer creates from its own params (the meta-learned initial fast weights).

Shape legend: L layers, B batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.models.config import ModelConfig


def _never(cfg: ModelConfig) -> int:
    return 0


ENGINE_DEFAULTS = {"chunk_size": 64, "optimizer": "titans", "lr_max": 0.1}  # Titans (SPEC §4.6)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: its block type and capabilities (module docstring)."""

    block: type[nn.Module]
    decode_chunk: Callable[[ModelConfig], int] = _never
    supports_ntp: bool = False
    wrap_optimizer: Callable | None = None
    inner_defaults: Mapping[str, object] = dataclasses.field(
        default_factory=lambda: dict(ENGINE_DEFAULTS))
    legacy_section: str = "memory"
    full_attention: bool = False
    layers_per_block: int = 1


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, block: type[nn.Module] | ModelSpec, **capabilities) -> None:
    """Adds a model under `name` (usable as `config.model.name`): a `ModelSpec`, or a block class
    with `ModelSpec` capability keywords."""
    MODELS[name] = block if isinstance(block, ModelSpec) else ModelSpec(block, **capabilities)


def model_spec(cfg: ModelConfig) -> ModelSpec:
    if cfg.name not in MODELS:
        raise ValueError(f"model {cfg.name!r} is not registered; known: {sorted(MODELS)}")
    return MODELS[cfg.name]


def init_carry(cfg: ModelConfig, batch: int, max_len: int):
    """The LM body's fresh carry: every block's `init_carry`, stacked on a leading [L] axis."""
    one = model_spec(cfg).block.init_carry(cfg, batch, max_len)
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (cfg.num_layers,) + a.shape), one)
