"""M3, Multi-scale Momentum Muon (SPEC §2.1, Eq. 75, Algorithm 1; ambiguity A10).

A Continuum Memory System (SPEC §3, independent/head-wise variant Eq. 74) applied to the
optimizer's momentum: a fast momentum M1 updated every step, a slow momentum M2 updated once every
`period` steps from the sum of that chunk's gradients, an Adam-style second moment V, and Muon's
Newton-Schulz read-out of both momenta, aggregated by a weighted sum (alpha on the slow term).

`variant="paper"` is Algorithm 1 literally (A10):

    at each chunk start k f + 1 (k >= 1):  M2 <- M2 + b3 * sum_{chunk k-1} g ;  O2 <- NS_T(M2)
    every step:  M1 <- M1 + b1 g ;  V <- V + b2 g^2 ;  O1 <- NS_T(M1)
                 theta <- theta - eta (O1 + alpha O2) / (sqrt(V) + eps)

(accumulating, undecayed memories; V grows like t, so the step decays like AdaGrad's).

`variant="ema"` (A10's m3_ema): EMA memories like Adam / AdEMAMix,

    M1 <- b1 M1 + (1 - b1) g ; V <- b2 V + (1 - b2) g^2, V_hat = V / (1 - b2^t) ;
    at chunk starts M2 <- b3 M2 + (1 - b3) mean_{chunk} g ;  same read-out with V_hat.

O2 is recomputed only at chunk boundaries (`lax.cond`), so the slow level costs one NS per
`period` steps. NS is applied per matrix slice (per layer for stacked params); vectors and
embeddings are routed to AdamW by the builder (SPEC A10: "only NS on 2-D params").
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim.matrices import map_with_dims, matrix_map, newton_schulz, resolve_dims
from hope_jax.optim.rule import Rule, as_transformation

__all__ = ["M3State", "m3", "m3_rule"]


class M3State(NamedTuple):
    """count: steps taken; m1/v: fast momentum and second moment; m2/o2: slow momentum and its
    NS read-out (held fixed within a chunk); gsum: gradients summed over the current chunk."""

    count: jax.Array
    m1: object
    v: object
    m2: object
    o2: object
    gsum: object


def m3_rule(dims=None, period: int = 10, variant: str = "paper", ns_steps: int = 5) -> Rule:
    """M3 as a pure rule.

    Args:
      dims: None (trailing two axes), pytree of `MatrixDims`, or callable tree -> pytree. Leaves
        without matrix dims use the identity instead of NS.
      period: slow-memory chunk length f (optimizer steps).
      variant: "paper" (Algorithm 1 literally) or "ema".
      ns_steps: Newton-Schulz iterations T.

    Hyperparameters: `lr` (eta), `b1`, `b2`, `b3`, `alpha` (slow weight), `eps`.
    """
    if variant not in ("paper", "ema"):
        raise ValueError(f"variant={variant!r}: expected 'paper' or 'ema'")
    if period < 1:
        raise ValueError(f"period={period} must be >= 1")

    def ns(x, dm):
        return x if dm is None else matrix_map(lambda m: newton_schulz(m, ns_steps), dm, x)

    def init(params):
        z = lambda: jax.tree.map(jnp.zeros_like, params)
        return M3State(jnp.zeros([], jnp.int32), z(), z(), z(), z(), z())

    def update(grads, state, hp, params=None):
        del params
        lr, b1, b2, b3, alpha, eps = (hp[k] for k in ("lr", "b1", "b2", "b3", "alpha", "eps"))
        d = resolve_dims(dims, grads)
        t = optax.safe_increment(state.count)  # 1-based step index
        boundary = (t > 1) & ((t - 1) % period == 0)

        def slow(operand):
            m2, gsum = operand
            if variant == "paper":
                m2 = jax.tree.map(lambda m, s: m + b3 * s, m2, gsum)
            else:
                m2 = jax.tree.map(lambda m, s: b3 * m + (1.0 - b3) * s / period, m2, gsum)
            o2 = map_with_dims(lambda x, dm: ns(x, dm), d, m2)
            return m2, o2, jax.tree.map(jnp.zeros_like, gsum)

        def keep(operand):
            del operand
            return state.m2, state.o2, state.gsum

        m2, o2, gsum = jax.lax.cond(boundary, slow, keep, (state.m2, state.gsum))
        gsum = jax.tree.map(jnp.add, gsum, grads)
        if variant == "paper":
            m1 = jax.tree.map(lambda m, g: m + b1 * g, state.m1, grads)
            v = jax.tree.map(lambda v, g: v + b2 * g * g, state.v, grads)
            vcorr = 1.0
        else:
            m1 = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.m1, grads)
            v = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.v, grads)
            vcorr = 1.0 - b2 ** t.astype(jnp.float32)

        def leaf(m, dm, vv, o_slow):
            return -lr * (ns(m, dm) + alpha * o_slow) / (jnp.sqrt(vv / vcorr) + eps)

        updates = map_with_dims(leaf, d, m1, v, o2)
        return updates, M3State(t, m1, v, m2, o2, gsum)

    defaults = {"b1": 0.9, "b2": 0.95, "b3": 0.9, "alpha": 1.0, "eps": 1e-8}
    return Rule(f"m3[{variant}]", init, update, defaults)


def m3(learning_rate, b1=0.9, b2=0.95, b3=0.9, alpha=1.0, eps=1e-8, dims=None, period: int = 10,
       variant: str = "paper", ns_steps: int = 5) -> optax.GradientTransformation:
    """optax factory for `m3_rule` (static: dims, period, variant, ns_steps)."""
    return as_transformation(m3_rule(dims, period, variant, ns_steps), lr=learning_rate, b1=b1,
                             b2=b2, b3=b3, alpha=alpha, eps=eps)
