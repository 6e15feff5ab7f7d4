"""Which dims of a parameter form "the matrix", and the Newton-Schulz orthogonalization.

Matrix rules (Newton-Schulz / Muon, delta-rule momentum, M3) act on 2-D matrices. Parameters of
scanned layers carry a leading layers axis ([L, in, out]); attention kernels are [.., D, H, K] or
[.., H, K, D]. A `MatrixDims` (= `optax.contrib.MuonDimensionNumbers`, so the same tree can be
handed to `optax.contrib.muon`) names the reduction (input) and output axes; every other axis is a
batch axis and the rule is applied to each slice independently (per layer, SPEC A10 "NS only on
2-D matrices").

Row-vector convention (SPEC A11): y = x @ W, W is [in, out], so a gradient is x^T delta.

Shape legend: B batch of matrices (layers, ...), M rows (in), N cols (out).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from optax.contrib import MuonDimensionNumbers as MatrixDims

__all__ = ["NS_COEFFS", "MatrixDims", "batched_view", "default_dims", "matrix_map", "newton_schulz",
           "orthogonalize", "resolve_dims", "width_scale"]

# Muon quintic coefficients (Jordan et al. 2024), SPEC A10: (a, b, c), T = 5 steps.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def default_dims(x) -> MatrixDims | None:
    """Trailing two axes are (in, out), leading axes batch; vectors/scalars have no matrix."""
    return MatrixDims(x.ndim - 2, x.ndim - 1) if x.ndim >= 2 else None


def _axes(x, dims: MatrixDims) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    red = dims.reduction_axis
    out = dims.output_axis
    red = tuple(a % x.ndim for a in ((red,) if isinstance(red, int) else red))
    out = tuple(a % x.ndim for a in ((out,) if isinstance(out, int) else out))
    if set(red) & set(out):
        raise ValueError(f"reduction axes {red} and output axes {out} overlap for shape {x.shape}")
    batch = tuple(a for a in range(x.ndim) if a not in red + out)
    return batch, red, out


def matrix_map(fn: Callable, dims: MatrixDims | None, *xs):
    """Applies `fn(*mats_MN) -> mat_MN` to every matrix slice of same-shaped arrays `xs`.

    Args:
      fn: function of 2-D [M, N] arrays (same number of arrays as `xs`) returning one [M, N].
      dims: which axes are (in, out); None treats the whole array as one row [1, size]
        (vectors routed to a matrix rule).
      *xs: arrays of identical shape.

    Returns:
      fn's result for every slice, in the layout of xs[0].
    """
    views = [batched_view(x, dims) for x in xs]
    y = jax.vmap(fn)(*[v[0] for v in views])
    return views[0][1](y)


def batched_view(x, dims: MatrixDims | None):
    """(x as [B, M, N], inverse) for the matrix slices of x (`matrix_map`'s layout).

    Returns:
      x_BMN and a function mapping any [B, M, N] array back to x's layout.
    """
    if dims is None:
        return x.reshape(1, 1, -1), lambda y: y.reshape(x.shape)
    batch, red, out = _axes(x, dims)
    perm = batch + red + out
    inv = tuple(sorted(range(x.ndim), key=lambda i: perm[i]))
    size = lambda axes: math.prod(x.shape[a] for a in axes)
    permuted = tuple(x.shape[a] for a in perm)
    x3 = x.transpose(perm).reshape(size(batch), size(red), size(out))
    return x3, lambda y: y.reshape(permuted).transpose(inv)


def width_scale(x, dims: MatrixDims | None) -> float:
    """Muon's shape factor sqrt(max(1, fan_out / fan_in)) (optax.contrib.muon default)."""
    if dims is None:
        return 1.0
    _, red, out = _axes(x, dims)
    fan_in = math.prod(x.shape[a] for a in red)
    fan_out = math.prod(x.shape[a] for a in out)
    return math.sqrt(max(1.0, fan_out / fan_in))


def newton_schulz(x_MN, steps: int = 5, coeffs=NS_COEFFS, eps: float = 1e-8):
    """Quintic Newton-Schulz iteration towards the polar factor U V^T of x (SPEC Eqs. 42-44).

    Eq. 43-44 read NS as gradient descent on ||O^T O - I||_F^2 started at the (normalized)
    gradient; the quintic coefficients overshoot on purpose so that 5 steps push every singular
    value into roughly [0.7, 1.2] (not exactly 1), which is what Muon uses.

    Args:
      x_MN: 2-D array.
      steps: number of iterations T.
      coeffs: (a, b, c) of X <- a X + (b A + c A^2) X, A = X X^T.
      eps: added to the Frobenius norm before normalizing (zero input gives zero output).

    Returns:
      Array of x's shape and dtype.
    """
    a, b, c = coeffs
    x = x_MN.astype(jnp.float32)
    transposed = x.shape[0] > x.shape[1]
    if transposed:  # iterate on the short side: A is min(M, N)^2
        x = x.T
    x = x / (jnp.linalg.norm(x) + eps)
    for _ in range(steps):
        a_mm = x @ x.T
        x = a * x + (b * a_mm + c * a_mm @ a_mm) @ x
    if transposed:
        x = x.T
    return x.astype(x_MN.dtype)


def orthogonalize(x, dims: MatrixDims | None = None, steps: int = 5):
    """Newton-Schulz on every matrix slice of x (per layer for stacked params)."""
    dims = default_dims(x) if dims is None else dims
    if dims is None:
        raise ValueError(f"orthogonalize needs a matrix, got shape {x.shape}")
    return matrix_map(lambda m: newton_schulz(m, steps), dims, x)


def resolve_dims(dims, tree):
    """Normalizes a `dims` argument against a (possibly optax-masked) tree of arrays.

    Args:
      dims: None (trailing two axes of every leaf), a pytree of `MatrixDims`/None with the tree's
        structure, or a callable tree -> such a pytree.
      tree: the grads/params the rule is called with.

    Returns:
      A pytree with `tree`'s structure whose leaf positions hold `MatrixDims` or None.
    """
    if callable(dims):
        dims = dims(tree)
    if dims is None:
        return jax.tree.map(default_dims, tree)
    return dims


def map_with_dims(fn, dims_tree, tree, *rest):
    """jax.tree.map(fn(x, d, *r)) where `d` is the `MatrixDims` (or None) of leaf x."""
    return jax.tree.map(lambda x, d, *r: fn(x, d, *r), tree, dims_tree, *rest)

