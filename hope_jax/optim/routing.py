"""Per-parameter-group routing: which rule updates which leaf, and where its matrix dims are.

`hope_jax.optim.registry.param_groups` labels each param "matrix", "vector" or "embedding".
Matrix optimizers (Muon, M3, delta momentum, ...) update the "matrix" group and hand vectors and
embeddings to AdamW (`OptimConfig.other_params="adamw"`), with weight decay masked exactly as
`registry.decay_mask` says for every group.

A plain string label says nothing about which axes of a 3-D/4-D leaf form the matrix, so:

* `labelled_groups(logical_axes)` returns `ParamGroup` labels (a `str` subclass, so every
  existing use of the labels keeps working) that carry the exact `MatrixDims` read from the
  logical axes: "layers" is a batch axis; a kernel whose first axis is "embed" maps embed -> rest
  (q/k/v: [D, H, K] -> D x HK), one whose last axis is "embed" maps rest -> embed (o: HK x D).
* with plain labels, `infer_dims` guesses from the shape: 2-D is [in, out]; >= 3-D has a leading
  layers axis and the remaining axes are split at the point that makes the matrix most square
  ([L, D, H, K] -> D x HK, [L, H, K, D] -> HK x D), which is right for every kernel of our
  models; a non-scanned 3-D kernel is the one case it gets wrong, hence `labelled_groups`.
"""

from __future__ import annotations

import math

import jax
import optax

from hope_jax.optim.matrices import MatrixDims

__all__ = ["ParamGroup", "dims_for", "infer_dims", "labelled_groups", "route_labels"]


class ParamGroup(str):
    """A group label ("matrix" / "vector" / "embedding") that may carry its `MatrixDims`."""

    dims: MatrixDims | None

    def __new__(cls, name: str, dims: MatrixDims | None = None):
        obj = super().__new__(cls, name)
        obj.dims = dims
        return obj

    def __reduce__(self):
        return (ParamGroup, (str(self), self.dims))


def _axes_dims(axes: tuple) -> MatrixDims | None:
    core = [i for i, a in enumerate(axes) if a != "layers"]
    if len(core) < 2:
        return None
    names = [axes[i] for i in core]
    if names[-1] == "embed" and names[0] != "embed":
        return MatrixDims(tuple(core[:-1]), (core[-1],))
    return MatrixDims((core[0],), tuple(core[1:]))


def labelled_groups(logical_axes):
    """Logical-axes pytree -> pytree of `ParamGroup` (registry.param_groups + matrix dims)."""
    from hope_jax.optim.registry import param_groups

    names = param_groups(logical_axes)
    is_axes = lambda x: isinstance(x, tuple)
    return jax.tree.map(
        lambda axes, name: ParamGroup(name, _axes_dims(axes) if name == "matrix" else None),
        logical_axes, names, is_leaf=is_axes,
    )


def infer_dims(x) -> MatrixDims:
    """Shape-only guess of a matrix leaf's dims (module docstring)."""
    if x.ndim == 2:
        return MatrixDims(0, 1)
    if x.ndim < 2:
        raise ValueError(f"a 'matrix' param needs >= 2 dims, got shape {x.shape}")
    rest = list(range(1, x.ndim))
    best = None
    for cut in range(1, len(rest)):
        m = math.prod(x.shape[a] for a in rest[:cut])
        n = math.prod(x.shape[a] for a in rest[cut:])
        score = abs(math.log(m / n))
        if best is None or score < best[0] - 1e-9:
            best = (score, cut)
    cut = best[1]
    return MatrixDims(tuple(rest[:cut]), tuple(rest[cut:]))


def dims_for(label, x) -> MatrixDims | None:
    """The matrix dims of leaf x with group `label` (None unless label is "matrix")."""
    if label != "matrix":
        return None
    dims = getattr(label, "dims", None)
    return dims if dims is not None else infer_dims(x)


def dims_fn(groups, include=("matrix",), none_for_others: bool = False):
    """Callable tree -> tree of `MatrixDims` for a rule's `dims` argument.

    The tree may be optax-masked (`optax.partition` replaces other groups by `MaskedNode`);
    masked positions stay `MaskedNode`. Groups in `include` other than "matrix" (e.g. embeddings
    under other_params="same") are treated as plain 2-D [in, out]; vectors get None (one row).
    With `none_for_others`, the result has None wherever the label is not "matrix" (the format
    of `optax.contrib.muon`'s `muon_weight_dimension_numbers`).
    """

    def one(label, x):
        if isinstance(x, optax.MaskedNode):
            return x
        if label == "matrix":
            return dims_for(label, x)
        if none_for_others or label not in include or x.ndim < 2:
            return None
        return MatrixDims(x.ndim - 2, x.ndim - 1)

    def fn(tree):
        return jax.tree.map(one, groups, tree,
                            is_leaf=lambda x: isinstance(x, optax.MaskedNode))

    return fn


def route_labels(groups, to_rule: tuple[str, ...]):
    """Group labels -> "rule" / "adamw" partition labels for `optax.partition`."""
    return jax.tree.map(lambda g: "rule" if g in to_rule else "adamw", groups)
