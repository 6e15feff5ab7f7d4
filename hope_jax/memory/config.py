"""Config section `model.memory`: the inner-loop (fast-weight) memory used by Titans-family layers.

Kept beside the engine so that the schema and the code that reads it change together; validated by
`hope_jax.config` like every other section. Defaults follow Titans (SPEC §4.6) where it states a
value and are marked "ours" where it does not.
"""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import ConfigError, field
from hope_jax.memory.optimizers import INNER_OPTIMIZERS
from hope_jax.memory.rules import OBJECTIVES


def check_inner_names(path: str, objective: str, obj_key: str, optimizer: str,
                      opt_key: str) -> None:
    """Inner objective / optimizer names must be registered (beside the registries)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"{path}.{obj_key}={objective!r} is not a registered inner objective "
                          f"{sorted(OBJECTIVES)} (memory.rules.register_objective)")
    if optimizer not in INNER_OPTIMIZERS:
        raise ConfigError(f"{path}.{opt_key}={optimizer!r} is not a registered inner optimizer "
                          f"{sorted(INNER_OPTIMIZERS)} "
                          "(memory.optimizers.register_inner_optimizer)")


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Neural long-term memory (SPEC §4.6) as used by the Titans models."""

    # --- architecture of the fast weights (SPEC §4.6, Eq. 89) ---
    arch: str = field("mlp", choices=("linear", "mlp"), help="fast-weight architecture")
    depth: int = field(2, positive=True, help="MLP memory layers (>= 2 for mlp; Titans L_M=2)")
    hidden_mult: float = field(4.0, positive=True, help="MLP memory hidden width / head dim")
    activation: str = field("gelu", choices=("gelu", "silu", "relu"), help="MLP nonlinearity")
    residual: bool = field(True, help="M(x) = x + MLP(x) (SPEC Eq. 89, A15)")
    out_norm: bool = field(True, help="M(x) = x + RMSNorm(MLP(x)): keeps the inner loop stable "
                                      "(lucidrains/TTT LayerNorm-residual; ours)")
    # --- inner objective and optimizer (SPEC Def. 1, Titans Eqs. 12-14, A6, A9) ---
    objective: str = field("l2", help="inner loss (memory.rules registry): l2 = 1/2||M(k)-v||^2, "
                                      "dot = -<M(k), v>, or a registered one")
    inner_opt: str = field("titans", help="inner optimizer (memory.optimizers registry): titans "
                                          "= GD (+momentum, +forget gate); dgd = SPEC A9 with "
                                          "eta' = eta/(1+eta); dgd_printed = Eq. 88's eta")
    momentum: bool = field(True, help="Titans momentum S_t = eta S - theta grad (Eq. 14)")
    decay: bool = field(True, help="forget gate M_t = (1 - alpha_t) M_{t-1} + S_t (Eq. 13)")
    lr_max: float = field(0.1, positive=True,
                          help="inner lr theta_t = lr_max * sigmoid(.) (ours, lucidrains 1e-1)")
    lr_init: float = field(0.01, positive=True, help="initial inner lr (gate bias; ours)")
    momentum_init: float = field(0.9, positive=True, help="initial momentum eta_t (ours)")
    forget_init: float = field(0.01, positive=True, help="initial forget gate alpha_t (ours)")
    gate_granularity: str = field("token", choices=("token", "chunk"),
                                  help="gates per token (Titans experiments) or chunk mean")
    # --- chunked training (SPEC A1, A2, §7.1) ---
    chunk_size: int = field(64, positive=True, help="tokens per inner-gradient reference point")
    read_after_write: bool = field(False,
                                   help="tokens read the state after their own write (A1: False)")
    remat_every: int = field(4, nonneg=True, help="chunks per jax.checkpoint group; 0 = off")
    closed_form: bool = field(True, help="closed-form chunk update when the optimizer allows")
    doc_reset: bool = field(True, help="reset fast state at document starts (A4, A17)")
    # --- layer around the memory (Titans §4.4, SPEC A16) ---
    conv_width: int = field(4, positive=True, help="causal depthwise conv on q/k/v")
    qk_norm: bool = field(True, help="L2-normalize q and k")
    # --- attention branches of MAG / MAL / MAC (Titans §4) ---
    n_persistent: int = field(4, nonneg=True, help="persistent memory tokens N_p (ours: 4)")
    window: int = field(512, positive=True, help="sliding window of MAG/MAL attention (ours)")
    segment_len: int = field(512, positive=True, help="MAC segment length (ours)")

    def check(self, path: str) -> None:
        check_inner_names(path, self.objective, "objective", self.inner_opt, "inner_opt")
        if self.arch == "mlp" and self.depth < 2:
            raise ConfigError(f"{path}.depth={self.depth} must be >= 2 for arch='mlp'")
        if self.gate_granularity == "chunk" and self.read_after_write:
            raise ConfigError(f"{path}.gate_granularity='chunk' needs read_after_write=False "
                              "(chunk-mean gates would leak the chunk's future)")
        if self.lr_init >= self.lr_max:
            raise ConfigError(f"{path}.lr_init={self.lr_init} must be < lr_max={self.lr_max}")
        for k in ("momentum_init", "forget_init"):
            if not 0.0 < getattr(self, k) < 1.0:
                raise ConfigError(f"{path}.{k}={getattr(self, k)} must be in (0, 1)")
