"""Registered deep optimizers (`--config.optim.name=...`), each routed per parameter group.

Every builder has the registry signature `builder(cfg, lr_schedule, groups)`. Matrix optimizers
update the "matrix" group with their rule and hand vectors and embeddings to AdamW (peak lr
`cfg.aux_lr or cfg.lr`, same schedule shape); with `cfg.other_params="same"` the momentum variants
(not the Newton-Schulz ones) update every group with their rule. Weight decay is decoupled
(u -= lr_t * wd * W, as AdamW) and applied exactly where `registry.decay_mask` says.

| name             | rule (module)                           | SPEC               |
|------------------|-----------------------------------------|--------------------|
| sgd_momentum     | momentum memory (`momentum`)            | Eqs. 10-13, 33-34  |
| precond_momentum | preconditioned momentum (`momentum`)    | Eqs. 38-41, 46-47  |
| delta_momentum   | delta-rule momentum (`delta`)           | Eqs. 48-49         |
| dmgd             | deep MLP momentum (`dmgd`)              | Eq. 50             |
| muon             | optax.contrib.muon, explicit dims       | Eqs. 42-44, 52     |
| m3 / m3_paper    | M3, Algorithm 1 literally (`m3`)        | §2.1, Eq. 75, A10  |
| m3_ema           | M3 with EMA memories (`m3`)             | §2.1, A10          |
"""

from __future__ import annotations

import jax
import optax
from optax.contrib import muon as optax_muon

from hope_jax.optim.config import OptimConfig
from hope_jax.optim.delta import delta_momentum
from hope_jax.optim.dmgd import dmgd
from hope_jax.optim.m3 import m3
from hope_jax.optim.momentum import precond_momentum, sgd_momentum
from hope_jax.optim.registry import register_optimizer
from hope_jax.optim.routing import dims_fn, route_labels
from hope_jax.optim.rule import decoupled_weight_decay

__all__ = ["decay_mask_fn", "routed"]

_ALL = ("matrix", "vector", "embedding")


def decay_mask_fn(cfg: OptimConfig, groups, only=_ALL):
    """`registry.decay_mask` as a callable that also accepts optax-masked trees."""
    allowed = {"matrix": True, "embedding": cfg.decay_embeddings, "vector": cfg.decay_norms}

    def one(g, x):
        if isinstance(x, optax.MaskedNode):
            return x
        return bool(allowed[g]) and g in only

    return lambda tree: jax.tree.map(one, groups, tree,
                                     is_leaf=lambda x: isinstance(x, optax.MaskedNode))


def _aux_lr(cfg: OptimConfig, lr: optax.Schedule) -> optax.Schedule:
    ratio = (cfg.aux_lr or cfg.lr) / cfg.lr
    return lr if ratio == 1.0 else (lambda count: lr(count) * ratio)


def _adamw(cfg: OptimConfig, lr: optax.Schedule, groups) -> optax.GradientTransformation:
    return optax.adamw(_aux_lr(cfg, lr), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=decay_mask_fn(cfg, groups))


def routed(cfg: OptimConfig, lr: optax.Schedule, groups, make_rule_tx,
           allow_same: bool = True) -> optax.GradientTransformation:
    """Rule on the matrix group (or all groups), AdamW on the rest, masked decoupled decay.

    Args:
      cfg: optimizer config.
      lr: the rule's lr schedule.
      groups: pytree of group labels (`registry.param_groups` or `routing.labelled_groups`).
      make_rule_tx: dims_fn -> GradientTransformation of the rule (lr already inside).
      allow_same: whether `cfg.other_params="same"` may route vectors/embeddings to the rule.
    """
    to_rule = _ALL if (allow_same and cfg.other_params == "same") else ("matrix",)
    rule_tx = optax.chain(
        make_rule_tx(dims_fn(groups, include=to_rule)),
        decoupled_weight_decay(lr, cfg.weight_decay, decay_mask_fn(cfg, groups)),
    )
    return optax.partition({"rule": rule_tx, "adamw": _adamw(cfg, lr, groups)},
                           route_labels(groups, to_rule))


def _tau(cfg: OptimConfig) -> float:
    """Write strength (1 - tau): EMA form (tau = b1) or heavy ball (tau = 0), SPEC Eq. 33."""
    return cfg.b1 if cfg.momentum_form == "ema" else 0.0


@register_optimizer("sgd_momentum")
def _sgd_momentum(cfg: OptimConfig, lr, groups):
    return routed(cfg, lr, groups, lambda dims: sgd_momentum(lr, cfg.b1, _tau(cfg)))


@register_optimizer("precond_momentum")
def _precond_momentum(cfg: OptimConfig, lr, groups):
    return routed(cfg, lr, groups, lambda dims: precond_momentum(
        lr, cfg.b1, _tau(cfg), cfg.b2, cfg.eps, precond=cfg.precond, dims=dims,
        every=cfg.precond_every))


@register_optimizer("delta_momentum")
def _delta_momentum(cfg: OptimConfig, lr, groups):
    return routed(cfg, lr, groups, lambda dims: delta_momentum(
        lr, cfg.b1, cfg.delta_beta, _tau(cfg), cfg.b2, cfg.eps, dims=dims, precond=cfg.precond,
        every=cfg.precond_every, form=cfg.delta_form))


@register_optimizer("dmgd")
def _dmgd(cfg: OptimConfig, lr, groups):
    return routed(cfg, lr, groups, lambda dims: dmgd(
        lr, cfg.b1, _tau(cfg), cfg.dmgd_lr, cfg.dmgd_decay, hidden=cfg.dmgd_hidden,
        form=cfg.dmgd_form))


@register_optimizer("muon")
def _muon(cfg: OptimConfig, lr, groups):
    """optax.contrib.muon with explicit dims: matrices (per layer) -> NS, others -> AdamW.

    optax's AdamW branch decays every leaf it gets, so its decay is switched off and a masked
    decoupled decay at the AdamW lr is chained after it (embeddings/vectors per decay_mask).
    """
    aux = _aux_lr(cfg, lr)
    tx = optax_muon(
        lr, ns_steps=cfg.ns_steps, beta=cfg.b1, eps=cfg.eps, weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov, adam_b1=cfg.b1, adam_b2=cfg.b2, adam_weight_decay=0.0,
        adam_learning_rate=aux,
        muon_weight_dimension_numbers=dims_fn(groups, none_for_others=True),
    )
    others = decay_mask_fn(cfg, groups, only=("vector", "embedding"))
    return optax.chain(tx, decoupled_weight_decay(aux, cfg.weight_decay, others))


def _m3(variant: str):
    def build(cfg: OptimConfig, lr, groups):
        return routed(cfg, lr, groups, lambda dims: m3(
            lr, cfg.b1, cfg.b2, cfg.b3, cfg.m3_alpha, cfg.eps, dims=dims, period=cfg.m3_period,
            variant=variant, ns_steps=cfg.ns_steps), allow_same=False)

    return build


register_optimizer("m3")(_m3("paper"))
register_optimizer("m3_paper")(_m3("paper"))
register_optimizer("m3_ema")(_m3("ema"))
