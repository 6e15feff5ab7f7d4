"""What the `ntp` CMS driver must keep for the backward pass, counted before anything compiles.

Each dynamic CMS level carries per-sequence fast parts of its SwiGLU weights (Delta, the
gradient sum of the running window, the new-document gradient sum: 3 copies of 3·D·F floats per
layer) from segment to segment (`models/ntp.py`). Backprop through the segment scan stores that
carry once per segment, or with `hope.ntp_remat_group` = G once per group plus one group being
recomputed. This lower bound (the mixer state, KV caches and the segment's own activations
come on top) is what made the 1.3B plan with periods 16/256 need terabytes per device; a config
whose bound exceeds `train.memory_budget_gib` fails before compiling, naming these numbers.

Shape legend: L layers, D width, F CMS hidden width, T sequence, S segment, N = T / S.
"""

from __future__ import annotations

import math

from hope_jax.config_fields import ConfigError
from hope_jax.memory import cms
from hope_jax.models.config import ModelConfig
from hope_jax.models.ntp import ntp_segment

GIB = 1024**3


def carry_bytes(cfg: ModelConfig, t: int, tensor: int = 1) -> int:
    """Bytes of one sequence's carried CMS fast parts (fp32), split over a `tensor` axis."""
    dyn = sum(cms.dynamic_levels(cfg.hope.cms_periods, t))
    split = tensor if cfg.hidden % tensor == 0 else 1
    return 4 * 3 * dyn * cfg.num_layers * 3 * cfg.d_model * cfg.hidden // split


def stored_carries(cfg: ModelConfig, t: int) -> int:
    """Carries the backward pass holds at once: one per segment, or with groups of G the group
    starts, the plainly scanned remainder and the G carries of the group being recomputed."""
    s = ntp_segment(cfg, t)
    if not s:
        return 0
    n, g = t // s, cfg.hope.ntp_remat_group
    rest = n - 1  # the first segment runs before the scan
    if g <= 1 or rest < g:
        return n
    return 1 + rest // g + rest % g + g


def stored_bytes(cfg: ModelConfig, t: int, seqs_per_device: int, tensor: int = 1) -> int:
    """Lower bound of the per-device bytes the ntp backward pass stores (module doc)."""
    return stored_carries(cfg, t) * carry_bytes(cfg, t, tensor) * seqs_per_device


def check_budget(cfg, mesh_shape: dict) -> None:
    """Raises ConfigError when the ntp lower bound exceeds `cfg.train.memory_budget_gib` (> 0)."""
    budget, m = cfg.train.memory_budget_gib, cfg.model
    t = cfg.data.seq_len
    if not budget or not ntp_segment(m, t):
        return
    batch_devices = mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1)
    seqs = max(1, math.ceil(cfg.data.batch_size / cfg.optim.grad_accum / batch_devices))
    need = stored_bytes(m, t, seqs, mesh_shape.get("tensor", 1))
    if need > budget * GIB:
        raise ConfigError(
            f"the ntp CMS backward pass stores at least {need / GIB:,.1f} GiB per device "
            f"(> config.train.memory_budget_gib={budget}): {stored_carries(m, t)} carries of "
            f"{carry_bytes(m, t, mesh_shape.get('tensor', 1)) / GIB:.2f} GiB x {seqs} "
            f"sequences per device per micro-batch; raise optim.grad_accum, hope.cms_periods "
            f"or hope.ntp_remat_group (docs/PAPER.md 'What fits')")
