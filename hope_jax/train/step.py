"""The pure train and eval steps, and their jitted, sharded forms.

`loss_sums` returns (sum of token NLL, number of target tokens) so that gradient accumulation over
micro-batches is exactly the large-batch gradient: the total is divided once by the global count.

Sharding: the step itself names no mesh axis. `jit_train_step` jits it with the state's
shardings as outputs (donated in place) and traces it under `sharding.mesh_context`, so that
`sharding.constrain` calls in models and here take effect. Micro-batches are taken with a stride
(micro-batch a = rows a, a + A, a + 2A, ...), so each device keeps feeding its own rows to every
micro-batch and the batch sharding survives the split without communication.

Shape legend: B batch, T time, V vocabulary, A accumulation micro-batches.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hope_jax import sharding
from hope_jax.train.state import TrainState


def loss_sums(model: nn.Module, params, batch):
    """(sum NLL over real targets, count of real targets), fp32."""
    logits_BTV = model.apply(
        {"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"]
    ).astype(jnp.float32)
    nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])
    mask_BT = batch["mask"].astype(jnp.float32)
    return jnp.sum(nll_BT * mask_BT), jnp.sum(mask_BT)


def _split_micro(batch, accum: int):
    """[B, ...] -> [A, B/A, ...], micro-batch a holding rows a, a + A, ... (keeps B's sharding)."""

    def split(x):
        x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
        return sharding.constrain(x, (None, "batch") + (None,) * (x.ndim - 2))

    return jax.tree.map(split, batch)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, grad_accum: int = 1,
                    param_shardings: Any = None):
    """Returns `train_step(state, batch) -> (state, metrics)`; jit it with the state donated.

    Args:
      model, tx: the model and optimizer.
      grad_accum: micro-batches per step (`lax.scan`; their gradients are summed).
      param_shardings: optional NamedSharding pytree of the params; gradients (and the
        accumulation buffer) are constrained to it, i.e. reduce-scattered under FSDP.
    """

    def shard_like_params(g):
        if param_shardings is None:
            return g
        return jax.lax.with_sharding_constraint(g, param_shardings)

    def grad_of(params, micro, total):
        def f(p):
            s, _ = loss_sums(model, p, micro)
            return s / total

        loss, g = jax.value_and_grad(f)(params)
        return loss, shard_like_params(g)

    def train_step(state: TrainState, batch):
        total = jnp.maximum(jnp.sum(batch["mask"].astype(jnp.float32)), 1.0)
        if grad_accum == 1:
            loss, grads = grad_of(state.params, batch, total)
        else:
            def body(carry, micro):
                loss_acc, g_acc = carry
                loss, g = grad_of(state.params, micro, total)
                return (loss_acc + loss, shard_like_params(jax.tree.map(jnp.add, g_acc, g))), None

            zeros = shard_like_params(jax.tree.map(jnp.zeros_like, state.params))
            (loss, grads), _ = jax.lax.scan(body, (jnp.zeros(()), zeros),
                                            _split_micro(batch, grad_accum))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "tokens": total}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def make_eval_step(model: nn.Module):
    """Returns `eval_step(params, batch) -> (nll_sum, count)`."""

    def eval_step(params, batch):
        return loss_sums(model, params, batch)

    return eval_step


class MeshFunction:
    """A jitted function that is traced and run under `sharding.mesh_context(mesh)`.

    Attributes:
      jitted: the `jax.jit` object (for `.lower(...)` ahead-of-time compilation).
      mesh: the mesh.
    """

    def __init__(self, jitted, mesh: Mesh, place_arg: int | None = None):
        self.jitted, self.mesh, self._place_arg = jitted, mesh, place_arg

    def __call__(self, *args):
        if self._place_arg is not None:  # host (or single-device) batch -> global batch
            args = list(args)
            args[self._place_arg] = sharding.place_batch(
                jax.device_get(args[self._place_arg]), self.mesh)
        with sharding.mesh_context(self.mesh):
            return self.jitted(*args)

    def lower(self, *args):
        with sharding.mesh_context(self.mesh):
            return self.jitted.lower(*args)


def jit_train_step(model: nn.Module, tx: optax.GradientTransformation, grad_accum: int,
                   mesh: Mesh, state_sh: TrainState) -> MeshFunction:
    """The train step jitted for `mesh`: state donated and kept in `state_sh`, metrics replicated.

    Call it with a state in `state_sh` and a batch from `sharding.place_batch`.
    """
    fn = make_train_step(model, tx, grad_accum, state_sh.params)
    jitted = jax.jit(fn, out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
    return MeshFunction(jitted, mesh)


def jit_eval_step(model: nn.Module, mesh: Mesh) -> MeshFunction:
    """`eval_step(params, batch)` for `mesh`; the batch (this process's rows) is placed first."""
    jitted = jax.jit(make_eval_step(model), out_shardings=sharding.replicated(mesh))
    return MeshFunction(jitted, mesh, place_arg=1)
