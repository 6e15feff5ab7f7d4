"""Config section `model.hope`: the self-modifying Titans sequence mixer and the Continuum
Memory System (CMS) of the HOPE block (SPEC §3, §4, §7.0)."""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import ConfigError, field
from hope_jax.memory.config import check_inner_names


@dataclasses.dataclass(frozen=True)
class HopeConfig:
    """HOPE = self-modifying Titans -> CMS chain (SPEC §4.5). Defaults follow SPEC §7."""

    # --- self-modifying Titans (SPEC §4.3-§4.4, Eqs. 83-93) ---
    chunk_size: int = field(16, positive=True,
                            help="main-memory chunk (SPEC A1/A2); must divide cms_periods[0] (ntp)")
    other_chunk_size: int = field(0, nonneg=True,
                                  help="chunk of the k/v/eta/alpha memories; 0 = chunk_size")
    memory_hidden_mult: float = field(1.0, positive=True,
                                      help="hidden width / head dim of each residual MLP memory")
    self_modify: bool = field(True, help="False: static k/v/eta/alpha projections (Titans layer)")
    adaptive_q: bool = field(False, help="q from a memory too (A8; paper: q fixed)")
    inner_optimizer: str = field("dgd", help="inner optimizer (memory.optimizers registry): dgd "
                                             "(Eq. 88 with eta' = eta/(1+eta), A9), dgd_printed "
                                             "(Eq. 88's eta), gd (ablation 'w/o DGD') or yours")
    objective: str = field("l2", help="inner loss of every memory (memory.rules registry)")
    momentum: bool = field(True, help="Titans-style momentum on the inner step (A6)")
    weight_decay: bool = field(True, help="retention gate alpha_t (ablation 'w/o weight decay')")
    static_proj: str = field("", choices=("", "k", "v"),
                             help="move k or v to the slowest level: a fixed projection (Table 6)")
    lr_max: float = field(1.0, positive=True, help="eta_t = lr_max * sigmoid(.) <= 1 (A9)")
    lr_init: float = field(0.01, positive=True,
                           help="eta_t at initialisation (gate bias; ours: 0.1 gave NaN-prone "
                                "grads and +0.5 nats val loss on tiny HOPE)")
    conv_width: int = field(4, positive=True, help="causal depthwise conv window (A16)")
    # --- Continuum Memory System (SPEC §3, §7.0) ---
    cms_periods: tuple[int, ...] = field(
        (16, 256, 0), help="update period of each level in tokens (fast->slow); 0 = never (static)")
    cms_signal: str = field("ntp", choices=("ntp", "local", "outer"),
                            help="what updates a level: NTP loss of the chunk (paper), its own "
                                 "delta-rule objective, or the outer optimizer every period steps")
    cms_variant: str = field("sequential", choices=("sequential", "nested", "independent"),
                             help="Eq. 73 chain / Eq. 72 nested re-init / Eq. 74 aggregated")
    cms_lr: float = field(1e-2, nonneg=True, help="inner learning rate eta^(l) of CMS levels")
    cms_first_order: bool = field(False, help="stop-gradient on the inner CMS gradient (ntp)")
    persist_state: bool = field(False, help="keep fast states across documents (streams, A17)")

    def check(self, path: str) -> None:
        check_inner_names(path, self.objective, "objective", self.inner_optimizer,
                          "inner_optimizer")
        if self.lr_init >= self.lr_max:
            raise ConfigError(f"{path}.lr_init={self.lr_init} must be < lr_max={self.lr_max}")
        if not self.cms_periods:
            raise ConfigError(f"{path}.cms_periods must name at least one level")
        live = [p for p in self.cms_periods if p]
        if live != sorted(live):
            raise ConfigError(f"{path}.cms_periods={self.cms_periods} must be ordered fast -> slow")
        if any(p % live[0] for p in live):
            raise ConfigError(f"{path}.cms_periods={self.cms_periods}: every period must be a "
                              f"multiple of the fastest ({live[0]})")
        if self.cms_variant == "nested" and any(b % a for a, b in zip(live, live[1:])):
            raise ConfigError(f"{path}.cms_periods={self.cms_periods}: nested CMS (Eq. 72) needs "
                              f"each period to divide the next (a level restarts at the slower "
                              f"level's boundary, which must be its own boundary too)")
        other = self.other_chunk_size or self.chunk_size
        if self.cms_signal == "ntp" and live and (live[0] % self.chunk_size or live[0] % other):
            raise ConfigError(
                f"{path}.chunk_size={self.chunk_size} / other_chunk_size={other} must divide the "
                f"fastest CMS period {live[0]} (the model runs in segments of that period)")
