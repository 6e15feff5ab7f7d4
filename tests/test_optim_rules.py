"""Deep-optimizer rules reduce to their known special cases and closed forms (SPEC §2)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hope_jax.optim import (
    delta_momentum,
    delta_momentum_rule,
    dgd_rule,
    dmgd,
    dmgd_rule,
    m3_rule,
    newton_schulz,
    precond_momentum,
    sgd_momentum,
)


def _grads(n=5, shape=(4, 3)):
    """Deterministic, non-collinear gradient stream (arange-style, no RNG)."""
    base = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    return [jnp.sin(base * (t + 1) * 0.7 + t) for t in range(n)]


def _run(tx, grads, params=None):
    params = jnp.zeros_like(grads[0]) if params is None else params
    state = tx.init(params)
    out = []
    for g in grads:
        u, state = tx.update(g, state, params)
        params = params + u
        out.append(u)
    return out


def _close(a, b, tol=1e-5):
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_momentum_is_heavy_ball_and_ema():
    """Eq. 33: tau = 0 is optax.sgd(momentum); tau = alpha with lr/(1-alpha) is the EMA form."""
    gs = _grads()
    _close(_run(sgd_momentum(0.1, 0.9), gs), _run(optax.sgd(0.1, momentum=0.9), gs))
    ema = optax.chain(optax.ema(0.9, debias=False), optax.scale(-0.1))
    _close(_run(sgd_momentum(0.1, 0.9, dampening=0.9), gs), _run(ema, gs))


def test_precond_momentum_special_cases():
    """Eqs. 46-47: P = I is momentum; alpha = 0 with diagonal P is Adam with b1 = 0."""
    gs = _grads()
    _close(_run(precond_momentum(0.1, 0.9, precond="none"), gs),
           _run(optax.sgd(0.1, momentum=0.9), gs))
    _close(_run(precond_momentum(0.01, 0.0, b2=0.95), gs),
           _run(optax.adam(0.01, b1=0.0, b2=0.95), gs))


def test_delta_momentum_zero_decay_is_momentum():
    gs = _grads()
    _close(_run(delta_momentum(0.1, 0.9, delta=0.0), gs), _run(optax.sgd(0.1, momentum=0.9), gs))


def test_delta_momentum_two_step_closed_form():
    """m1 = -eta g1; m2 = (alpha I - beta g2 g2^T / |g2|^2) m1 - eta g2 (Eqs. 48-49, row form)."""
    g1, g2 = _grads(2)
    eta, alpha, beta = 0.1, 0.9, 0.6
    u1, u2 = _run(delta_momentum(eta, alpha, delta=beta), [g1, g2])
    a, b = np.asarray(g1, np.float64), np.asarray(g2, np.float64)
    m1 = -eta * a
    proj = b @ b.T / np.sum(b * b)
    m2 = (alpha * np.eye(4) - beta * proj) @ m1 - eta * b
    np.testing.assert_allclose(np.asarray(u1), m1, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(u2), m2, rtol=1e-5, atol=1e-6)


def test_delta_momentum_forgets_along_gradient():
    """Rank-1 gradient x delta^T: the memory's component along x decays by alpha - beta."""
    x = jnp.array([1.0, 0.0, 0.0, 0.0])
    m0 = jnp.ones((4, 3))
    g = jnp.outer(x, jnp.array([1.0, 2.0, 3.0]))
    rule = delta_momentum_rule()
    hp = {"lr": 0.0, "momentum": 0.9, "delta": 0.5}
    m1, _ = rule.step(g, rule.init(m0)._replace(m=m0), hp)
    np.testing.assert_allclose(m1[0], 0.4 * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(m1[1:], 0.9 * np.ones((3, 3)), rtol=1e-6)


def test_delta_momentum_stacked_is_per_layer():
    gs = [jnp.stack([g, 2.0 * g[::-1]]) for g in _grads(3)]
    stacked = _run(delta_momentum(0.1, 0.9, delta=0.7), gs)
    for layer in range(2):
        single = _run(delta_momentum(0.1, 0.9, delta=0.7), [g[layer] for g in gs])
        _close([u[layer] for u in stacked], single)


@pytest.mark.parametrize("hidden,mem_lr", [(0, 0.1), (8, 0.0)])
def test_dmgd_linear_memory_is_momentum(hidden, mem_lr):
    """Eq. 50 with a linear memory (no MLP, or an MLP that never learns) = momentum SGD."""
    gs = _grads()
    out = _run(dmgd(0.1, 0.9, mem_lr=mem_lr, hidden=hidden), gs)
    _close(out, _run(optax.sgd(0.1, momentum=0.9), gs))


def test_dmgd_deep_memory_learns():
    """With a learning MLP the update departs from momentum and the shared MLP weights move."""
    gs = _grads()
    tx = dmgd(0.1, 0.9, mem_lr=0.5, mem_decay=0.9, hidden=8)
    out = _run(tx, gs)
    ref = _run(optax.sgd(0.1, momentum=0.9), gs)
    assert float(jnp.max(jnp.abs(out[-1] - ref[-1]))) > 1e-3
    state = tx.init(gs[0])
    _, state = tx.update(gs[0], state)
    assert float(jnp.sum(jnp.abs(state.inner.theta["w2"]))) > 0


@pytest.mark.parametrize("form", ["reinterpreted", "paper"])
def test_dmgd_state_dtype_is_independent_of_params(form):
    """The MLP state is float32 for a bf16 param tree (it was drawn in the params' dtype)."""
    params = {"w": jnp.zeros((4, 3), jnp.bfloat16), "b": jnp.zeros((3,), jnp.bfloat16)}
    state = dmgd_rule(hidden=4, form=form).init(params)
    for leaf in jax.tree.leaves(state.theta):
        assert leaf.dtype == jnp.float32
    u, _ = dmgd_rule(hidden=4, form=form).step(
        jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params), state, {"lr": 0.1})
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))


@pytest.mark.parametrize("norm,alpha", [(1.0, 1.0), (1.7, 1.0), (1.7, 0.95)])
def test_dgd_is_exact_proximal_step(norm, alpha):
    """Eqs. 56-57: W_{t+1} = argmin 1/2||x W - u||^2 + 1/(2 eta)||W - W_t||^2, u = -dL/dy, then
    retention (SPEC A9: (alpha I - eta' x x^T) W - eta' g = proximal step - (1 - alpha) W_t).

    For ||x|| = 1, alpha = 1 this is Eq. 57: W (I - eta' x x^T) - eta' dL/dy x, eta' = eta/(1+eta).
    """
    w = jnp.cos(jnp.arange(12.0).reshape(4, 3))
    x = jnp.array([0.5, -0.5, 0.5, 0.5]) * norm
    dy = jnp.array([0.3, -1.0, 0.2])
    eta = 0.7
    u, _ = dgd_rule().step(jnp.outer(x, dy), (), {"lr": eta, "retain": alpha, "key": x}, w)
    lhs = np.outer(x, x) + np.eye(4) / eta  # normal equations of the proximal objective
    rhs = np.asarray(w, np.float64) / eta + np.outer(x, -dy)
    prox = np.linalg.solve(lhs, rhs) - (1 - alpha) * np.asarray(w, np.float64)
    np.testing.assert_allclose(np.asarray(w + u), prox, rtol=1e-5, atol=1e-6)
    if norm == 1.0 and alpha == 1.0:
        e = eta / (1 + eta)
        eq57 = (np.eye(4) - e * np.outer(x, x)) @ np.asarray(w) - e * np.outer(x, dy)
        np.testing.assert_allclose(np.asarray(w + u), eq57, rtol=1e-5, atol=1e-6)


def test_m3_paper_matches_hand_computed_steps():
    """Algorithm 1 (A10) by hand for f = 2 over 5 steps."""
    gs = _grads(5)
    hp = {"lr": 0.01, "b1": 0.9, "b2": 0.5, "b3": 0.7, "alpha": 0.3, "eps": 1e-8}
    rule = m3_rule(period=2, variant="paper")
    step = jax.jit(rule.step)
    state = rule.init(gs[0])
    m1 = v = m2 = jnp.zeros((4, 3))
    o2 = jnp.zeros((4, 3))
    chunk = []
    for t, g in enumerate(gs, start=1):
        u, state = step(g, state, hp)
        if t > 1 and (t - 1) % 2 == 0:
            m2 = m2 + 0.7 * sum(chunk)
            o2 = newton_schulz(m2)
            chunk = []
        chunk.append(g)
        m1, v = m1 + 0.9 * g, v + 0.5 * g * g
        ref = -0.01 * (newton_schulz(m1) + 0.3 * o2) / (jnp.sqrt(v) + 1e-8)
        np.testing.assert_allclose(np.asarray(u), np.asarray(ref), rtol=2e-4, atol=1e-6)


def test_m3_ema_bias_correction_and_slow_memory():
    """m3_ema: first step is NS(g)/|g| (bias-corrected V); slow memory stays 0 in chunk 0."""
    g = _grads(2)[1]
    rule = m3_rule(period=3, variant="ema")
    hp = {"lr": 1.0, "b1": 0.9, "b2": 0.99, "b3": 0.5, "alpha": 1.0, "eps": 1e-8}
    u, state = rule.step(g, rule.init(g), hp)
    np.testing.assert_allclose(np.asarray(u), np.asarray(-newton_schulz(g) / (jnp.abs(g) + 1e-8)),
                               rtol=1e-3)
    assert float(jnp.abs(state.o2).sum()) == 0.0


def test_inject_hyperparams_and_schedules():
    """Every factory works under optax.inject_hyperparams, incl. a schedule for the lr."""
    gs = _grads(3)
    sched = optax.linear_schedule(0.1, 0.01, 3)
    for factory, kw, static in [
        (sgd_momentum, {"momentum": 0.9}, ()),
        (precond_momentum, {"momentum": 0.5}, ()),
        (delta_momentum, {"momentum": 0.9, "delta": 0.3}, ()),
        (dmgd, {"momentum": 0.9, "hidden": 4}, ("hidden",)),
    ]:
        injected = optax.inject_hyperparams(factory, static_args=static)(sched, **kw)
        direct = factory(sched, **kw)
        _close(_run(injected, gs), _run(direct, gs))


def test_shampoo_preconditioner_first_step_is_grafted_polar_factor():
    """Eqs. 38-41 with Kronecker memories: after one step P(G) = U V^T (G = U S V^T), grafted to
    the diagonal (Adam) norm; stacked params are preconditioned per layer."""
    gs = [g + 0.3 for g in _grads(2)]
    stacked = jnp.stack(gs)  # [2, 4, 3]
    tx = precond_momentum(0.1, 0.0, precond="shampoo", every=1)
    u, _ = tx.update(stacked, tx.init(stacked))
    for layer, g in enumerate(gs):
        a, _, bt = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
        polar = a @ bt
        adam_norm = np.linalg.norm(np.ones(g.shape))  # Adam's first step is sign(g)
        np.testing.assert_allclose(u[layer], -0.1 * adam_norm * polar / np.linalg.norm(polar),
                                   rtol=2e-3, atol=2e-4)
