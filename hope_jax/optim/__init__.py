"""Outer optimizers (optax GradientTransformations) selected by `config.optim.name`, and the
deep-optimizer rules (SPEC §2) as pure functions shared with the inner loop (`hope_jax.memory`).

    rule = delta_momentum_rule()                       # pure: (grads, state, hparams) -> ...
    updates, state = rule.step(grads, state, {"lr": eta_t, "momentum": alpha_t})
    tx = as_transformation(rule, lr=schedule, momentum=0.9)   # the same rule as optax
"""

from hope_jax.optim import builders as _builders  # noqa: F401  (registers the deep optimizers)
from hope_jax.optim.delta import delta_momentum, delta_momentum_rule, dgd_rule
from hope_jax.optim.dmgd import dmgd, dmgd_rule
from hope_jax.optim.m3 import m3, m3_rule
from hope_jax.optim.matrices import MatrixDims, newton_schulz, orthogonalize
from hope_jax.optim.momentum import (
    momentum_rule,
    precond_momentum,
    precond_momentum_rule,
    sgd_momentum,
)
from hope_jax.optim.muon import muon_rule, ns_momentum
from hope_jax.optim.registry import OPTIMIZERS, build_optimizer
from hope_jax.optim.routing import ParamGroup, labelled_groups
from hope_jax.optim.rule import Rule, as_transformation

__all__ = ["OPTIMIZERS", "MatrixDims", "ParamGroup", "Rule", "as_transformation",
           "build_optimizer", "delta_momentum", "delta_momentum_rule", "dgd_rule", "dmgd",
           "dmgd_rule", "labelled_groups", "m3", "m3_rule", "momentum_rule", "newton_schulz",
           "ns_momentum", "orthogonalize", "precond_momentum", "precond_momentum_rule",
           "sgd_momentum", "muon_rule"]
