"""Per-group routing: weight decay exactly where `registry.decay_mask` says, vectors and
embeddings to AdamW (never Newton-Schulz), `other_params="same"` routes them to the rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hope_jax.config import OptimConfig
from hope_jax.optim import OPTIMIZERS, build_optimizer
from hope_jax.optim.registry import decay_mask

PARAMS = {"w": jnp.cos(jnp.arange(24.0)).reshape(2, 3, 4) + 2.0, "b": jnp.ones((4,)) * 3.0,
          "e": jnp.sin(jnp.arange(20.0)).reshape(5, 4) + 2.0}
GROUPS = {"w": "matrix", "b": "vector", "e": "embedding"}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("decay_embeddings,decay_norms", [(False, False), (True, True)])
def test_weight_decay_follows_decay_mask(name, decay_embeddings, decay_norms):
    """Zero gradients: every optimizer's update is -lr * wd * W on decayed leaves, 0 elsewhere."""
    cfg = OptimConfig(name=name, lr=0.1, aux_lr=0.05, warmup_steps=0, min_lr_ratio=1.0,
                      weight_decay=0.2, clip_norm=0.0, decay_embeddings=decay_embeddings,
                      decay_norms=decay_norms)
    tx = build_optimizer(cfg, 10, GROUPS)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    u, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    mask = decay_mask(cfg, GROUPS)
    for k in PARAMS:
        lr = 0.1 if (k == "w" or name == "adamw") else 0.05  # AdamW branch runs at aux_lr
        expect = -lr * 0.2 * PARAMS[k] if mask[k] else jnp.zeros_like(PARAMS[k])
        np.testing.assert_allclose(u[k], expect, rtol=1e-5, atol=1e-7, err_msg=f"{name}/{k}")


@pytest.mark.parametrize("name", ["muon", "m3", "m3_ema"])
def test_vectors_and_embeddings_go_to_adamw(name):
    """Newton-Schulz optimizers: vectors and embeddings get AdamW at aux_lr, even with "same"."""
    cfg = OptimConfig(name=name, lr=0.1, aux_lr=0.01, warmup_steps=0, min_lr_ratio=1.0,
                      weight_decay=0.0, clip_norm=0.0, other_params="same")
    tx = build_optimizer(cfg, 10, GROUPS)
    g = jax.tree.map(lambda x: jnp.sin(5.0 * x), PARAMS)
    u, _ = tx.update(g, tx.init(PARAMS), PARAMS)
    nesterov = name == "muon"  # optax.contrib.muon's AdamW branch uses Nesterov momentum
    ref_tx = optax.adamw(0.01, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=0.0,
                         nesterov=nesterov)
    ref, _ = ref_tx.update(g, ref_tx.init(PARAMS), PARAMS)
    for k in ("b", "e"):
        np.testing.assert_allclose(u[k], ref[k], rtol=1e-5, err_msg=k)


def test_other_params_same_runs_the_rule_on_vectors():
    """Momentum variants with other_params="same": every group is plain momentum SGD."""
    cfg = OptimConfig(name="sgd_momentum", lr=0.1, warmup_steps=0, min_lr_ratio=1.0,
                      weight_decay=0.0, clip_norm=0.0, other_params="same",
                      momentum_form="heavy_ball")
    tx = build_optimizer(cfg, 10, GROUPS)
    ref_tx = optax.sgd(0.1, momentum=cfg.b1)
    s, rs = tx.init(PARAMS), ref_tx.init(PARAMS)
    for t in range(3):
        g = jax.tree.map(lambda x, t=t: jnp.sin((t + 2.0) * x), PARAMS)
        u, s = tx.update(g, s, PARAMS)
        r, rs = ref_tx.update(g, rs, PARAMS)
        for k in PARAMS:
            np.testing.assert_allclose(u[k], r[k], rtol=1e-5, atol=1e-7)
