"""Delta-rule (L2-objective) momentum and Delta Gradient Descent (SPEC §2, Eqs. 48-49, 56-57).

Delta momentum. Momentum with the L2 objective min_m ||m g^T - P||^2 instead of the dot product
(SPEC Eqs. 48-49) takes one gradient step whose gradient depends on m itself:

    m_{i+1} = m_i (alpha I - g^T g) - eta P(g_i)          (column convention, as printed)

so the memory *forgets* what it stored along the directions the new gradient occupies (a delta
rule on the gradient stream) instead of only adding to them. For a matrix parameter in our
row-vector convention (W is [in, out], y = x W, G = x^T delta) the gradient-dependent factor acts on
the input side, exactly where DGD's (I - eta x x^T) acts:

    m_{i+1} = (alpha I - beta G_hat G_hat^T) m_i - eta (1 - tau) P(G_i),
    G_hat = G / ||G||_F,   W_{i+1} = W_i + m_{i+1}.

G_hat G_hat^T is PSD with eigenvalues sigma_k^2 / sum_j sigma_j^2 in [0, 1] (for a rank-1 gradient
x^T delta it is the projector x x^T / ||x||^2), so for 0 <= beta <= alpha the factor has spectrum in
[alpha - beta, alpha]: contractive and sign-preserving whatever the gradient scale. The
normalization is ours (the raw g^T g of Eq. 48 explodes or vanishes with the gradient scale); it
is the same L2-normalized-key assumption DGD makes (SPEC A9). beta = 0 recovers momentum exactly.
Batch axes (layers) are handled per slice. Vectors (no matrix dims) are treated as one row.

DGD (SPEC Eqs. 56-57, App. C): one exact proximal step on 1/2 ||x W - u||^2 + 1/(2 eta)||W - W_t||^2
with u = -dL/dy. Sherman-Morrison gives, for any key x (row convention),

    W_{t+1} = (I - eta' x x^T) W_t - eta' x^T dL/dy,   eta' = eta / (1 + eta ||x||^2),

which is Eq. 57 (eta' = eta / (1 + eta)) for ||x|| = 1. DGD needs the layer input x, so it is an
inner-loop rule (the key is a per-step hyperparameter); the outer optimizer, which sees only
gradients, uses delta momentum instead. Retention follows SPEC A9 (Eq. 88's form):
(alpha I - eta' x x^T) W_t - eta' x^T dL/dy, the proximal step plus weight decay (1 - alpha) W_t.
`dgd_rule` and the inner `memory.optimizers.dgd` are one definition (`dgd_input_step`,
`dgd_coefficient`); Eq. 88's printed coefficient eta is the "printed" switch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hope_jax.memory.optimizers import dgd_coefficient, dgd_input_step
from hope_jax.optim.matrices import map_with_dims, matrix_map, resolve_dims
from hope_jax.optim.momentum import PrecondState, make_preconditioner
from hope_jax.optim.rule import Rule, as_transformation

__all__ = ["delta_decay", "delta_momentum", "delta_momentum_rule", "dgd_rule"]


def delta_decay(m_MN, g_MN, alpha, beta, normalize: bool = True, eps: float = 1e-30):
    """(alpha I - beta G_hat G_hat^T) m for one [in, out] matrix, G_hat = G / ||G||_F.

    normalize=False: the raw factor (alpha I - beta G G^T) m (SPEC Eqs. 48-49 with beta = 1).
    """
    if normalize:
        sq = jnp.sum(g_MN * g_MN)
        beta = beta * jnp.where(sq > eps, 1.0 / jnp.maximum(sq, eps), 0.0)
    rows, cols = g_MN.shape
    if rows <= cols:  # (G G^T) m: rows^2 cols + rows^2 cols
        proj = (g_MN @ g_MN.T) @ m_MN
    else:  # G (G^T m): rows cols^2 twice
        proj = g_MN @ (g_MN.T @ m_MN)
    return alpha * m_MN - beta * proj


DELTA_FORMS = ("reinterpreted", "paper")


def delta_momentum_rule(dims=None, precond: str = "none", every: int = 10,
                        form: str = "reinterpreted") -> Rule:
    """Delta-rule momentum (SPEC Eqs. 48-49).

    Args:
      dims: None (trailing two axes), a pytree of `MatrixDims`/None, or a callable tree -> pytree.
      precond: "none" (P = I), "diag" (Adam-style whitening of the written value) or "shampoo"
        (Kronecker factors, `hope_jax.optim.shampoo`; `every` = root refresh period).
      form: "reinterpreted" (default): m <- (alpha I - beta G_hat G_hat^T) m - eta (1 - tau) P(G),
        G_hat = G / ||G||_F (module docstring). "paper": Eqs. 48-49 as printed (row convention),
        m <- (alpha I - G G^T) m - eta (1 - tau) P(G): for P = I one unit GD step on
        1/2 ||G^T m + eta I||_F^2 with retention alpha; `delta` is not used. Contractive only while
        ||G||_2^2 <= 1 + alpha (global-norm clipping at 1 guarantees it).

    Hyperparameters: `lr` (eta), `momentum` (alpha), `delta` (beta, the strength of the
    gradient-dependent decay; 0 = momentum), `dampening` (tau), `b2`, `eps` (for "diag").
    """
    if form not in DELTA_FORMS:
        raise ValueError(f"delta_momentum form={form!r}: expected one of {DELTA_FORMS}")
    normalize = form == "reinterpreted"
    p_init, p_apply = make_preconditioner(precond, dims, every)

    def init(params):
        return PrecondState(jax.tree.map(jnp.zeros_like, params), p_init(params))

    def update(grads, state, hp, params=None):
        del params
        lr, alpha, tau = hp["lr"], hp["momentum"], hp["dampening"]
        beta = hp["delta"] if normalize else 1.0  # Eq. 48: the raw G G^T, coefficient 1
        values, ps = p_apply(grads, state.precond, hp)
        d = resolve_dims(dims, grads)

        def leaf(g, dm, m, v):
            decayed = matrix_map(lambda mm, gg: delta_decay(mm, gg, alpha, beta, normalize),
                                 dm, m, g)
            return decayed - lr * (1.0 - tau) * v

        m = map_with_dims(leaf, d, grads, state.m, values)
        return m, PrecondState(m, ps)

    defaults = {"momentum": 0.9, "delta": 0.5, "dampening": 0.0, "b2": 0.95, "eps": 1e-8}
    suffix = "" if normalize else ",paper"
    return Rule(f"delta_momentum[{precond}{suffix}]", init, update, defaults)


def delta_momentum(learning_rate, momentum=0.9, delta=0.5, dampening=0.0, b2=0.95, eps=1e-8,
                   dims=None, precond: str = "none", every: int = 10,
                   form: str = "reinterpreted") -> optax.GradientTransformation:
    """optax factory for `delta_momentum_rule` (static: dims, precond, every, form; list them in
    inject_hyperparams' `static_args`)."""
    return as_transformation(delta_momentum_rule(dims, precond, every, form), lr=learning_rate,
                             momentum=momentum, delta=delta, dampening=dampening, b2=b2, eps=eps)


def dgd_rule(coef: str = "normalized") -> Rule:
    """Delta Gradient Descent (SPEC Eqs. 56-57, A9) for a linear weight W [in, out]: the SAME
    definition as the inner optimizer `hope_jax.memory.optimizers.dgd` (one rule, two levels).

    W_{t+1} = (alpha I - eta' x x^T) W_t - eta' dL/dW with eta' = `dgd_coefficient(eta, x, coef)`
    (default eta / (1 + eta ||x||^2), Sherman-Morrison; "printed": Eq. 88's eta). For alpha = 1
    this is the exact proximal step of the module docstring for any x.
    `update(grads, state, hp, params)` needs the current weights and, in `hp["key"]`, the layer
    input x [in] of this step (for an MLP memory apply it to the input-side layer, SPEC A9).
    Hyperparameters: `lr` (eta), `retain` (alpha, default 1), `key`.
    Returns W_{t+1} - W_t.
    """
    dgd_coefficient(1.0, jnp.ones(1), coef)  # validate the name now

    def init(params):
        del params
        return ()

    def update(grads, state, hp, params=None):
        if params is None:
            raise ValueError("dgd_rule needs params (the current fast weights)")
        x, alpha = hp["key"], hp["retain"]
        eta = dgd_coefficient(hp["lr"], x, coef)
        leaf = lambda g, w: dgd_input_step(w, x, eta, alpha) - eta * g - w
        return jax.tree.map(leaf, grads, params), state

    return Rule("dgd", init, update, {"retain": 1.0})
