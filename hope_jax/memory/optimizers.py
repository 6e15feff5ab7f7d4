"""Inner optimizers as pure functions, and the hook through which deep optimizers plug in.

An inner optimizer is an `InnerOptimizer(name, init, step, transition, chunk, gates)`:

  init(params) -> opt_state                     opt_state: tuple of pytrees (may be empty)
  step(params, opt_state, grads, ctx) -> (params, opt_state)
                                                ONE token's update. `grads` = dL~/dW at the
                                                token's reference weights (chunk start, SPEC A1),
                                                `ctx` = TokenContext(k, v, gates) of that token.
  transition(gates) -> (A_NN, b_N)   optional   declares that the rule is the elementwise affine
                                                recurrence z_t = A_t z_{t-1} + b_t g_t over the
                                                stacked state z = (params, *opt_state) (n slots).
  chunk(arch, objective, init_params, params, opt_state, k_CK, target_CV, gates_C, reset_C,
        valid_C) -> (params, opt_state)      optional   the rule's OWN closed-form update of one
                                                chunk (end state, gradients at the chunk start);
                                                must equal scanning `step` (tested per rule).
  gates: the gate names the rule reads (the layers create exactly these; lr, momentum, retain).

`step` is the definition (used by the token-by-token references and by the engine's general
path, which scans it over the tokens of a chunk). The engine (`scan.chunk_update`) uses, in this
order: the rule's own `chunk` (DGD: the unit-triangular form of `dgd_chunk`); the affine closed
form of its `transition` (suffix products of A by `lax.associative_scan` and ONE weighted
vector-Jacobian product per state slot, never materialising per-token gradients, SPEC §4.4,
§7.1); else the general path: per-token gradients at the chunk-start weights, then `lax.scan` of
`step` inside the chunk (also used for read-after-write). A user's rule, DMGD (Eq. 50) or
Newton-Schulz (Eqs. 42-44) with only `step` get the general path. Nothing is chosen by a rule's
name: a rule runs exactly as written.

Registries: `register_inner_optimizer(name, factory)` makes `factory(momentum, decay)` available
to every layer by config name (`model.inner.optimizer`); the inner
objectives have theirs in `rules.register_objective`.
A deep optimizer with learned parameters (e.g. DMGD's momentum MLP) closes over them when it is
built inside a module.

Shape legend: C chunk tokens, N state slots (1 + len(opt_state)).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hope_jax.memory.dgd_chunk import dgd_chunk

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
GATES = ("lr", "momentum", "retain")  # the gates a layer can produce (rules.squash_gates)


@dataclasses.dataclass(frozen=True)
class InnerOptimizer:
    """A pluggable inner optimizer (see the module docstring for the hook contract)."""

    name: str
    init: Callable[[Params], OptState]
    step: StepFn
    transition: TransitionFn | None = None
    chunk: Callable | None = None
    gates: tuple[str, ...] = ("lr",)

    def __post_init__(self):
        unknown = set(self.gates) - set(GATES)
        if unknown or "lr" not in self.gates:
            raise ValueError(f"inner optimizer {self.name!r} reads gates {self.gates}: they must "
                             f"include 'lr' and be among {GATES}")


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
    return InnerOptimizer(name, init, step, transition, None, _gates(momentum, decay))


def _gates(momentum: bool, decay: bool) -> tuple[str, ...]:
    return ("lr",) + (("momentum",) if momentum else ()) + (("retain",) if decay else ())


# --------------------------------------------------------------------------------------------
# DGD (SPEC Eqs. 56-57, 88, A6, A9): a matrix decay on the input-side weight, own chunk form.
# --------------------------------------------------------------------------------------------

DGD_COEFS = ("normalized", "printed")


def dgd_coefficient(lr, k, coef: str = "normalized"):
    """DGD's step size from the lr gate eta (SPEC A9, revised).

    "normalized": eta' = eta / (1 + eta ||k||^2), the Sherman-Morrison coefficient of DGD's own
      derivation (Eqs. 56-57; = eta / (1 + eta) for the unit keys the layers use). With the l2
      inner loss a linear memory is scaled along k by alpha - 2 eta' in [alpha - 1, alpha]:
      contractive for every gate value (eta <= 1, alpha in [0, 1]).
    "printed": eta' = eta, Eq. 88 as printed: counts k k^T twice with the l2 loss (explicit
      factor + the gradient's own (Mk - v)k^T), so along k the factor is alpha - 2 eta,
      expansive for eta > (1 + alpha) / 2.
    """
    if coef == "normalized":
        return lr / (1.0 + lr * jnp.sum(k * k, -1))
    if coef == "printed":
        return lr
    raise ValueError(f"unknown DGD coefficient {coef!r}; known: {DGD_COEFS}")


def dgd_input_step(w0, k, lr, keep):
    """(keep I - lr k k^T) W_0 in the row-vector convention (SPEC A9, A11): the input-side decay."""
    return keep * w0 - lr * jnp.outer(k, k @ w0)


def dgd(momentum: bool = True, decay: bool = True, coef: str = "normalized") -> InnerOptimizer:
    """Delta gradient descent with retention and optional Titans momentum (SPEC A6, A9).

    Row-vector form of W <- W (alpha I - eta' k k^T) - eta' grad (column convention, Eq. 88):
    the first (key-side) weight W_0 [K, F] becomes (alpha I - eta' k k^T) W_0 + S_0; other
    weights alpha W + S, with S_t = beta S_{t-1} - eta' g_t (S = -eta' g without momentum),
    eta' = `dgd_coefficient(eta, k, coef)`. Gates: lr = eta_t, retain = alpha_t (1 without
    `decay`), momentum = beta_t. Closed-form chunk: `dgd_chunk` (unit-triangular form).
    The same function serves the `optim` level (`optim.delta.dgd_rule`): one rule, two levels.
    """
    dgd_coefficient(1.0, jnp.ones(1), coef)  # validate the name now

    def init(params):
        return (_tmap(jnp.zeros_like, params),) if momentum else ()

    def step(params, opt_state, grads, ctx):
        lr = dgd_coefficient(ctx.gates["lr"], ctx.k, coef)
        keep = _gate(ctx.gates, "retain", 1.0)
        if momentum:
            m = ctx.gates["momentum"]
            s = _tmap(lambda s_, g: m * s_ - lr * g, opt_state[0], grads)
            new_state = (s,)
        else:
            s = _tmap(lambda g: -lr * g, grads)
            new_state = ()
        w0 = dgd_input_step(params[0], ctx.k, lr, keep) + s[0]
        rest = tuple(keep * w + s_ for w, s_ in zip(params[1:], s[1:]))
        return (w0,) + rest, new_state

    def chunk(arch, objective, init_w, w, s, k_CK, tgt_CV, gates_C, reset_C, valid_C):
        gates_C = {**gates_C, "lr": dgd_coefficient(gates_C["lr"], k_CK, coef)}
        return dgd_chunk(momentum, arch, objective, init_w, w, s, k_CK, tgt_CV, gates_C,
                         reset_C, valid_C)

    name = "dgd" + ("+momentum" if momentum else "") + ("" if decay else "-decay") + (
        "" if coef == "normalized" else f"[{coef}]")
    return InnerOptimizer(name, init, step, None, chunk, _gates(momentum, decay))


# --------------------------------------------------------------------------------------------
# Registry: config name -> factory(momentum, decay) -> InnerOptimizer
# --------------------------------------------------------------------------------------------

INNER_OPTIMIZERS: dict[str, Callable[[bool, bool], InnerOptimizer]] = {
    "titans": titans, "gd": titans, "dgd": dgd,
    "dgd_printed": functools.partial(dgd, coef="printed"),
}


def register_inner_optimizer(name: str, factory: Callable[[bool, bool], InnerOptimizer]) -> None:
    """Makes `factory(momentum, decay)` the inner optimizer named `name` in every config."""
    if not callable(factory):
        raise TypeError(f"inner optimizer {name!r}: the factory must be callable")
    INNER_OPTIMIZERS[name] = factory


def make_inner_optimizer(name: str, momentum: bool, decay: bool) -> InnerOptimizer:
    """The optimizer a config names (`model.inner.optimizer`)."""
    if name not in INNER_OPTIMIZERS:
        raise ValueError(f"unknown inner optimizer {name!r}; known: {sorted(INNER_OPTIMIZERS)} "
                         "(add yours with register_inner_optimizer)")
    opt = INNER_OPTIMIZERS[name](momentum, decay)
    if not isinstance(opt, InnerOptimizer):
        raise TypeError(f"inner optimizer {name!r}: the factory returned {type(opt).__name__}, "
                        "not an InnerOptimizer")
    return opt


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
