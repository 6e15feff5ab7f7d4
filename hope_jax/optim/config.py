"""Config section `optim`: the outer optimizer (optax) and its schedule.

Kept beside the optimizer registry it selects from (`hope_jax.optim.registry`), so that name
validation needs nothing outside this package; assembled into `hope_jax.config.Config`.
"""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import ConfigError, field


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The outer optimizer (optax) and its schedule."""

    name: str = field("adamw", help="optimizer registry key (see hope_jax.optim.OPTIMIZERS)")
    lr: float = field(3e-3, positive=True, help="peak learning rate")
    warmup_steps: int = field(50, nonneg=True)
    decay_steps: int = field(0, nonneg=True, help="cosine decay length; 0 = train.steps")
    min_lr_ratio: float = field(0.1, nonneg=True, help="final lr = lr * min_lr_ratio")
    b1: float = field(0.9, nonneg=True)
    b2: float = field(0.95, nonneg=True)
    eps: float = field(1e-8, positive=True)
    weight_decay: float = field(0.1, nonneg=True)
    decay_embeddings: bool = field(False, help="apply weight decay to embeddings")
    decay_norms: bool = field(False, help="apply weight decay to norm scales and other vectors")
    clip_norm: float = field(1.0, nonneg=True, help="global-norm clipping; 0 = off")
    grad_accum: int = field(1, positive=True, help="micro-batches per optimizer step")
    # Deep optimizers (hope_jax/optim, SPEC §2); ignored by adamw.
    aux_lr: float = field(0.0, nonneg=True, help="peak lr of the AdamW that updates vectors and "
                          "embeddings under the matrix optimizers; 0 = lr")
    other_params: str = field("adamw", choices=("adamw", "same"),
                              help="vectors/embeddings under momentum variants: AdamW or the same "
                              "rule (Newton-Schulz optimizers always use AdamW)")
    momentum_form: str = field("ema", choices=("ema", "heavy_ball"),
                               help="momentum variants write (1-b1)*value (ema) or value "
                               "(heavy_ball) into the memory (SPEC Eq. 33)")
    precond: str = field("diag", choices=("diag", "shampoo", "none"),
                         help="preconditioner P of precond_momentum / delta_momentum "
                         "(SPEC Eqs. 38-41, 46-49)")
    precond_every: int = field(10, positive=True, help="shampoo: steps between root refreshes")
    delta_beta: float = field(0.5, nonneg=True, help="delta_momentum: strength of the "
                              "gradient-dependent decay (b1 I - beta G^ G^T) m (SPEC Eqs. 48-49)")
    delta_form: str = field("reinterpreted", choices=("reinterpreted", "paper"),
                            help="delta_momentum: normalized G^ with delta_beta, or Eqs. 48-49 "
                            "as printed (raw G G^T, coefficient 1)")
    dmgd_form: str = field("reinterpreted", choices=("reinterpreted", "paper"),
                           help="dmgd: shared MLP on normalized (g, m) with objective <f, u>, or "
                           "Eq. 50 as printed (per-leaf MLP on u, objective <m(u), 1>)")
    dmgd_hidden: int = field(16, nonneg=True, help="dmgd: neurons of the shared momentum MLP; "
                             "0 = linear memory (momentum)")
    dmgd_lr: float = field(0.01, nonneg=True, help="dmgd: inner lr of the momentum MLP (Eq. 50)")
    dmgd_decay: float = field(0.9, nonneg=True, help="dmgd: retention of the momentum MLP weights")
    nesterov: bool = field(True, help="muon: Nesterov momentum (optax.contrib.muon default)")
    ns_steps: int = field(5, positive=True, help="Newton-Schulz iterations (muon, m3; SPEC A10)")
    b3: float = field(0.9, nonneg=True, help="m3: slow-momentum factor beta3 (SPEC §2.1)")
    m3_alpha: float = field(1.0, nonneg=True, help="m3: weight of the slow momentum's read-out")
    m3_period: int = field(10, positive=True, help="m3: slow-memory chunk f (optimizer steps)")

    def check(self, path: str) -> None:
        from hope_jax.optim import OPTIMIZERS  # late: the package registers its builders

        if self.name not in OPTIMIZERS:
            raise ConfigError(f"{path}.name={self.name!r} is not an optimizer; "
                              f"known: {sorted(OPTIMIZERS)}")
        for k in ("b1", "b2", "b3", "min_lr_ratio", "delta_beta", "dmgd_decay"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"{path}.{k}={getattr(self, k)} must be in [0, 1]")
