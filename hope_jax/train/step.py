"""The pure train and eval steps.

`loss_sums` returns (sum of token NLL, number of target tokens) so that gradient accumulation over
micro-batches is exactly the large-batch gradient: the total is divided once by the global count.

Shape legend: B batch, T time, V vocabulary, A accumulation micro-batches.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

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
    return jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, grad_accum: int = 1):
    """Returns `train_step(state, batch) -> (state, metrics)`; jit it with the state donated."""

    def grad_of(params, micro, total):
        def f(p):
            s, _ = loss_sums(model, p, micro)
            return s / total

        return jax.value_and_grad(f)(params)

    def train_step(state: TrainState, batch):
        total = jnp.maximum(jnp.sum(batch["mask"].astype(jnp.float32)), 1.0)
        if grad_accum == 1:
            loss, grads = grad_of(state.params, batch, total)
        else:
            def body(carry, micro):
                loss_acc, g_acc = carry
                loss, g = grad_of(state.params, micro, total)
                return (loss_acc + loss, jax.tree.map(jnp.add, g_acc, g)), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
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
