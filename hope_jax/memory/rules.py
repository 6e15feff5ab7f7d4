"""Inner-loop rules: fast-weight memory architectures, inner objectives and data-dependent gates.

Everything here is a pure function over a *fast-weight pytree* for ONE memory (one sequence, one
head); the engine (`hope_jax.memory.scan`) vmaps it over batch and heads. Row-vector convention
(SPEC A11): a layer maps x_K -> x_K @ W_KF, so gradients are x^T delta outer products.

Shape legend: C tokens of a chunk, K key dim, V value dim, F memory hidden width.

Fast-weight pytrees are tuples of layer matrices `(W_0, ..., W_{L-1})` where `W_0` always consumes
the key (so input-side rules such as DGD, SPEC A9, know which leaf to precondition).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Params = tuple[jax.Array, ...]
Objective = Callable[[jax.Array, jax.Array], jax.Array]

_ACTS = {"gelu": jax.nn.gelu, "silu": jax.nn.silu, "relu": jax.nn.relu}


# --------------------------------------------------------------------------------------------
# Memory architectures (SPEC §4.6 "memory = MLP with L_M >= 1 layers", Eq. 89 residual form)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryArch:
    """A fast-weight memory M(W; x): its parameter shapes and its forward map.

    Attributes:
      kind: "linear" (M(x) = x W, SPEC Eqs. 14-18) or "mlp" (deep memory, SPEC §4.6).
      dim_in, dim_out: key and value widths (K, V).
      depth: number of layers (1 for linear).
      hidden: hidden width F of the MLP.
      activation: nonlinearity between MLP layers.
      residual: M(x) = x + MLP(x) (SPEC Eq. 89; needs K == V).
      out_norm: M(x) = x + RMSNorm(MLP(x)) (parameter-free, over V): the output scale no longer
        grows with the weights, so GD on the inner loss cannot run away (lucidrains' and TTT's
        LayerNorm-residual memory, SPEC §4.6 notes). MLP only. The branch is then invariant to
        the scale of the last layer, so the retention gate does not act through it (PAPER.md D2).
      out_gain: M(x) = x + g * RMSNorm(MLP(x)) with g [1, V] one more fast weight (the LAST
        leaf), trained by the inner loss and decayed by the retention gate like every other
        weight: the norm bounds the branch by |g|, and retention shrinks it again. Needs out_norm.
      grad_clip: if > 0, every token's inner gradient is scaled to global norm <= grad_clip
        (over all leaves; ||h^T d||_F = ||h|| ||d|| per layer, so it is a per-token factor).
    """

    kind: str
    dim_in: int
    dim_out: int
    depth: int = 2
    hidden: int = 0
    activation: str = "gelu"
    residual: bool = True
    out_norm: bool = False
    out_gain: bool = False
    grad_clip: float = 0.0

    @property
    def n_layers(self) -> int:
        """Layer matrices of the map (the gain vector, when there is one, follows them)."""
        return 1 if self.kind == "linear" else self.depth

    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Shapes of the layer matrices (W_0 consumes the key)."""
        if self.kind == "linear":
            return ((self.dim_in, self.dim_out),)
        dims = [self.dim_in] + [self.hidden] * (self.depth - 1) + [self.dim_out]
        gain = ((1, self.dim_out),) if self.out_gain else ()
        return tuple((a, b) for a, b in zip(dims[:-1], dims[1:])) + gain

    def init(self, key: jax.Array, dtype=jnp.float32) -> Params:
        """Initial fast weights (the outer model learns them: meta-learned init, SPEC §3.3 (d)).

        The linear memory starts at 0 (empty memory, as linear attention).
        Without `out_norm`, MLP layers use std fan_in^-1/2 (an L2-normalized key, ||k|| = 1,
        gives a hidden vector of norm ~1, so the inner loss has O(1) curvature per token) and
        the last layer is small so that the residual memory starts near the identity (A15).
        With `out_norm`, the output is scale-free and the curvature of the last layer is
        ~1 / std^2: its std is 1, and the first layer's std is 1 so that unit keys give O(1)
        pre-activations (the nonlinearity is used); inner lrs ~0.01-1 are then stable.
        """
        if self.kind == "linear":
            return (jnp.zeros(self.shapes()[0], dtype),)
        keys = jax.random.split(key, self.depth)
        out = []
        last = self.depth - 1
        for i, (k, (a, b)) in enumerate(zip(keys, self.shapes()[:self.depth])):
            if self.out_norm:
                std = 1.0 if i in (0, last) else a**-0.5
            else:
                std = 0.02 if i == last else a**-0.5
            out.append(std * jax.random.normal(k, (a, b), dtype))
        if self.out_gain:  # g = 1: the branch starts as the parameter-free normalised one
            out.append(jnp.ones((1, self.dim_out), dtype))
        return tuple(out)

    def apply(self, params: Params, x_CK: jax.Array) -> jax.Array:
        """M(W; x) for any leading dims of x (row vectors)."""
        if self.kind == "linear":
            return x_CK @ params[0]
        act = _ACTS[self.activation]
        h = x_CK
        for i, w in enumerate(params[:self.depth]):
            h = h @ w
            if i < self.depth - 1:
                h = act(h)
        if self.out_norm:
            h = h * _rms_inv(h)
        if self.out_gain:
            h = h * _like(params[-1], h)
        return x_CK + h if self.residual else h

    def backprop(self, params: Params, x_CK: jax.Array, target_CV: jax.Array,
                 objective: Objective) -> tuple[list, list]:
        """Per-token layer inputs and output errors of the inner loss at `params`.

        grad_{W_l} objective(M(W; x_c), target_c) = hs[l][c]^T ds[l][c] (an outer product per
        token and layer): everything the chunk-parallel forms need, from one forward and one
        backward over the chunk (SPEC §4.4, §7.1).

        Returns:
          (hs, ds): lists over layers of [C, in_l] and [C, out_l].
        """
        act = _ACTS[self.activation]
        n = self.n_layers
        hs, us, h = [x_CK], [], x_CK
        for i, w in enumerate(params[:n]):
            u = h @ w
            us.append(u)
            if i < n - 1:
                h = act(u)
                hs.append(h)
        mlp = self.kind == "mlp"
        r = _rms_inv(u) if (mlp and self.out_norm) else None
        y = u if r is None else u * r
        out = y * _like(params[-1], y) if self.out_gain else y
        pred = x_CK + out if (mlp and self.residual) else out
        delta = jax.vmap(jax.grad(objective))(pred, target_CV)  # dL/dpred per token
        gain = []
        if self.out_gain:  # out = y g: dL/dg = delta y (an outer product with h = 1)
            gain = [(jnp.ones_like(x_CK[:, :1]), delta * y)]
            delta = delta * _like(params[-1], delta)
        if r is not None:  # back through y = u r, r = (mean(u^2) + eps)^-1/2
            delta = r * (delta - y * jnp.mean(delta * y, -1, keepdims=True))
        ds = [None] * n
        for i in reversed(range(n)):
            ds[i] = delta
            if i:
                slope = jax.jvp(act, (us[i - 1],), (jnp.ones_like(us[i - 1]),))[1]
                delta = (delta @ params[i].T) * slope
        hs, ds = hs + [g[0] for g in gain], ds + [g[1] for g in gain]
        if self.grad_clip:
            scale = clip_scale(sum(jnp.sum(h * h, -1) * jnp.sum(d * d, -1)
                                   for h, d in zip(hs, ds)), self.grad_clip)
            ds = [d * scale[:, None] for d in ds]
        return hs, ds

    @staticmethod
    def contract(hs: list, ds: list, coef_NC: jax.Array) -> Params:
        """sum_c coef[j, c] hs[l][c]^T ds[l][c] per layer: N weighted gradient sums [N, in, out]."""
        return tuple(jnp.einsum("ck,ncf->nkf", h, coef_NC[:, :, None] * d[None])
                     for h, d in zip(hs, ds))

    def weighted_grads(self, params: Params, x_CK: jax.Array, target_CV: jax.Array,
                       objective: Objective, coef_NC: jax.Array) -> Params:
        """sum_c coef[j, c] * grad_W objective(M(W; x_c), target_c), for every row j at once.

        One forward, one backward shared by all rows j, then per layer one contraction over
        the chunk. Equal to `vmap(vjp(loss_C))(coef)` (tested), without the N backward passes.
        """
        return self.contract(*self.backprop(params, x_CK, target_CV, objective), coef_NC)

    def apply_evolving(self, x_CK: jax.Array, bases: list, base_coef_CM: jax.Array, hs: list,
                       ds: list, coef_CC: jax.Array) -> jax.Array:
        """y_t = M(W_t; x_t) for per-token weights given in dual form (TTT-style, read-after-write):

          W_t = sum_m base_coef[t, m] bases[m] + sum_s coef[t, s] hs[s]^T ds[s]   (per layer)

        so that x_t W_t = sum_m base_coef[t, m] (x_t bases[m]) + sum_s coef[t, s] (x_t . hs[s])
        ds[s]: C x C "attention" per layer instead of C weight copies.
        """
        act = _ACTS[self.activation]
        n = self.n_layers
        h = x_CK
        for i in range(n):
            u = sum(base_coef_CM[:, m, None] * (h @ base[i]) for m, base in enumerate(bases))
            u = u + (coef_CC * (h @ hs[i].T)) @ ds[i]
            if i < n - 1:
                h = act(u)
        if self.kind == "linear":
            return u
        if self.out_norm:
            u = u * _rms_inv(u)
        if self.out_gain:  # the gain's "input" is 1: its dual form is coef @ ds
            g = sum(base_coef_CM[:, m, None] * base[-1] for m, base in enumerate(bases))
            u = u * (g + coef_CC @ ds[-1])
        return x_CK + u if self.residual else u


def _rms_inv(u: jax.Array, eps: float = 1e-6) -> jax.Array:
    return jax.lax.rsqrt(jnp.mean(u * u, -1, keepdims=True) + eps)


def _like(gain_1V: jax.Array, x: jax.Array) -> jax.Array:
    """The [1, V] gain with as many axes as `x` (broadcasts without rank promotion)."""
    return gain_1V.reshape((1,) * (x.ndim - 1) + gain_1V.shape[-1:])


def clip_scale(sq_norm: jax.Array, max_norm: float) -> jax.Array:
    """The factor min(1, max_norm / norm) that clips a gradient of squared norm `sq_norm`."""
    return max_norm / jnp.maximum(jnp.sqrt(sq_norm + 1e-30), max_norm)


def make_arch(kind: str, dim_in: int, dim_out: int, depth: int = 2, hidden_mult: float = 4.0,
              activation: str = "gelu", residual: bool = True, out_norm: bool = False,
              out_gain: bool = False, grad_clip: float = 0.0) -> MemoryArch:
    """Builds a `MemoryArch`; `hidden_mult` scales the key width to the MLP hidden width."""
    if out_gain and not out_norm:
        raise ValueError("out_gain scales the normalised branch: it needs out_norm")
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0, got {grad_clip}")
    if kind == "mlp" and residual and dim_in != dim_out:
        raise ValueError(f"residual MLP memory needs dim_in == dim_out, got {dim_in}, {dim_out}")
    if kind == "mlp" and depth < 2:
        raise ValueError(f"MLP memory needs depth >= 2, got {depth}")
    return MemoryArch(kind, dim_in, dim_out, depth if kind == "mlp" else 1,
                      max(1, int(round(hidden_mult * dim_in))), activation, residual,
                      out_norm and kind == "mlp", out_gain and kind == "mlp",
                      float(grad_clip))


# --------------------------------------------------------------------------------------------
# Inner objectives L~(M(k); v) (SPEC Def. 1, Eq. 6). Signature: (pred_V, target_V) -> scalar.
# --------------------------------------------------------------------------------------------


def dot_product(pred_V: jax.Array, target_V: jax.Array) -> jax.Array:
    """Hebbian objective L = -<M(k), v> (SPEC Eqs. 14-18, 64): GD gives W += eta k^T v."""
    return -jnp.sum(pred_V * target_V)


def l2(pred_V: jax.Array, target_V: jax.Array) -> jax.Array:
    """Regression objective L = 1/2 ||M(k) - v||^2 (Titans Eq. 12, SPEC §4.6 / Eq. 93).

    The 1/2 makes GD on a linear memory exactly the delta rule of SPEC Eq. 65 with lr eta; the
    paper's ||.||^2 without 1/2 is the same rule with the lr doubled (absorbed by lr_max).
    """
    d = pred_V - target_V
    return 0.5 * jnp.sum(d * d)


OBJECTIVES: dict[str, Objective] = {"dot": dot_product, "l2": l2}


def register_objective(name: str, objective: Objective) -> None:
    """Makes `objective(pred_V, target_V) -> scalar` the inner objective named `name` in every
    config (`model.inner.objective`)."""
    if not callable(objective):
        raise TypeError(f"inner objective {name!r} must be callable (pred_V, target_V) -> scalar")
    OBJECTIVES[name] = objective


def get_objective(name: str) -> Objective:
    """The inner objective a config names."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown inner objective {name!r}; known: {sorted(OBJECTIVES)} "
                         "(add yours with register_objective)")
    return OBJECTIVES[name]


def token_loss(arch: MemoryArch, objective: Objective) -> Callable:
    """(params, k_K, v_V) -> scalar inner loss of one token, ready for jax.grad / vmap / jit."""

    def loss(params: Params, k_K: jax.Array, v_V: jax.Array) -> jax.Array:
        return objective(arch.apply(params, k_K), v_V)

    return loss


def token_grad(arch: MemoryArch, objective: Objective) -> Callable:
    """(params, k_K, v_V) -> one token's inner gradient by autodiff, clipped to
    `arch.grad_clip` (the definition `MemoryArch.backprop` is tested against)."""
    grad = jax.grad(token_loss(arch, objective))
    if not arch.grad_clip:
        return grad

    def clipped(params, k_K, v_V):
        g = grad(params, k_K, v_V)
        scale = clip_scale(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(g)),
                           arch.grad_clip)
        return jax.tree_util.tree_map(lambda x: scale * x, g)

    return clipped


# --------------------------------------------------------------------------------------------
# Data-dependent gates (SPEC §4.6, A7): logits from the input -> valid ranges, in fp32.
# --------------------------------------------------------------------------------------------

def squash_gates(logits: dict[str, jax.Array], lr_max: float) -> dict[str, jax.Array]:
    """Maps gate logits to the rates the inner optimizers read (all fp32).

    Titans Eqs. 13-14 names in brackets: lr = theta_t in (0, lr_max) ("momentary surprise" step),
    momentum = eta_t in (0, 1) ("past surprise" decay), retain = 1 - alpha_t in (0, 1) with
    alpha_t the forget gate (SPEC §4.6). Missing logits give missing gates.
    """
    f32 = lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32))  # >= fp32 (fp64 stays)
    out = {}
    if "lr" in logits:
        out["lr"] = lr_max * jax.nn.sigmoid(f32(logits["lr"]))
    if "momentum" in logits:
        out["momentum"] = jax.nn.sigmoid(f32(logits["momentum"]))
    if "retain" in logits:  # logit of the forget gate alpha; retain = sigmoid(-logit) = 1 - alpha
        out["retain"] = jax.nn.sigmoid(-f32(logits["retain"]))
    return out


def gate_bias(name: str, init_value: float, lr_max: float = 1.0) -> float:
    """The logit bias that makes a fresh gate output `init_value` (inverse of `squash_gates`)."""
    p = init_value / lr_max if name == "lr" else init_value
    if name == "retain":  # the logit is that of the forget gate alpha = 1 - retain
        p = 1.0 - p
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p) - math.log1p(-p)


def chunk_mean(x_BTH: jax.Array, chunk: int, axis: int = 1) -> jax.Array:
    """Per-chunk gate granularity: replaces each value by the mean over its chunk along `axis`.

    Causal only when tokens never read their own chunk's writes (read-before-write, SPEC A1);
    the config check enforces that. T must be a multiple of `chunk`.
    """
    x = jnp.moveaxis(x_BTH, axis, -1)
    t = x.shape[-1]
    m = x.reshape(x.shape[:-1] + (t // chunk, chunk)).mean(-1, keepdims=True)
    m = jnp.broadcast_to(m, x.shape[:-1] + (t // chunk, chunk)).reshape(x.shape)
    return jnp.moveaxis(m, -1, axis)
