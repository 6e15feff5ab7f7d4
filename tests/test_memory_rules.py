"""Gates, objectives and architectures of `hope_jax.memory.rules` (cheap, no scans)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.memory import optimizers, rules


def test_gate_bias_inverts_squash():
    """A fresh gate (zero input) outputs exactly the configured initial value, in range."""
    for name, init, lr_max in [("lr", 0.01, 0.1), ("momentum", 0.9, 1.0), ("retain", 0.99, 1.0)]:
        g = rules.squash_gates({name: jnp.full((3,), rules.gate_bias(name, init, lr_max),
                                               jnp.float32)},
                               lr_max)[name]
        np.testing.assert_allclose(g, init, rtol=1e-5)
    x = jnp.array([-50.0, 50.0], jnp.float32)
    g = rules.squash_gates({"lr": x, "retain": x}, 0.2)
    assert g["lr"].dtype == jnp.float32 and float(g["lr"].max()) <= 0.2 + 1e-6
    assert float(g["retain"].min()) >= 0.0 and float(g["retain"].max()) <= 1.0


def test_chunk_mean_gates():
    x = jnp.arange(16.0).reshape(1, 8, 2)  # [B, T, H]
    m = rules.chunk_mean(x, 4)
    np.testing.assert_allclose(m[0, :4, 0], jnp.full(4, x[0, :4, 0].mean()))
    np.testing.assert_allclose(m[0, 4:, 1], jnp.full(4, x[0, 4:, 1].mean()))


@pytest.mark.parametrize("objective", ["l2", "dot"])
@pytest.mark.parametrize("out_norm", [False, True])
def test_weighted_grads_equal_autodiff(objective, out_norm):
    """The shared backward (`backprop` + `contract`) == vmap of jax.vjp over the weight rows."""
    arch = rules.make_arch("mlp", 4, 4, depth=3, hidden_mult=2.0, out_norm=out_norm)
    w = arch.init(jax.random.PRNGKey(0))
    x, t = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 4))
    coef = jax.random.normal(jax.random.PRNGKey(2), (3, 5))
    obj = rules.OBJECTIVES[objective]
    loss_c = lambda p: jax.vmap(rules.token_loss(arch, obj), (None, 0, 0))(p, x, t)
    expect = jax.vmap(jax.vjp(loss_c, w)[1])(coef)[0]
    got = arch.weighted_grads(w, x, t, obj, coef)
    for a, b in zip(got, expect):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_linear_memory_gd_is_delta_rule():
    """One GD step of the L2 objective on a linear memory is SPEC Eq. 65 (row convention)."""
    arch = rules.make_arch("linear", 3, 2)
    w = (jax.random.normal(jax.random.PRNGKey(0), (3, 2)),)
    k = jnp.array([0.6, 0.8, 0.0])
    v = jnp.array([1.0, -1.0])
    g = jax.grad(rules.token_loss(arch, rules.l2))(w, k, v)
    opt = optimizers.titans(momentum=False, decay=True)
    ctx = optimizers.TokenContext(k, v, {"lr": 0.5, "retain": 0.9})
    new, _ = opt.step(w, (), g, ctx)
    expect = 0.9 * w[0] - 0.5 * jnp.outer(k, k @ w[0] - v)  # (alpha I - eta k k^T) M + eta k v^T
    np.testing.assert_allclose(new[0], expect, rtol=1e-6)
