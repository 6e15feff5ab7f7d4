"""Config section `model.hope`: the self-modifying Titans sequence mixer and the Continuum
Memory System (CMS) of the HOPE block (SPEC §3, §4, §7.0)."""

from __future__ import annotations

import dataclasses

from hope_jax.config_fields import ConfigError, field


@dataclasses.dataclass(frozen=True)
class HopeConfig:
    """HOPE = self-modifying Titans -> CMS chain (SPEC §4.5). Defaults follow SPEC §7; the inner
    loop of its memories (chunk, optimizer, objective, gates, conv) is `model.inner`."""

    # --- self-modifying Titans (SPEC §4.3-§4.4, Eqs. 83-93) ---
    other_chunk_size: int = field(0, nonneg=True,
                                  help="chunk of the k/v/eta/alpha memories; 0 = inner.chunk_size")
    memory_hidden_mult: float = field(1.0, positive=True,
                                      help="hidden width / head dim of each residual MLP memory")
    self_modify: bool = field(True, help="False: static k/v/eta/alpha projections (Titans layer)")
    adaptive_q: bool = field(False, help="q from a memory too (A8; paper: q fixed)")
    shared_input: bool = field(False, help="every adaptive memory reads one input "
                                           "silu(conv(x W_x)) (Eqs. 83-86's x_t for all; A16) "
                                           "instead of its own map (PAPER.md D9)")
    static_proj: str = field("", choices=("", "k", "v"),
                             help="move k or v to the slowest level: a fixed projection (Table 6)")
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
    cms_grad: str = field("exact", choices=("exact", "residual"),
                          help="ntp inner gradient of a level: exact (Eq. 71, back-propagated "
                               "through every layer above) or residual (the final residual's "
                               "gradient taken as the level output's: skips the mixers above; "
                               "needs cms_first_order)")
    ntp_remat_group: int = field(0, nonneg=True,
                                 help="ntp: rematerialise groups of this many segments in the "
                                      "backward pass (only the carry at group starts is stored: "
                                      "memory ~ T/(period*group) carries); 0 = store every "
                                      "segment")

    def check(self, path: str) -> None:
        if self.cms_grad == "residual" and not self.cms_first_order:
            raise ConfigError(f"{path}.cms_grad='residual' stops the inner gradient at every "
                              f"layer's input, which the outer gradient of a second-order CMS "
                              f"needs: set {path}.cms_first_order=True")
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
