"""Shampoo-style Kronecker preconditioner as a memory (SPEC Eqs. 38-41), for precond_momentum.

SPEC Eqs. 38-41 read a preconditioner P as a memory that learns the map from gradients to
whitened gradients by gradient steps on its own objective. Shampoo's memories are two Kronecker
factors per matrix gradient G [M, N] (row convention, per layer for stacked params):

    L <- b2 L + (1 - b2) G G^T          (one GD step on ||L - G G^T||_F^2: an EMA)
    R <- b2 R + (1 - b2) G^T G
    P(G) = L^{-1/4} G R^{-1/4}          (roots by eigh, refreshed every `every` steps)

For a stationary G = U S V^T this is U V^T (Muon is Shampoo without accumulation). The read-out is
grafted to the diagonal (Adam) preconditioner's Frobenius norm per matrix, so the lr has Adam's
scale, and leaves without matrix dims use the diagonal preconditioner alone (SOAP/Distributed
Shampoo practice). Root damping: eigenvalues + `root_eps` * the largest one.
Cost: O(M^3 + N^3) per refresh, O(M^2 N + M N^2) per step; meant for the tiny/medium models here.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim.matrices import batched_view, resolve_dims
from hope_jax.optim.momentum import DiagState, diag_init, diag_precondition

__all__ = ["ShampooState", "shampoo_preconditioner"]


class ShampooState(NamedTuple):
    """count; diagonal memory (grafting, vectors); factors L, R and their cached -1/4 roots
    (per leaf [B, M, M] / [B, N, N]; empty arrays for leaves without matrix dims)."""

    count: jax.Array
    diag: DiagState
    left: object
    right: object
    left_root: object
    right_root: object


def _inv_root4(a_BMM, root_eps: float):
    lam, vec = jnp.linalg.eigh(a_BMM)
    lam = jnp.maximum(lam, 0.0)
    lam = lam + root_eps * jnp.max(lam, axis=-1, keepdims=True) + 1e-30
    return (vec * lam[..., None, :] ** -0.25) @ jnp.swapaxes(vec, -1, -2)


def shampoo_preconditioner(dims=None, every: int = 10, root_eps: float = 1e-6):
    """(init, apply) of the Shampoo preconditioner memory for `precond_momentum_rule`.

    Args:
      dims: None (trailing two axes), pytree of `MatrixDims`/None, or callable tree -> pytree.
      every: steps between root refreshes (step 1 always refreshes).
      root_eps: relative damping of the factors' eigenvalues.

    Returns:
      init(params) -> ShampooState and apply(grads, state, hp) -> (P(grads), state) reading
      hp["b2"] (factor and diagonal EMA) and hp["eps"].
    """

    def init(params):
        d = resolve_dims(dims, params)

        def factors(x, dm):
            if dm is None:
                return (jnp.zeros((0,), x.dtype),) * 2
            x3, _ = batched_view(x, dm)
            b, m, n = x3.shape
            return jnp.zeros((b, m, m), x.dtype), jnp.zeros((b, n, n), x.dtype)

        fac = jax.tree.map(factors, params, d)
        left = jax.tree.map(lambda x, f: f[0], params, fac)
        right = jax.tree.map(lambda x, f: f[1], params, fac)
        return ShampooState(jnp.zeros([], jnp.int32), diag_init(params), left, right, left, right)

    def apply(grads, state: ShampooState, hp):
        b2 = hp["b2"]
        d = resolve_dims(dims, grads)
        adam, diag = diag_precondition(grads, state.diag, b2, hp["eps"])
        count = optax.safe_increment(state.count)

        def ema(g, dm, lf, rf):
            if dm is None:
                return lf, rf
            g3, _ = batched_view(g, dm)
            gt = jnp.swapaxes(g3, -1, -2)
            return b2 * lf + (1 - b2) * g3 @ gt, b2 * rf + (1 - b2) * gt @ g3

        new = jax.tree.map(lambda g, dm, lf, rf: ema(g, dm, lf, rf), grads, d, state.left,
                           state.right)
        left = jax.tree.map(lambda g, f: f[0], grads, new)
        right = jax.tree.map(lambda g, f: f[1], grads, new)

        def roots(_):
            r = lambda a: a if a.ndim < 3 else _inv_root4(a, root_eps)
            return jax.tree.map(r, left), jax.tree.map(r, right)

        left_root, right_root = jax.lax.cond(
            (count - 1) % every == 0, roots, lambda _: (state.left_root, state.right_root), None)

        def read(g, dm, a, lr_, rr_):
            if dm is None:
                return a
            g3, back = batched_view(g, dm)
            a3, _ = batched_view(a, dm)
            s = lr_ @ g3 @ rr_
            norm = lambda x: jnp.sqrt(jnp.sum(x * x, axis=(-2, -1), keepdims=True))
            return back(s * (norm(a3) / (norm(s) + 1e-30)))

        pg = jax.tree.map(lambda g, dm, a, l_, r_: read(g, dm, a, l_, r_), grads, d, adam,
                          left_root, right_root)
        return pg, ShampooState(count, diag, left, right, left_root, right_root)

    return init, apply
