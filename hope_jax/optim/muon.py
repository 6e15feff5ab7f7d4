"""Momentum with a nonlinear (Newton-Schulz) read-out: Muon as a rule (SPEC Eqs. 42-44, 52).

SPEC Eq. 52: W_{i+1} = W_i + sigma(m_{i+1}(u_i)) with the momentum memory of Eq. 33; with m linear
and sigma = NewtonSchulz_T this is Muon (Eq. 42). Eqs. 43-44 read NS itself as an inner
optimization (GD on ||O^T O - I||^2 started at the momentum), so Muon is a three-level system:
gradient -> momentum memory -> orthogonalizing memory.

The outer optimizer `muon` in `hope_jax.optim.builders` is `optax.contrib.muon` with explicit
dimension numbers; this module is what optax lacks: the same update as a pure per-step rule
(usable inside the inner loop with per-token gates) and a public `orthogonalize`.

    trace <- alpha trace + g                      (heavy-ball trace; NS is scale-invariant, so
    u = -eta * s(W) * NS_T(trace or nesterov)     the EMA of optax gives the same direction)

s(W) = sqrt(max(1, fan_out / fan_in)) as in optax.contrib.muon.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim.matrices import (
    map_with_dims,
    matrix_map,
    newton_schulz,
    resolve_dims,
    width_scale,
)
from hope_jax.optim.rule import Rule, as_transformation

__all__ = ["muon_rule", "ns_momentum"]


def muon_rule(dims=None, ns_steps: int = 5, nesterov: bool = False) -> Rule:
    """Momentum + Newton-Schulz output nonlinearity (SPEC Eqs. 42, 52).

    Args:
      dims: None (trailing two axes), pytree of `MatrixDims`, or callable tree -> pytree.
        Leaves without matrix dims (vectors) get the plain momentum direction (sigma = identity).
      ns_steps: Newton-Schulz iterations T (SPEC A10: 5).
      nesterov: orthogonalize alpha * trace + g instead of the trace.

    Hyperparameters: `lr` (eta), `momentum` (alpha).
    """

    def init(params):
        return jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, hp, params=None):
        del params
        lr, alpha = hp["lr"], hp["momentum"]
        trace = jax.tree.map(lambda m, g: alpha * m + g, state, grads)
        d = resolve_dims(dims, grads)

        def leaf(g, dm, t):
            x = alpha * t + g if nesterov else t
            if dm is None:
                return -lr * x
            o = matrix_map(lambda m: newton_schulz(m, ns_steps), dm, x)
            return -lr * width_scale(x, dm) * o

        return map_with_dims(leaf, d, grads, trace), trace

    return Rule("muon", init, update, {"momentum": 0.95})


def ns_momentum(learning_rate, momentum=0.95, dims=None, ns_steps: int = 5,
                nesterov: bool = False) -> optax.GradientTransformation:
    """optax factory for `muon_rule` (static: dims, ns_steps, nesterov)."""
    return as_transformation(muon_rule(dims, ns_steps, nesterov), lr=learning_rate,
                             momentum=momentum)
