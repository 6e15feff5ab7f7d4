"""One update rule, two levels: a deep-optimizer rule as a pure function, and its optax wrapper.

Nested Learning (SPEC §1-2) reads an optimizer as an associative memory whose state is updated by
one gradient step on an inner objective. The same rule serves two levels:

* outer (slow) level: `as_transformation(rule, lr=schedule, ...)` is an
  `optax.GradientTransformation` that updates model parameters once per optimizer step;
* inner (fast) level: `rule.update(grads, state, hparams)` is called once per token or chunk inside
  a `lax.scan` over a fast-weight pytree (the memories of `hope_jax.memory`), with data-dependent
  per-step hyperparameters (eta_t, alpha_t gates).

Contract of a `Rule`:

    state = rule.init(params)                              # pytree, same leaves as params
    updates, state = rule.update(grads, state, hparams)    # params_new = params + updates
    updates, state = rule.update(grads, state, hparams, params)   # rules that read W (DGD)

`hparams` is a mapping name -> scalar array (possibly traced: a per-step gate). Updates already
include the learning rate and the sign (W <- W + u, SPEC Eq. 33 convention), so the inner engine
never needs to know which rule it runs. Names follow `hope_jax.memory.rules.squash_gates`:
`lr` (eta), `momentum` (alpha), `retain`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["Rule", "RuleState", "as_transformation", "decoupled_weight_decay", "resolve"]

HParams = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A deep-optimizer update rule as a pair of pure functions.

    Attributes:
      name: short identifier (for error messages and docs).
      init: params -> state (a pytree; never depends on hyperparameter values).
      update: (grads, state, hparams, params=None) -> (updates, state). Pure and jittable; every
        hyperparameter may be a traced scalar, so the rule can run per token with gates.
      defaults: default hyperparameters, merged under the caller's.
    """

    name: str
    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]
    defaults: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def step(self, grads, state, hparams: HParams | None = None, params=None):
        """`update` with defaults filled in: the call the inner engine makes per token."""
        hp = {**self.defaults, **(hparams or {})}
        return self.update(grads, state, hp, params)


class RuleState(NamedTuple):
    """Optax state of a rule: the step count (for schedules) and the rule's own state."""

    count: jax.Array
    inner: Any


def resolve(value, count):
    """A hyperparameter at step `count`: schedules (callables) are evaluated, numbers kept."""
    return value(count) if callable(value) else value


def as_transformation(rule: Rule, **hparams) -> optax.GradientTransformation:
    """Wraps a rule as an optax transformation (the outer, per-optimizer-step level).

    Args:
      rule: the rule.
      **hparams: numbers, arrays or schedules `count -> value` (e.g. the lr schedule). Works under
        `optax.inject_hyperparams`, which passes the current numbers in as arrays.

    Returns:
      An `optax.GradientTransformation` whose updates are the rule's updates.
    """

    def init_fn(params):
        return RuleState(jnp.zeros([], jnp.int32), rule.init(params))

    def update_fn(updates, state, params=None):
        hp = {k: resolve(v, state.count) for k, v in hparams.items()}
        out, inner = rule.step(updates, state.inner, hp, params)
        return out, RuleState(optax.safe_increment(state.count), inner)

    return optax.GradientTransformation(init_fn, update_fn)


class _CountState(NamedTuple):
    count: jax.Array


def decoupled_weight_decay(learning_rate, weight_decay: float, mask=None):
    """u <- u - lr_t * wd * W on masked leaves (AdamW's decoupled decay, Loshchilov & Hutter).

    Chained after a rule whose updates already include the lr, this gives exactly the decay of
    `optax.adamw(lr, weight_decay=wd, mask=mask)`.

    Args:
      learning_rate: number or schedule.
      weight_decay: decay coefficient.
      mask: pytree of bools (or callable params -> pytree) selecting decayed leaves; None = all.
    """

    def init_fn(params):
        del params
        return _CountState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if weight_decay == 0.0:
            return updates, state
        if params is None:
            raise ValueError("decoupled_weight_decay needs params in update()")
        lr = resolve(learning_rate, state.count)
        decayed = jax.tree.map(lambda u, p: u - lr * weight_decay * p, updates, params)
        if mask is not None:
            m = mask(params) if callable(mask) else mask
            decayed = jax.tree.map(lambda d, u, keep: d if keep else u, decayed, updates, m)
        return decayed, _CountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)
