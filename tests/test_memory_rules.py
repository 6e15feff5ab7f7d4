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


@pytest.mark.parametrize("form", ["gain", "clip", "gain+clip"])
def test_output_forms_weighted_grads_equal_autodiff(form):
    """Learned gain (one more fast leaf) and per-token clipping: the shared backward ==
    `token_grad` (autodiff, then each token's gradient clipped) summed with the row weights."""
    arch = rules.make_arch("mlp", 4, 4, hidden_mult=2.0, out_norm="gain" in form,
                           out_gain="gain" in form, grad_clip=3.0 if "clip" in form else 0.0)
    w = arch.init(jax.random.PRNGKey(0))
    w = w[:-1] + (w[-1] * 0.7,) if "gain" in form else w  # a gain away from 1
    x, t = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 4))
    coef = jax.random.normal(jax.random.PRNGKey(2), (3, 6))
    per_tok = jax.vmap(rules.token_grad(arch, rules.l2), (None, 0, 0))(w, x, t)
    expect = [jnp.einsum("nc,c...->n...", coef, g) for g in per_tok]
    got = arch.weighted_grads(w, x, t, rules.l2, coef)
    assert len(got) == len(arch.shapes()) == (3 if "gain" in form else 2)
    for a, b in zip(got, expect):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    if "clip" in form:  # the bound binds for some tokens and not for others here
        norms = jnp.sqrt(sum(jnp.sum(g.reshape(6, -1) ** 2, -1) for g in per_tok))
        raw = jax.vmap(jax.grad(rules.token_loss(arch, rules.l2)), (None, 0, 0))(w, x, t)
        raw_n = jnp.sqrt(sum(jnp.sum(g.reshape(6, -1) ** 2, -1) for g in raw))
        assert float(norms.max()) <= 3.0 + 1e-5
        assert bool(jnp.any(raw_n > 3.0)) and bool(jnp.any(raw_n < 3.0))
        np.testing.assert_allclose(norms, jnp.minimum(raw_n, 3.0), rtol=1e-5)


def test_gain_carries_the_branch_scale():
    """RMS-normalised branch: the last layer's scale does nothing (so retention cannot act
    through it, PAPER.md D2); with `out_gain` the branch is exactly proportional to the gain."""
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    norm = rules.make_arch("mlp", 4, 4, out_norm=True)
    w = norm.init(jax.random.PRNGKey(0))
    # the norm's eps: 1e-3
    np.testing.assert_allclose(norm.apply((w[0], 0.1 * w[1]), x), norm.apply(w, x), rtol=1e-3)
    gain = rules.make_arch("mlp", 4, 4, out_norm=True, out_gain=True)
    wg = gain.init(jax.random.PRNGKey(0))
    np.testing.assert_allclose(gain.apply(wg, x), norm.apply(w, x), rtol=1e-6)  # g = 1 at init
    np.testing.assert_allclose(gain.apply(wg[:2] + (0.1 * wg[2],), x) - x,
                               0.1 * (gain.apply(wg, x) - x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="out_norm"):
        rules.make_arch("mlp", 4, 4, out_gain=True)


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


def _mlp_case():
    arch = rules.make_arch("mlp", 4, 4, depth=2, hidden_mult=1.5)
    w = arch.init(jax.random.PRNGKey(0))
    k = jnp.array([0.5, -0.5, 0.5, 0.5])  # unit key, as the layers use
    v = jnp.array([1.0, 0.0, -1.0, 0.5])
    g = jax.grad(rules.token_loss(arch, rules.l2))(w, k, v)
    s = tuple(0.1 * jnp.ones_like(x) for x in w)
    return w, k, v, g, s


@pytest.mark.parametrize("coef", ["normalized", "printed"])
@pytest.mark.parametrize("momentum", [False, True])
def test_dgd_step_golden(coef, momentum):
    """DGD's step is SPEC Eq. 88 + A6 + A9 written out by hand: S <- beta S - eta' g,
    W_0 <- alpha W_0 - eta' k (k^T W_0) + S_0, W_1 <- alpha W_1 + S_1, eta' = eta / (1 + eta)
    for a unit key (normalized, Eq. 57) or eta (printed)."""
    w, k, v, g, s = _mlp_case()
    eta, alpha, beta = 0.7, 0.9, 0.8
    e = eta / (1 + eta) if coef == "normalized" else eta
    opt = optimizers.dgd(momentum, True, coef)
    gates = {"lr": eta, "retain": alpha} | ({"momentum": beta} if momentum else {})
    new, st = opt.step(w, (s,) if momentum else (), g, optimizers.TokenContext(k, v, gates))
    upd = [beta * si - e * gi for si, gi in zip(s, g)] if momentum else [-e * gi for gi in g]
    np.testing.assert_allclose(new[0], alpha * w[0] - e * np.outer(k, k @ w[0]) + upd[0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new[1], alpha * w[1] + upd[1], rtol=1e-5, atol=1e-6)
    assert opt.gates == ("lr",) + (("momentum",) if momentum else ()) + ("retain",)


def test_titans_step_golden():
    """GD + momentum + retention (Titans Eqs. 13-14): S <- m S - lr g, W <- keep W + S."""
    w, k, v, g, s = _mlp_case()
    opt = optimizers.titans(True, True)
    new, (s_new,) = opt.step(w, (s,), g, optimizers.TokenContext(
        k, v, {"lr": 0.3, "momentum": 0.8, "retain": 0.95}))
    for wi, si, gi, ni, sn in zip(w, s, g, new, s_new):
        np.testing.assert_allclose(sn, 0.8 * si - 0.3 * gi, rtol=1e-6)
        np.testing.assert_allclose(ni, 0.95 * wi + 0.8 * si - 0.3 * gi, rtol=1e-6)


def test_dgd_linear_factor_stays_in_unit_interval():
    """SPEC A9 (revised): with the l2 loss a linear memory is scaled along a unit key by
    alpha - 2 eta'. The default coefficient eta' = eta/(1+eta) keeps it in [-1, 1] for every
    gate value (eta in (0, 1], alpha in [0, 1]); Eq. 88's printed eta does not."""
    arch = rules.make_arch("linear", 4, 3)
    k = jnp.array([0.5, -0.5, 0.5, 0.5])
    w = (jnp.outer(k, jnp.array([1.0, -2.0, 0.5])),)  # all of W along k
    grad = jax.grad(rules.token_loss(arch, rules.l2))(w, k, jnp.zeros(3))
    etas, alphas = jnp.linspace(0.01, 1.0, 34), jnp.linspace(0.0, 1.0, 21)

    def factor(coef, eta, alpha):
        new, _ = optimizers.dgd(False, True, coef).step(
            w, (), grad, optimizers.TokenContext(k, jnp.zeros(3), {"lr": eta, "retain": alpha}))
        return jnp.sum(new[0] * w[0]) / jnp.sum(w[0] * w[0])

    grid = lambda coef: jax.vmap(jax.vmap(lambda e, a: factor(coef, e, a), (None, 0)),
                                 (0, None))(etas, alphas)
    f = grid("normalized")
    np.testing.assert_allclose(f, alphas[None] - 2 * etas[:, None] / (1 + etas[:, None]),
                               atol=1e-5)
    assert float(f.min()) >= -1 - 1e-6 and float(f.max()) <= 1 + 1e-6
    assert float(grid("printed").min()) < -1.5  # alpha - 2 eta: expansive for large eta


def test_registry_names_and_errors():
    """Config names resolve through the registries; unknown names and bad rules say why."""
    assert optimizers.make_inner_optimizer("dgd", True, True).name == "dgd+momentum"
    assert "printed" in optimizers.make_inner_optimizer("dgd_printed", True, True).name
    with pytest.raises(ValueError, match="register_inner_optimizer"):
        optimizers.make_inner_optimizer("nope", True, True)
    with pytest.raises(ValueError, match="register_objective"):
        rules.get_objective("nope")
    with pytest.raises(ValueError, match="gates"):
        optimizers.InnerOptimizer("bad", lambda p: (), lambda *a: a[:2], gates=("speed",))
