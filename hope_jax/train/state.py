"""Train state: params, optimizer state and step, built from the config in one place.

The logical axes of every parameter are read from the abstract init (`jax.eval_shape`, nothing
allocated), so optimizer routing (`hope_jax.optim.param_groups`) and sharding
(`hope_jax.sharding`) both use the annotations the layers declare.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from hope_jax.config import Config
from hope_jax.models.lm import LM
from hope_jax.optim import build_optimizer
from hope_jax.optim.registry import param_groups


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def dummy_tokens(cfg: Config, batch: int = 1):
    return jnp.zeros((batch, cfg.data.seq_len), jnp.int32)


def abstract_variables(cfg: Config, model: nn.Module | None = None):
    """Boxed (nn.Partitioned) variables as ShapeDtypeStructs: shapes + logical axes, no memory."""
    model = model or LM(cfg.model)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), dummy_tokens(cfg)))


def logical_axes(cfg: Config, model: nn.Module | None = None):
    """Pytree of logical axis-name tuples, same structure as the params."""
    boxed = abstract_variables(cfg, model)["params"]
    return jax.tree.map(
        lambda p: tuple(p.names) if isinstance(p, nn.Partitioned) else (None,) * p.value.ndim,
        boxed, is_leaf=lambda p: isinstance(p, nn.Partitioned),
    )


def param_count(cfg: Config) -> int:
    params = nn.unbox(abstract_variables(cfg)["params"])
    return sum(int(p.size) for p in jax.tree.leaves(params))


def make_optimizer(cfg: Config, model: nn.Module | None = None) -> optax.GradientTransformation:
    groups = param_groups(logical_axes(cfg, model))
    return build_optimizer(cfg.optim, cfg.train.steps, groups)


def init_state(cfg: Config, model: nn.Module, tx: optax.GradientTransformation) -> TrainState:
    """Fresh state from `cfg.train.seed` (jitted so nothing is built op by op)."""

    def init():
        params = nn.unbox(model.init(jax.random.key(cfg.train.seed), dummy_tokens(cfg))["params"])
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

    return jax.jit(init)()
