"""Paper-literal forms of the deep optimizers (SPEC §2: delta momentum Eqs. 48-49, DMGD Eq. 50)
against per-step float64 references written from the equations, their defining properties, and
DMGD's x64 consistency (its bf16 state dtype: tests/test_optim_rules.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hope_jax.optim import delta_momentum, delta_momentum_rule, dmgd, dmgd_rule
from hope_jax.optim.dmgd import paper_objective, shared_objective

pytestmark = pytest.mark.usefixtures("float64")  # every test here runs in float64 (x64 on)


def _stream(n, shapes, seed=0):
    """n steps of gradient dicts with leaves of the given shapes, norms spread over 0.2-1.3."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        scale = 0.2 + 1.1 * (t % 3) / 2
        out.append({k: scale * rng.standard_normal(s) / np.sqrt(np.prod(s))
                    for k, s in shapes.items()})
    return out


def _run(tx, grads):
    params = jax.tree.map(jnp.zeros_like, grads[0])
    state, out = tx.init(params), []
    for g in grads:
        u, state = tx.update(g, state, params)
        out.append(u)
    return out, state


SHAPES = {"w": (5, 3), "stacked": (2, 3, 4), "b": (3,)}


def test_delta_momentum_paper_matches_float64_reference():
    """Eqs. 48-49 as printed (row convention): m <- (alpha I - G G^T) m - eta (1 - tau) G, per
    [in, out] matrix (stacked leaves per layer, vectors as one row), W <- W + m."""
    eta, alpha, tau = 0.3, 0.9, 0.5
    gs = _stream(6, SHAPES)
    out, _ = _run(delta_momentum(eta, alpha, delta=0.7, dampening=tau, form="paper"), gs)

    def factor(g, m):  # (alpha I - G G^T) m, written out per matrix
        if g.ndim == 1:
            return (alpha - g @ g) * m
        if g.ndim == 3:
            return np.stack([factor(gl, ml) for gl, ml in zip(g, m)])
        return (alpha * np.eye(g.shape[0]) - g @ g.T) @ m

    m = {k: np.zeros(s) for k, s in SHAPES.items()}
    for g, u in zip(gs, out):
        m = {k: factor(g[k], m[k]) - eta * (1 - tau) * g[k] for k in SHAPES}
        for k in SHAPES:
            assert u[k].dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(u[k]), m[k], rtol=1e-12, atol=1e-14)


def test_delta_momentum_paper_is_unit_gd_step_and_projects():
    """The paper form is one unit GD step on 1/2 ||G^T m + eta I||^2 with retention alpha; for a
    gradient with orthonormal columns and alpha = 1 it overwrites: afterwards G^T m = -eta I
    exactly (the old content along G is erased) and m is unchanged orthogonally to G."""
    rng = np.random.default_rng(1)
    m0 = jnp.asarray(rng.standard_normal((6, 3)))
    rule = delta_momentum_rule(form="paper")
    for alpha, g in [(0.8, jnp.asarray(rng.standard_normal((6, 3)) * 0.4)),
                     (1.0, jnp.asarray(np.linalg.qr(rng.standard_normal((6, 3)))[0]))]:
        eta = 0.25
        m1, _ = rule.step(g, rule.init(m0)._replace(m=m0), {"lr": eta, "momentum": alpha})
        obj = lambda m, g=g, eta=eta: 0.5 * jnp.sum((g.T @ m + eta * jnp.eye(3)) ** 2)
        np.testing.assert_allclose(m1, alpha * m0 - jax.grad(obj)(m0), rtol=1e-12, atol=1e-13)
    # g has orthonormal columns, alpha = 1: the projection property
    np.testing.assert_allclose(g.T @ m1, -eta * np.eye(3), atol=1e-13)
    perp = np.eye(6) - g @ g.T
    np.testing.assert_allclose(perp @ m1, perp @ m0, atol=1e-13)


def _paper_dmgd_reference(theta0, gs, eta, alpha, tau):
    """Eq. 50 step by step in numpy with hand-derived gradients of L2 = sum_e tanh(u_e w1) w2:
    dL2/dw2_h = sum_e tanh(u_e w1_h),  dL2/dw1_h = w2_h sum_e u_e (1 - tanh(u_e w1_h)^2)."""
    theta = {k: {n: np.asarray(v, np.float64) for n, v in th.items()} for k, th in theta0.items()}
    updates = []
    for g in gs:
        upd = {}
        for k, u in g.items():
            w1, w2 = theta[k]["w1"], theta[k]["w2"]
            th = np.tanh(u[..., None] * w1)
            d_w2 = th.reshape(-1, w1.size).sum(0)
            d_w1 = w2 * (u[..., None] * (1 - th**2)).reshape(-1, w1.size).sum(0)
            w1, w2 = alpha * w1 - eta * (1 - tau) * d_w1, alpha * w2 - eta * (1 - tau) * d_w2
            theta[k] = {"w1": w1, "w2": w2}
            upd[k] = np.tanh(u[..., None] * w1) @ w2  # read-out m_{i+1}(u_i)
        updates.append(upd)
    return updates, theta


def test_dmgd_paper_matches_float64_reference():
    eta, alpha, tau = 0.2, 0.85, 0.3
    gs = [{k: 3.0 * v for k, v in g.items()} for g in _stream(5, SHAPES, seed=2)]
    tx = dmgd(eta, alpha, dampening=tau, hidden=3, form="paper")
    out, state = _run(tx, gs)
    theta0 = tx.init(jax.tree.map(jnp.zeros_like, gs[0])).inner.theta
    ref, theta = _paper_dmgd_reference(theta0, gs, eta, alpha, tau)
    for u, r in zip(out, ref):
        for k in SHAPES:
            np.testing.assert_allclose(np.asarray(u[k]), r[k], rtol=1e-11, atol=1e-14)
    assert float(np.max(np.abs(ref[-1]["w"]))) > 1e-3  # the memory moved: a non-trivial check
    for k in SHAPES:
        np.testing.assert_allclose(state.inner.theta[k]["w2"], theta[k]["w2"], rtol=1e-11)


@pytest.mark.parametrize("form", ["reinterpreted", "paper"])
def test_dmgd_memory_step_reduces_its_own_objective(form):
    """Eq. 50's second line is a gradient step of the memory on its internal objective L2: with
    full retention and a small step, L2(theta_{i+1}; u_i) < L2(theta_i; u_i) on every step."""
    gs = _stream(4, SHAPES, seed=3)
    lr = 1e-3
    rule = dmgd_rule(hidden=4, form=form)
    hp = {"lr": lr, "momentum": 1.0, "mem_lr": lr, "mem_decay": 1.0}
    state = rule.init(jax.tree.map(jnp.zeros_like, gs[0]))
    if form == "reinterpreted":  # make W2 non-zero so both layers of the MLP have a gradient
        state = state._replace(theta={**state.theta, "w2": jnp.linspace(-1.0, 1.0, 4)})

    def objective(theta, g, st):
        if form == "paper":
            return sum(paper_objective(theta[k], g[k]) for k in g)
        return shared_objective(theta, g, st.phi)

    for g in gs:
        g = jax.tree.map(jnp.asarray, g)
        _, new = rule.step(g, state, hp)
        before, after = objective(state.theta, g, state), objective(new.theta, g, state)
        assert after < before - 1e-12, (before, after)
        state = new


@pytest.mark.parametrize("form", ["reinterpreted", "paper"])
def test_dmgd_float32_and_float64_params_agree_under_x64(form):
    """Under x64 a float32 and a float64 param tree get the same W1 (drawn in float32) and the
    same trajectory up to float32 rounding (W1 drawn in the params' dtype made them ~1% apart)."""
    gs64 = _stream(5, {"w": (4, 3)}, seed=4)
    gs32 = [jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g) for g in gs64]
    tx = optax.inject_hyperparams(dmgd, static_args=("hidden", "form"))(
        0.1, 0.9, mem_lr=0.5, hidden=4, form=form)
    out32, _ = _run(tx, gs32)
    out64, _ = _run(tx, [jax.tree.map(jnp.asarray, g) for g in gs64])
    for a, b in zip(out32, out64):
        np.testing.assert_allclose(np.asarray(a["w"], np.float64), b["w"], rtol=2e-5, atol=1e-7)
