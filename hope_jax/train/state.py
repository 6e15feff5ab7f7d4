"""Train state: params, optimizer state and step, built from the config in one place.

The logical axes of every parameter are read from the abstract init (`jax.eval_shape`, nothing
allocated), so optimizer routing (`hope_jax.optim.labelled_groups`) and sharding
(`hope_jax.sharding`) both use the annotations the layers declare. With a mesh, the state is
created directly in its sharding (`jax.jit(init, out_shardings=...)`): no device ever holds a full
copy of a sharded param or optimizer moment.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hope_jax import sharding
from hope_jax.config import Config
from hope_jax.models.lm import LM
from hope_jax.models.registry import model_spec
from hope_jax.optim import build_optimizer, labelled_groups


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def dummy_tokens(cfg: Config, batch: int = 1):
    return jnp.zeros((batch, cfg.data.seq_len), jnp.int32)


def abstract_variables(cfg: Config, model: nn.Module | None = None):
    """Boxed (nn.Partitioned) variables as ShapeDtypeStructs: shapes + logical axes, no memory.

    Traced once per (model, sequence length, x64 mode) and cached: the optimizer's routing, the
    shardings and the restore / AOT targets all read this one trace (HOPE's init takes seconds
    to trace)."""
    return _abstract_init(model or LM(cfg.model), cfg.data.seq_len, jax.config.jax_enable_x64)


@functools.lru_cache(maxsize=16)
def _abstract_init(model: nn.Module, seq_len: int, x64: bool):
    del x64  # part of the key: the traced dtypes follow it
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))


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
    """The outer optimizer, wrapped as the model registry says (HOPE: CMS levels with the `outer`
    signal update every P steps, SPEC §7.0)."""
    axes = logical_axes(cfg, model)
    tx = build_optimizer(cfg.optim, cfg.train.steps, labelled_groups(axes))
    wrap = model_spec(cfg.model).wrap_optimizer
    return tx if wrap is None else wrap(tx, axes, cfg.model)


def _init_fn(cfg: Config, model: nn.Module, tx: optax.GradientTransformation):
    def init():
        params = nn.unbox(model.init(jax.random.key(cfg.train.seed), dummy_tokens(cfg))["params"])
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

    return init


def _abstract(cfg: Config, model: nn.Module, tx: optax.GradientTransformation) -> TrainState:
    """The state's ShapeDtypeStructs from the cached abstract init (the model is not traced
    again; only `tx.init` is)."""
    boxed = abstract_variables(cfg, model)["params"]
    # the boxes' values directly: nn.unbox would add sharding constraints under a mesh context
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.value.shape, p.value.dtype)
                          if isinstance(p, nn.Partitioned) else p, boxed,
                          is_leaf=lambda p: isinstance(p, nn.Partitioned))
    shapes = [(a.shape, a.dtype) for a in jax.tree.leaves(params)]
    treedef = jax.tree.structure(params)

    def opt_init():  # no array inputs: inside a mesh context they would need a NamedSharding
        return tx.init(jax.tree.unflatten(treedef, [jnp.zeros(s, d) for s, d in shapes]))

    return TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, jax.eval_shape(opt_init))


def state_shardings(cfg: Config, model: nn.Module, tx: optax.GradientTransformation,
                    mesh: Mesh) -> TrainState:
    """NamedSharding of every state leaf: params by `sharding.RULES`, the rest derived from them.

    Also runs `sharding.check_replication` with `cfg.mesh.replicated_params`.
    """
    abstract = _abstract(cfg, model, tx)
    params_sh = sharding.param_shardings(logical_axes(cfg, model), abstract.params, mesh)
    out = sharding.derive_shardings(abstract, abstract.params, params_sh, mesh)
    sharding.check_replication(abstract, out, mesh, cfg.mesh.replicated_params)
    return out


def abstract_state(cfg: Config, model: nn.Module, tx: optax.GradientTransformation,
                   shardings: TrainState | None = None) -> TrainState:
    """ShapeDtypeStructs of the state (carrying `shardings` if given): restore / AOT targets."""
    abstract = _abstract(cfg, model, tx)
    if shardings is None:
        return abstract
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def init_state(cfg: Config, model: nn.Module, tx: optax.GradientTransformation,
               mesh: Mesh | None = None) -> TrainState:
    """Fresh state from `cfg.train.seed`, built in one jitted call.

    Args:
      cfg, model, tx: the run's config, model and optimizer.
      mesh: if given, every leaf is created directly in its sharding (see `state_shardings`);
        random draws do not depend on the mesh (`jax_threefry_partitionable`).
    """
    init = _init_fn(cfg, model, tx)
    if mesh is None:
        return jax.jit(init)()
    return jax.jit(init, out_shardings=state_shardings(cfg, model, tx, mesh))()
