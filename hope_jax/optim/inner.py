"""The inner level: a deep-optimizer `Rule` as an inner optimizer of the fast-weight engine.

`hope_jax.memory.optimizers.InnerOptimizer` is the engine's hook: `step(params, opt_state, grads,
ctx) -> (params, opt_state)` per token, with `ctx.gates` the token's data-dependent gates (lr,
momentum, retain, ...) and `ctx.k` its key. `as_inner_optimizer` plugs any rule of this package
in, so the exact function that updates model weights once per optimizer step (via
`as_transformation`) also updates a memory once per token (SPEC §1: every level is one gradient
step of some memory on its own objective; only the frequency and the context differ).

Per token:   hp = {**hparams, **ctx.gates, "key": ctx.k}
             u, s = rule.step(grads, s, hp, params)
             W <- retain * W + u      (Titans forget gate, SPEC §4.6; retain = 1 if absent)

Rules that read `retain` themselves (DGD, whose retention sits inside its step) get W <- W + u.
The engine's general (per-token scan) path runs these rules (no `chunk`, no `transition`). The
wrapped optimizer reads the gates named in `gates` (default: lr only); register it by name with
`hope_jax.memory.optimizers.register_inner_optimizer` to use it from a config.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from hope_jax.memory.optimizers import InnerOptimizer
from hope_jax.optim.rule import Rule

__all__ = ["as_inner_optimizer"]


def as_inner_optimizer(rule: Rule, hparams: Mapping[str, float] | None = None,
                       name: str | None = None,
                       gates: tuple[str, ...] = ("lr",)) -> InnerOptimizer:
    """Wraps `rule` for `hope_jax.memory` (the `InnerOptimizer` hook).

    Args:
      rule: any rule of `hope_jax.optim` (momentum, delta momentum, DMGD, Muon, M3, DGD, ...).
      hparams: fixed hyperparameters; the token's gates override them per step.
      name: optimizer name (default `inner:<rule.name>`).
      gates: the gates the layers must produce for it (among lr, momentum, retain).

    Returns:
      An `InnerOptimizer` whose state is the 1-tuple `(rule_state,)`.
    """
    fixed = dict(hparams or {})
    own_retain = "retain" in rule.defaults

    def init(params):
        return (rule.init(params),)

    def step(params, opt_state, grads, ctx):
        hp = {**fixed, **ctx.gates, "key": ctx.k}
        updates, state = rule.step(grads, opt_state[0], hp, params)
        keep = 1.0 if own_retain else hp.get("retain", 1.0)
        new = jax.tree.map(lambda w, u: keep * w + u, params, updates)
        return new, (state,)

    return InnerOptimizer(name or f"inner:{rule.name}", init, step, None, None, gates)
