"""Optimizer registry: `config.optim.name` -> an optax GradientTransformation.

Every optimizer is built as `builder(cfg, schedule, groups)` where `groups` is a pytree (same
structure as the params) of group names from `param_groups`: "matrix" (2-D weights, possibly
stacked over layers), "vector" (norm scales, gates, conv taps) and "embedding" (token tables).
Routing by group is how weight decay masks and Muon-style matrix-only updates are expressed.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from hope_jax.optim.config import OptimConfig

Builder = Callable[[OptimConfig, optax.Schedule, object], optax.GradientTransformation]
OPTIMIZERS: dict[str, Builder] = {}


def register_optimizer(name: str):
    def deco(fn: Builder) -> Builder:
        OPTIMIZERS[name] = fn
        return fn

    return deco


def param_groups(logical_axes) -> object:
    """Logical-axes pytree (tuples of axis names per param) -> pytree of group names."""

    def group(axes) -> str:
        axes = tuple(a for a in axes if a != "layers")
        if "vocab" in axes:
            return "embedding"
        if len(axes) >= 2 and "conv" not in axes:
            return "matrix"
        return "vector"

    return jax.tree.map(group, logical_axes, is_leaf=lambda x: isinstance(x, tuple))


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to `cfg.lr`, then cosine decay to `cfg.lr * cfg.min_lr_ratio`."""
    decay = cfg.decay_steps or total_steps
    warmup = min(cfg.warmup_steps, max(decay - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup, decay_steps=max(decay, warmup + 1),
        end_value=cfg.lr * cfg.min_lr_ratio,
    )


def decay_mask(cfg: OptimConfig, groups):
    """True where weight decay applies: matrices always, embeddings/vectors by config."""
    allowed = {"matrix": True, "embedding": cfg.decay_embeddings, "vector": cfg.decay_norms}
    return jax.tree.map(lambda g: allowed[g], groups)


def build_optimizer(cfg: OptimConfig, total_steps: int, groups) -> optax.GradientTransformation:
    """Clipping + the named optimizer, with the learning rate schedule injected."""
    tx = OPTIMIZERS[cfg.name](cfg, schedule(cfg, total_steps), groups)
    if cfg.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx


@register_optimizer("adamw")
def _adamw(cfg: OptimConfig, lr: optax.Schedule, groups) -> optax.GradientTransformation:
    return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                       mask=decay_mask(cfg, groups))
