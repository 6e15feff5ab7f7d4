"""Config sections `model.inner` (the inner loop of every fast-weight layer: Titans, HOPE's
self-modifying memories, the baselines) and `model.memory` (the shape of the Titans memory and
its attention branches).

Kept beside the engine so that the schema and the code that reads it change together; validated by
`hope_jax.config` like every other section. Defaults follow Titans (SPEC §4.6) and HOPE (SPEC §7)
where they state a value and are marked "ours" where they do not. Keys whose default differs by
model (chunk size, inner optimizer, lr bound) hold a sentinel (0 or "") that `ModelConfig` fills
with the model's own value (`ModelSpec.inner_defaults`).
"""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import ConfigError, field
from hope_jax.memory.optimizers import INNER_OPTIMIZERS
from hope_jax.memory.rules import OBJECTIVES


def check_inner_names(path: str, objective: str, obj_key: str, optimizer: str | None,
                      opt_key: str) -> None:
    """Inner objective / optimizer names must be registered (beside the registries); None skips
    the optimizer (not chosen yet: the model's default)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"{path}.{obj_key}={objective!r} is not a registered inner objective "
                          f"{sorted(OBJECTIVES)} (memory.rules.register_objective)")
    if optimizer is not None and optimizer not in INNER_OPTIMIZERS:
        raise ConfigError(f"{path}.{opt_key}={optimizer!r} is not a registered inner optimizer "
                          f"{sorted(INNER_OPTIMIZERS)} "
                          "(memory.optimizers.register_inner_optimizer)")


INNER_SENTINELS = {"chunk_size": 0, "optimizer": "", "lr_max": 0.0}  # = the model's default


@dataclasses.dataclass(frozen=True)
class InnerConfig:
    """The inner optimisation of every fast-weight layer (SPEC Def. 1, §4; Titans Eqs. 12-14)."""

    # --- inner objective and optimizer (SPEC Def. 1, A6, A9) ---
    objective: str = field("l2", help="inner loss (memory.rules registry): l2 = 1/2||M(k)-v||^2, "
                                      "dot = -<M(k), v>, or a registered one")
    optimizer: str = field("", help="inner optimizer (memory.optimizers registry): titans = GD "
                                    "(+momentum, +forget gate), gd, dgd = Eq. 88 with eta' = "
                                    "eta/(1+eta) (A9), dgd_printed = Eq. 88's eta, or yours; "
                                    "'' = the model's (HOPE dgd, others titans)")
    momentum: bool = field(True, help="momentum S_t = eta S - theta grad (Titans Eq. 14, A6; "
                                      "ablation 'w/o momentum')")
    momentum_init: float = field(0.9, positive=True, help="momentum gate at init (ours)")
    retention: bool = field(True, help="retention / forget gate M_t = (1 - alpha_t) M + S_t "
                                       "(Titans Eq. 13, HOPE Eq. 88; ablation 'w/o weight "
                                       "decay')")
    forget_init: float = field(0.01, positive=True, help="forget gate alpha_t at init (ours)")
    lr_max: float = field(0.0, nonneg=True, help="inner lr bound: theta_t = lr_max * sigmoid(.) "
                                                 "(A9); 0 = the model's (HOPE 1, others 0.1)")
    lr_init: float = field(0.01, positive=True,
                           help="inner lr at init (gate bias; ours: 0.1 gave NaN-prone grads "
                                "and +0.5 nats val loss on tiny HOPE)")
    # --- the memory's read-out ---
    out_norm: bool = field(False, help="M(x) = x + RMSNorm(MLP(x)) (lucidrains/TTT "
                                       "LayerNorm-residual): bounded but chaotic (PAPER.md D2); "
                                       "False = Eq. 89's x + MLP(x)")
    out_gain: bool = field(False, help="M(x) = x + g * RMSNorm(MLP(x)), g a fast weight the "
                                       "retention gate decays (needs out_norm; PAPER.md D2)")
    grad_clip: float = field(1.0, nonneg=True, help="clip every token's inner gradient to this "
                                                    "global norm (keeps Eq. 89's loop bounded, "
                                                    "chosen by measurement: PAPER.md D2); 0 = "
                                                    "off (the paper)")
    # --- chunked training (SPEC A1, A2, §7.1) ---
    chunk_size: int = field(0, nonneg=True,
                            help="tokens per inner-gradient reference point (HOPE: of M_mem; "
                                 "must divide the fastest ntp CMS period); 0 = the model's "
                                 "(HOPE 16, others 64)")
    remat_every: int = field(4, nonneg=True, help="chunks per jax.checkpoint group; 0 = off")
    closed_form: bool = field(True, help="closed-form chunk update when the optimizer has one")
    doc_reset: bool = field(True, help="fresh fast state at document starts (A4, A17); False "
                                       "= keep state across documents (streams)")
    # --- input map of the memories (Titans §4.4, SPEC A16) ---
    conv_width: int = field(4, positive=True, help="causal depthwise conv on the memory inputs")

    def check(self, path: str) -> None:
        check_inner_names(path, self.objective, "objective", self.optimizer or None, "optimizer")
        for k in ("momentum_init", "forget_init"):
            if not 0.0 < getattr(self, k) < 1.0:
                raise ConfigError(f"{path}.{k}={getattr(self, k)} must be in (0, 1)")
        if self.out_gain and not self.out_norm:
            raise ConfigError(f"{path}.out_gain=True scales the normalised branch: it needs "
                              f"{path}.out_norm=True")
        if self.lr_max and self.lr_init >= self.lr_max:
            raise ConfigError(f"{path}.lr_init={self.lr_init} must be < lr_max={self.lr_max}")

    def resolved(self, defaults) -> InnerConfig:
        """A copy with every sentinel key (0 / "") replaced by `defaults[key]`."""
        fill = {k: defaults[k] for k, v in INNER_SENTINELS.items() if getattr(self, k) == v}
        return dataclasses.replace(self, **fill) if fill else self


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Shape of the Titans neural long-term memory (SPEC §4.6) and its attention branches; its
    inner loop is `model.inner`."""

    # --- architecture of the fast weights (SPEC §4.6, Eq. 89) ---
    arch: str = field("mlp", choices=("linear", "mlp"), help="fast-weight architecture")
    depth: int = field(2, positive=True, help="MLP memory layers (>= 2 for mlp; Titans L_M=2)")
    hidden_mult: float = field(4.0, positive=True, help="MLP memory hidden width / head dim")
    activation: str = field("gelu", choices=("gelu", "silu", "relu"), help="MLP nonlinearity")
    residual: bool = field(True, help="M(x) = x + MLP(x) (SPEC Eq. 89, A15)")
    gate_granularity: str = field("token", choices=("token", "chunk"),
                                  help="gates per token (Titans experiments) or chunk mean")
    read_after_write: bool = field(False,
                                   help="tokens read the state after their own write (A1: False)")
    qk_norm: bool = field(True, help="L2-normalize q and k")
    # --- attention branches of MAG / MAL / MAC (Titans §4) ---
    n_persistent: int = field(4, nonneg=True, help="persistent memory tokens N_p (ours: 4)")
    window: int = field(512, positive=True, help="sliding window of MAG/MAL attention (ours)")
    segment_len: int = field(512, positive=True, help="MAC segment length (ours)")

    def check(self, path: str) -> None:
        if self.arch == "mlp" and self.depth < 2:
            raise ConfigError(f"{path}.depth={self.depth} must be >= 2 for arch='mlp'")
        if self.gate_granularity == "chunk" and self.read_after_write:
            raise ConfigError(f"{path}.gate_granularity='chunk' needs read_after_write=False "
                              "(chunk-mean gates would leak the chunk's future)")
