"""Momentum as an associative memory of gradients, plain and preconditioned (SPEC §2).

Momentum (SPEC Eqs. 10-13, 33-34): the momentum m is a value-less memory of the gradient stream,
updated by ONE gradient step on the dot-product objective <m, grad> with an L2 retention term:

    m_{t+1} = argmin_m <m, g_t> + 1/(2 eta) ||m - alpha m_t||^2 = alpha m_t - eta g_t,
    W_{t+1} = W_t + m_{t+1}.

alpha = 1 is the undecayed sum (Eq. 10-13); alpha < 1 the heavy-ball momentum (Eq. 33). The EMA
form m <- alpha m + (1 - alpha) g with W <- W - eta m is the same memory with a scaled write
strength: `dampening` = tau writes eta (1 - tau) g, so tau = alpha gives the EMA for constant eta.

Preconditioned momentum (SPEC Eqs. 38-41, 46-47): the memory stores P(g) instead of g,
m_{t+1} = alpha m_t - eta P_t(g_t). P is itself a memory learning the map g -> g / sqrt(E[g^2])
(diagonal, Adam-style second moment, SPEC App. B Eqs. 100-105) or the Kronecker-factored map of
`hope_jax.optim.shampoo` (`precond="shampoo"`).

All functions here are leaf-wise and rank-agnostic (scalars, vectors, stacked matrices).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim.rule import Rule, as_transformation

__all__ = ["DiagState", "diag_precondition", "make_preconditioner", "momentum_rule",
           "precond_momentum",
           "precond_momentum_rule", "sgd_momentum"]


def momentum_rule() -> Rule:
    """Momentum memory (SPEC Eq. 33): m <- alpha m - eta (1 - tau) g; update = m.

    Hyperparameters: `lr` (eta), `momentum` (alpha), `dampening` (tau, default 0 = heavy ball).
    With tau = 0 and constant lr this equals `optax.sgd(lr, momentum=alpha)`.
    """

    def init(params):
        return jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, hp, params=None):
        del params
        lr, alpha, tau = hp["lr"], hp["momentum"], hp["dampening"]
        m = jax.tree.map(lambda m, g: alpha * m - lr * (1.0 - tau) * g, state, grads)
        return m, m

    return Rule("momentum", init, update, {"momentum": 0.9, "dampening": 0.0})


class DiagState(NamedTuple):
    """Diagonal preconditioner memory: count and EMA of squared gradients."""

    count: jax.Array
    nu: object


def diag_init(params) -> DiagState:
    return DiagState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))


def diag_precondition(grads, state: DiagState, b2, eps):
    """P(g) = g / (sqrt(nu_hat) + eps), nu <- b2 nu + (1 - b2) g^2, bias-corrected (Adam's P).

    SPEC Eqs. 38-41 / App. B: P is a memory whose state nu is updated by a gradient step on its
    own L2 objective ||nu - g^2||^2 (an EMA); reading it out whitens each coordinate.
    """
    count = optax.safe_increment(state.count)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, grads)
    corr = 1.0 - b2 ** count.astype(jnp.float32)
    pg = jax.tree.map(lambda g, v: g / (jnp.sqrt(v / corr) + eps), grads, nu)
    return pg, DiagState(count, nu)


class PrecondState(NamedTuple):
    """Momentum memory m and preconditioner memory P."""

    m: object
    precond: object


def make_preconditioner(precond: str, dims=None, every: int = 10):
    """(init, apply) of the preconditioner memory P: "diag", "shampoo" or "none".

    `apply(grads, state, hp) -> (P(grads), state)` reads hp["b2"], hp["eps"]. `dims` and `every`
    (root refresh period) are used by "shampoo" only (`hope_jax.optim.shampoo`).
    """
    if precond == "diag":
        return diag_init, lambda g, s, hp: diag_precondition(g, s, hp["b2"], hp["eps"])
    if precond == "none":
        return (lambda params: ()), (lambda g, s, hp: (g, s))
    if precond == "shampoo":
        from hope_jax.optim.shampoo import shampoo_preconditioner

        return shampoo_preconditioner(dims, every)
    raise ValueError(f"precond={precond!r}: expected 'diag', 'shampoo' or 'none'")


def precond_momentum_rule(precond: str = "diag", dims=None, every: int = 10) -> Rule:
    """Preconditioned momentum (SPEC Eqs. 46-47): m <- alpha m - eta (1 - tau) P(g); update = m.

    Args:
      precond: "diag" (Adam-style second moment), "shampoo" (Kronecker factors per matrix,
        grafted to the diagonal norm), or "none" (P = I: plain momentum).
      dims: matrix dims for "shampoo" (None = trailing two axes; see `matrices.resolve_dims`).
      every: Shampoo root refresh period (steps).

    Hyperparameters: `lr`, `momentum` (alpha), `dampening` (tau), `b2`, `eps`.
    With alpha = 0 and P = diag this is exactly `optax.adam(lr, b1=0, b2=b2, eps=eps)`.
    """
    p_init, p_apply = make_preconditioner(precond, dims, every)

    def init(params):
        return PrecondState(jax.tree.map(jnp.zeros_like, params), p_init(params))

    def update(grads, state, hp, params=None):
        del params
        pg, ps = p_apply(grads, state.precond, hp)
        lr, alpha, tau = hp["lr"], hp["momentum"], hp["dampening"]
        m = jax.tree.map(lambda m, v: alpha * m - lr * (1.0 - tau) * v, state.m, pg)
        return m, PrecondState(m, ps)

    defaults = {"momentum": 0.9, "dampening": 0.0, "b2": 0.95, "eps": 1e-8}
    return Rule(f"precond_momentum[{precond}]", init, update, defaults)


def sgd_momentum(learning_rate, momentum=0.9, dampening=0.0) -> optax.GradientTransformation:
    """optax factory for `momentum_rule` (works with `optax.inject_hyperparams`)."""
    return as_transformation(momentum_rule(), lr=learning_rate, momentum=momentum,
                             dampening=dampening)


def precond_momentum(learning_rate, momentum=0.9, dampening=0.0, b2=0.95, eps=1e-8,
                     precond: str = "diag", dims=None, every: int = 10
                     ) -> optax.GradientTransformation:
    """optax factory for `precond_momentum_rule` (static: precond, dims, every)."""
    return as_transformation(precond_momentum_rule(precond, dims, every), lr=learning_rate,
                             momentum=momentum, dampening=dampening, b2=b2, eps=eps)
