"""A user's own inner optimizer AND inner objective, defined outside the library, plugged into
HOPE's self-modifying memories and into Titans by registration + config (issue 14 item 2).

Float64: the chunk-parallel engine ≡ the token-by-token reference for the new rule (so the
engine runs it as written: nothing replaces it by a built-in closed form), and the outer
gradient through every inner write ≡ central finite differences.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.config import validate
from hope_jax.memory import optimizers, reference, rules, scan
from hope_jax.memory.titans import memory_spec
from hope_jax.models.hope import self_modifying_layer

pytestmark = pytest.mark.usefixtures("float64")  # conftest.py


# ---- the user's code: plain functions, no library internals -------------------------------
def tanh_sgd(momentum: bool, decay: bool) -> optimizers.InnerOptimizer:
    """W <- keep W - lr tanh(g) (+ heavy-ball momentum on tanh(g)): a bounded-step rule."""

    def init(params):
        return (tuple(jnp.zeros_like(w) for w in params),) if momentum else ()

    def step(params, opt_state, grads, ctx):
        lr, keep = ctx.gates["lr"], ctx.gates.get("retain", 1.0)
        u = tuple(-lr * jnp.tanh(g) for g in grads)
        if momentum:
            u = tuple(ctx.gates["momentum"] * m + ui for m, ui in zip(opt_state[0], u))
        return tuple(keep * w + ui for w, ui in zip(params, u)), ((u,) if momentum else ())

    gates = ("lr",) + (("momentum",) if momentum else ()) + (("retain",) if decay else ())
    return optimizers.InnerOptimizer("tanh_sgd", init, step, gates=gates)


def pseudo_huber(pred, target):
    """Inner loss sum(sqrt(1 + d^2) - 1): l2 near 0, l1 far away."""
    d = pred - target
    return jnp.sum(jnp.sqrt(1.0 + d * d) - 1.0)


optimizers.register_inner_optimizer("tanh_sgd", tanh_sgd)
rules.register_objective("pseudo_huber", pseudo_huber)
# -------------------------------------------------------------------------------------------

B, T, D, H = 2, 8, 8, 2
with jax.enable_x64(True):
    SEG = jnp.array([[0] * 3 + [1] * 5, [2] * 8])  # a document start mid-chunk
    POS = jnp.broadcast_to(jnp.arange(T), (B, T))
    X = jax.random.normal(jax.random.PRNGKey(0), (B, T, D), jnp.float64)


def _model_cfg(name, hope=None, **inner):
    """The model's config with `inner` keys in `model.inner` (the same names for every model)."""
    return validate({"model": {"name": name, "d_model": D, "num_heads": H, "num_layers": 1,
                               "dtype": "float64", "param_dtype": "float64",
                               "inner": {"remat_every": 0, **inner}, "hope": hope or {}}}).model


def _hope_cfg():
    return _model_cfg("hope", dict(other_chunk_size=2, memory_hidden_mult=1.0,
                                   cms_periods=(4, 0)),
                      optimizer="tanh_sgd", objective="pseudo_huber", chunk_size=4)


def _params(module):
    """Params of the module's structure with random values (numpy: no f64 jax.random compile)."""
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), X, POS, SEG)
    rng = np.random.default_rng(1)

    def fill(path, a):
        name = jax.tree_util.keystr(path)
        base = np.zeros(a.shape)
        if "_conv" in name:
            base[-1] = 1.0
        base += {"lr_bias": -1.0, "momentum_bias": 2.0, "retain_bias": -3.0}.get(
            path[-1].key, 1.0 if "scale" in name else 0.0)
        return jnp.asarray(base + 0.3 * rng.standard_normal(a.shape), a.dtype)

    return jax.tree_util.tree_map_with_path(fill, nn.unbox(shapes))


def test_hope_runs_the_custom_rule_as_written():
    """HOPE's self-modifying layer with the user's rule + objective (config names): chunked ≡
    the token-by-token reference (which calls the rule's `step` and the objective)."""
    cfg = _hope_cfg()
    fast, ref = self_modifying_layer(cfg), self_modifying_layer(cfg, inner_reference=True)
    p = _params(fast)
    y, st = jax.jit(fast.apply)(p, X, POS, SEG)
    y_ref, st_ref = jax.jit(ref.apply)(p, X, POS, SEG)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(jax.tree_util.tree_leaves(st), jax.tree_util.tree_leaves(st_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert float(jnp.std(y)) > 1e-3
    # not silently the built-in rule: DGD on the same params gives another output
    dgd = dataclasses.replace(cfg, inner=dataclasses.replace(cfg.inner, optimizer="dgd"))
    y_dgd, _ = jax.jit(self_modifying_layer(dgd).apply)(p, X, POS, SEG)
    assert float(jnp.max(jnp.abs(y - y_dgd))) > 1e-6


def test_titans_runs_the_custom_rule_as_written():
    """The Titans engine (`memory_scan`) with the rule from `model.inner.optimizer` and the
    objective from `model.inner.objective` ≡ its token-by-token reference."""
    cfg = _model_cfg("titans_lmm", optimizer="tanh_sgd", objective="pseudo_huber", chunk_size=4)
    spec = memory_spec(cfg.memory, cfg.inner, 4)
    assert spec.optimizer.name == "tanh_sgd" and spec.objective is pseudo_huber
    ks = jax.random.split(jax.random.PRNGKey(2), 5)
    q, k = (jax.random.normal(kk, (B, H, T, 4), jnp.float64) for kk in ks[:2])
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(ks[2], (B, H, T, 4), jnp.float64)
    gates = {"lr": 0.3 * jax.nn.sigmoid(jax.random.normal(ks[3], (B, H, T), jnp.float64)),
             "momentum": jnp.full((B, H, T), 0.8), "retain": jnp.full((B, H, T), 0.97)}
    init = tuple(jnp.broadcast_to(w, (H,) + w.shape)
                 for w in spec.arch.init(ks[4], jnp.float64))
    run = jax.jit(scan.memory_scan, static_argnums=0)
    y, st = run(spec, init, q, k, v, gates, segment_ids_BT=SEG)
    y_ref, st_ref = jax.jit(reference.reference_scan, static_argnums=0)(
        spec, init, q, k, v, gates, segment_ids_BT=SEG)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(jax.tree_util.tree_leaves(st), jax.tree_util.tree_leaves(st_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_outer_gradient_through_custom_rule_matches_finite_differences():
    """d(loss)/d(params) along a random direction: jax.grad ≡ central differences (f64)."""
    cfg = _hope_cfg()
    m = self_modifying_layer(cfg)
    p = _params(m)
    r = jax.random.normal(jax.random.PRNGKey(3), (B, T, D), jnp.float64)
    loss = jax.jit(lambda p: jnp.sum(m.apply(p, X, POS, SEG)[0] * r))
    leaves, tree = jax.tree_util.tree_flatten(p)
    rng = np.random.default_rng(4)
    direction = jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(rng.standard_normal(x.shape)) for x in leaves])
    g = jax.jit(jax.grad(lambda p: jnp.sum(m.apply(p, X, POS, SEG)[0] * r)))(p)
    analytic = sum(float(jnp.sum(a * b)) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                          jax.tree_util.tree_leaves(direction)))
    eps = 1e-6  # the loss is strongly curved along random directions: the error is ~6 eps^2
    shift = lambda s: jax.tree_util.tree_map(lambda a, b: a + s * b, p, direction)
    numeric = (float(loss(shift(eps))) - float(loss(shift(-eps)))) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
    mem_grads = [float(jnp.abs(g["params"][n]).sum()) for n in ("mem_w0", "k_mem_w0")]
    assert all(x > 0 for x in mem_grads)  # the meta-learned inits are trained (A14)
