"""Config section `model`: the network, with its sub-sections `inner` (every fast-weight layer's
inner loop), `memory` (Titans), `hope` (self-modifying Titans + CMS) and `baseline`.

Kept beside the model registry (`hope_jax.models.registry`): the model name is validated against
it and the model's own inner-loop defaults (`ModelSpec.inner_defaults`) come from it, so nothing
here imports `hope_jax.config`.
"""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import ConfigError, field
from hope_jax.memory.baseline_config import BaselineConfig
from hope_jax.memory.config import InnerConfig, MemoryConfig
from hope_jax.memory.hope_config import HopeConfig


def registered_models() -> dict:
    """The model registry, with the built-in models registered (late: the models import this)."""
    from hope_jax.models import catalog  # noqa: F401
    from hope_jax.models.registry import MODELS

    return MODELS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network. `name` picks a model from `hope_jax.models.lm.MODELS`."""

    name: str = field("transformer", help="model registry key (see hope_jax.models.lm.MODELS)")
    vocab_size: int = field(257, positive=True, help="output vocabulary; >= tokenizer vocab")
    d_model: int = field(256, positive=True)
    num_layers: int = field(4, positive=True)
    num_heads: int = field(4, positive=True)
    num_kv_heads: int = field(0, nonneg=True, help="grouped-query attention; 0 = num_heads")
    mlp_hidden: int = field(0, nonneg=True, help="SwiGLU hidden width; 0 = 8/3*d_model rounded")
    mlp_multiple_of: int = field(64, positive=True)
    rope_theta: float = field(10000.0, positive=True)
    tie_embeddings: bool = field(True)
    dtype: str = field("float32", choices=("float32", "bfloat16", "float16", "float64"),
                    help="compute dtype of matmuls; params stay in param_dtype")
    param_dtype: str = field("float32", choices=("float32", "float64"))
    norm_eps: float = field(1e-6, positive=True)
    init_std: float = field(0.02, positive=True)
    scan_layers: bool = field(True, help="stack blocks with nn.scan (one compiled block)")
    remat: str = field("none", choices=("none", "block"), help="rematerialize each block")
    attn_window: int = field(0, nonneg=True, help="sliding-window size for attention; 0 = full")
    attn_q_block: int = field(0, nonneg=True,
                              help="attention logits this many queries at a time, recomputed in "
                                   "backward (memory O(block x T), not O(T^2)); 0 = full")
    attn_impl: str = field("auto", choices=("auto", "xla", "dot_product", "cudnn", "splash"),
                           help="attention kernel (nn/attention_kernels.py); auto = cudnn on GPU "
                                "(bf16/fp16), splash on TPU, else xla")
    inner: InnerConfig = dataclasses.field(default_factory=InnerConfig)
    memory: MemoryConfig = dataclasses.field(default_factory=MemoryConfig)
    hope: HopeConfig = dataclasses.field(default_factory=HopeConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)

    def __post_init__(self):
        # The model's own inner-loop defaults fill the sentinel keys of `inner` (0 / ""), so every
        # ModelConfig, validated or built directly, holds the values its layers run with.
        spec = registered_models().get(self.name)
        if spec is not None:
            object.__setattr__(self, "inner", self.inner.resolved(spec.inner_defaults))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def hidden(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        h = int(8 * self.d_model / 3)
        m = self.mlp_multiple_of
        return m * ((h + m - 1) // m)

    def check(self, path: str) -> None:
        models = registered_models()
        if self.name not in models:
            raise ConfigError(f"{path}.name={self.name!r} is not a model; known: {sorted(models)}")
        spec, inner, hc = models[self.name], self.inner, self.hope
        if inner.lr_init >= inner.lr_max:
            raise ConfigError(f"{path}.inner.lr_init={inner.lr_init} must be < "
                              f"inner.lr_max={inner.lr_max}")
        live = [p for p in hc.cms_periods if p]
        other = hc.other_chunk_size or inner.chunk_size
        if (spec.supports_ntp and hc.cms_signal == "ntp" and live
                and (live[0] % inner.chunk_size or live[0] % other)):
            raise ConfigError(
                f"{path}.inner.chunk_size={inner.chunk_size} / hope.other_chunk_size={other} "
                f"must divide the fastest CMS period {live[0]} (the model runs in segments of "
                "that period)")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"{path}.num_heads={self.num_heads} must divide {path}.d_model={self.d_model}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head dim d_model/num_heads={self.head_dim} must be even for RoPE")
        if self.num_heads % self.kv_heads:
            raise ConfigError(
                f"{path}.num_kv_heads={self.kv_heads} must divide {path}.num_heads={self.num_heads}"
            )
        if self.attn_impl == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"{path}.attn_impl='cudnn' needs {path}.dtype bfloat16 or float16")
