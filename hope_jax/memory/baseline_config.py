"""Config section `model.baseline`: the paper's baselines as engine configurations (SPEC §5).

Shared by the linear-attention / RetNet / Mamba2 / DeltaNet / Gated DeltaNet / TTT / Samba models
(`hope_jax.models.baselines`, `hope_jax.models.samba`). Chunk size, short-conv width, document
resets, TTT's inner lr and Samba's window come from `model.memory` (same meaning as for Titans).
"""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import field


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Per-family shapes that the papers fix and the generic memory section does not name."""

    impl: str = field("fast", choices=("fast", "engine"),
                      help="linear members: fast chunked form (UT transform) or the generic "
                           "engine (delta rules at chunk 1: slow, for checks)")
    expand_v: float = field(0.0, nonneg=True,
                            help="value head dim / key head dim; 0 = the paper's (RetNet 2, "
                                 "others 1)")
    ssm_expand: float = field(2.0, positive=True, help="Mamba2 inner width / d_model")
    ssm_state: int = field(128, positive=True, help="Mamba2 state size N (keys B, queries C)")
    conv_bias: bool = field(False, help="Mamba2: a learned bias on its causal convs of x, B, C "
                                        "(mamba_ssm's default; PAPER.md D14)")
