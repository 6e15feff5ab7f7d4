"""Inner optimizers as pure functions, and the hook through which deep optimizers plug in.

An inner optimizer is an `InnerOptimizer(name, init, step, transition)`:

  init(params) -> opt_state                     opt_state: tuple of pytrees (may be empty)
  step(params, opt_state, grads, ctx) -> (params, opt_state)
                                                ONE token's update. `grads` = dL~/dW at the
                                                token's reference weights (chunk start, SPEC A1),
                                                `ctx` = TokenContext(k, v, gates) of that token.
  transition(gates) -> (A_NN, b_N)   optional   declares that the rule is the elementwise affine
                                                recurrence z_t = A_t z_{t-1} + b_t g_t over the
                                                stacked state z = (params, *opt_state) (n slots).

`step` is the definition (used by the token-by-token reference and by the engine's general path,
which scans it over the tokens of a chunk). When `transition` is given, the engine uses the
closed form instead: suffix products of A by `lax.associative_scan` and ONE weighted vector-Jacobian
product per state slot, never materialising per-token gradients (SPEC §4.4, §7.1). Rules whose
decay is a matrix (DGD, SPEC Eqs. 56-57/88, A9) or nonlinear (DMGD Eq. 50, Newton-Schulz Eq. 42-44)
leave `transition=None` and get the general path: per-token gradients at the chunk-start weights in
one vmapped call, then `lax.scan` of `step` inside the chunk (also used for read-after-write).
A deep optimizer with learned parameters (e.g. DMGD's momentum MLP) closes over them when it is
built inside a module.

Shape legend: C chunk tokens, N state slots (1 + len(opt_state)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Params = Any
OptState = tuple


class TokenContext(NamedTuple):
    """What a per-token inner-optimizer step may read besides the gradient.

    Attributes:
      k: the token's key (input of the memory's first layer), [K].
      v: the token's value (target), [V].
      gates: dict of scalar gates, e.g. lr / momentum / retain (see rules.squash_gates).
    """

    k: jax.Array
    v: jax.Array
    gates: dict


StepFn = Callable[[Params, OptState, Params, TokenContext], tuple[Params, OptState]]
TransitionFn = Callable[[dict], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class InnerOptimizer:
    """A pluggable inner optimizer (see the module docstring for the hook contract)."""

    name: str
    init: Callable[[Params], OptState]
    step: StepFn
    transition: TransitionFn | None = None


def _tmap(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


def _gate(gates: dict, name: str, default: float):
    g = gates.get(name)
    return jnp.asarray(default, jnp.float32) if g is None else g


# --------------------------------------------------------------------------------------------
# Titans family: GD, momentum, forget gate (Titans Eqs. 13-14, SPEC §4.6)
# --------------------------------------------------------------------------------------------


def titans(momentum: bool = True, decay: bool = True) -> InnerOptimizer:
    """GD with optional momentum and retention (forget) gate.

    With momentum:  S_t = eta_t S_{t-1} - theta_t g_t ;  M_t = (1 - alpha_t) M_{t-1} + S_t.
    Without:        M_t = (1 - alpha_t) M_{t-1} - theta_t g_t.
    Gates: lr = theta_t, momentum = eta_t, retain = 1 - alpha_t (1 when `decay` is off).
    """

    def init(params):
        return (_tmap(jnp.zeros_like, params),) if momentum else ()

    def step(params, opt_state, grads, ctx):
        lr = ctx.gates["lr"]
        keep = _gate(ctx.gates, "retain", 1.0) if decay else 1.0
        if momentum:
            m = ctx.gates["momentum"]
            s = _tmap(lambda s_, g: m * s_ - lr * g, opt_state[0], grads)
            return _tmap(lambda w, s_: keep * w + s_, params, s), (s,)
        return _tmap(lambda w, g: keep * w - lr * g, params, grads), ()

    def transition(gates):
        lr = gates["lr"]
        keep = _gate(gates, "retain", 1.0) if decay else jnp.ones_like(lr)
        keep = jnp.broadcast_to(keep, lr.shape)
        if momentum:  # z = (M, S): M_t = d M + m S - lr g ; S_t = m S - lr g
            m = gates["momentum"]
            zero = jnp.zeros_like(lr)
            a = jnp.stack([jnp.stack([keep, m], -1), jnp.stack([zero, m], -1)], -2)
            return a, jnp.stack([-lr, -lr], -1)
        return keep[..., None, None], -lr[..., None]

    name = "gd" + ("+momentum" if momentum else "") + ("+decay" if decay else "")
    return InnerOptimizer(name, init, step, transition)


# --------------------------------------------------------------------------------------------
# DGD (SPEC Eqs. 56-57, 88, A6, A9): a matrix decay on the input-side weight -> general path.
# --------------------------------------------------------------------------------------------


def dgd(momentum: bool = True) -> InnerOptimizer:
    """Delta gradient descent with retention and optional Titans momentum (SPEC A6, A9).

    Row-vector form of W <- W (alpha I - eta k k^T) - eta grad (column convention, Eq. 88):
    the first (key-side) weight W_0 [K, F] becomes (alpha I - eta k k^T) W_0 + S_0; other
    weights alpha W + S, with S_t = beta S_{t-1} - eta g_t (S = -eta g without momentum).
    Gates: lr = eta_t (keep <= 1, A9), retain = alpha_t, momentum = beta_t.
    This is the reference example of the deep-optimizer hook (no `transition`).
    """

    def init(params):
        return (_tmap(jnp.zeros_like, params),) if momentum else ()

    def step(params, opt_state, grads, ctx):
        lr, keep = ctx.gates["lr"], _gate(ctx.gates, "retain", 1.0)
        if momentum:
            m = ctx.gates["momentum"]
            s = _tmap(lambda s_, g: m * s_ - lr * g, opt_state[0], grads)
            new_state = (s,)
        else:
            s = _tmap(lambda g: -lr * g, grads)
            new_state = ()
        k = ctx.k
        w0 = params[0]
        w0 = keep * w0 - lr * jnp.outer(k, k @ w0) + s[0]  # (alpha I - eta k k^T) W_0 + S_0
        rest = tuple(keep * w + s_ for w, s_ in zip(params[1:], s[1:]))
        return (w0,) + rest, new_state

    return InnerOptimizer("dgd" + ("+momentum" if momentum else ""), init, step, None)


INNER_OPTIMIZERS: dict[str, Callable[..., InnerOptimizer]] = {"titans": titans, "dgd": dgd}


def make_inner_optimizer(name: str, momentum: bool, decay: bool) -> InnerOptimizer:
    """The optimizer named by `MemoryConfig.inner_opt` (DGD always has a retention gate)."""
    if name == "titans":
        return titans(momentum, decay)
    if name == "dgd":
        return dgd(momentum)
    raise ValueError(f"unknown inner optimizer {name!r}; known: {sorted(INNER_OPTIMIZERS)}")


# --------------------------------------------------------------------------------------------
# Closed-form helper for affine recurrences z_t = A_t z_{t-1} + b_t g_t inside a chunk.
# --------------------------------------------------------------------------------------------


def suffix_products(a_CNN: jax.Array) -> tuple[jax.Array, jax.Array]:
    """P_i = A_{C-1} ... A_{i+1} for every i (P_{C-1} = I), and the full product A_{C-1}...A_0.

    One reverse `lax.associative_scan` over the chunk: O(C N^3) scalar work, log-depth.
    """
    q_CNN = jax.lax.associative_scan(lambda later, earlier: later @ earlier, a_CNN, reverse=True)
    eye = jnp.broadcast_to(jnp.eye(a_CNN.shape[-1], dtype=a_CNN.dtype), a_CNN.shape[1:])
    p_CNN = jnp.concatenate([q_CNN[1:], eye[None]], axis=0)
    return p_CNN, q_CNN[0]
