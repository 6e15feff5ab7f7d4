"""Config section `model.memory`: the inner-loop (fast-weight) memory used by Titans-family layers.

Kept beside the engine so that the schema and the code that reads it change together; validated by
`hope_jax.config` like every other section.
"""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import ConfigError, field


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Neural long-term memory (SPEC §4.6) as used by the Titans models."""

    arch: str = field("mlp", choices=("linear", "mlp"), help="fast-weight architecture")
    depth: int = field(2, positive=True, help="MLP memory layers (>= 2 for arch='mlp')")
    hidden_mult: float = field(4.0, positive=True, help="MLP memory hidden width / head dim")
    chunk_size: int = field(64, positive=True, help="tokens per inner-gradient reference point")

    def check(self, path: str) -> None:
        if self.arch == "mlp" and self.depth < 2:
            raise ConfigError(f"{path}.depth={self.depth} must be >= 2 for arch='mlp'")
