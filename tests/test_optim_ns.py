"""Newton-Schulz / Muon (SPEC Eqs. 42-44, 52, A10): band, optax parity, per-layer routing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import MuonDimensionNumbers, scale_by_muon

from hope_jax.config import OptimConfig, validate
from hope_jax.models.lm import LM
from hope_jax.optim import (
    MatrixDims,
    build_optimizer,
    labelled_groups,
    newton_schulz,
    ns_momentum,
    orthogonalize,
)
from hope_jax.optim.registry import param_groups
from hope_jax.optim.routing import infer_dims


def _matrix(m, n, smin=0.05):
    """U diag(s) V^T with deterministic orthonormal U, V and singular values in [smin, 1]."""
    u, _ = np.linalg.qr(np.cos(np.arange(m * m).reshape(m, m) * 0.37 + 1.0))
    v, _ = np.linalg.qr(np.sin(np.arange(n * n).reshape(n, n) * 0.53 + 2.0))
    r = min(m, n)
    s = np.linspace(smin, 1.0, r)
    return (u[:, :r] * s) @ v[:, :r].T, u[:, :r], v[:, :r]


def test_ns5_singular_values_in_band():
    """Quintic NS, 5 steps: singular values in [0.6, 1.2], singular vectors kept."""
    for m, n in [(32, 64), (64, 32), (48, 48)]:
        x, u, v = _matrix(m, n)
        o = np.asarray(newton_schulz(jnp.asarray(x, jnp.float32)), np.float64)
        s = np.linalg.svd(o, compute_uv=False)
        assert s.min() > 0.6 and s.max() < 1.2, (m, n, s.min(), s.max())
        core = u.T @ o @ v  # diagonal iff NS kept the singular vectors
        np.testing.assert_allclose(core - np.diag(np.diag(core)), 0.0, atol=1e-4)


def test_ns_matches_optax_scale_by_muon():
    """Our NS == optax.contrib.scale_by_muon's orthogonalization (same coefficients, 5 steps)."""
    x = jnp.asarray(_matrix(16, 24)[0], jnp.float32)
    tx = scale_by_muon(nesterov=False)
    ref, _ = tx.update(x, tx.init(x))
    np.testing.assert_allclose(newton_schulz(x), ref, atol=1e-5)


def test_muon_rule_matches_optax_muon_over_steps():
    """The pure Muon rule (usable in the inner loop) == optax.contrib.muon on a matrix."""
    gs = [jnp.asarray(_matrix(8, 12)[0] * (t + 1), jnp.float32) + 0.1 * jnp.cos(t * 1.0 + 2.0)
          for t in range(4)]
    ours = ns_momentum(0.02, 0.95, nesterov=False)
    ref = optax.contrib.muon(0.02, beta=0.95, nesterov=False)
    p = jnp.zeros((8, 12))
    so, sr = ours.init(p), ref.init(p)
    up_ours, up_ref = jax.jit(ours.update), jax.jit(ref.update)
    for g in gs:
        uo, so = up_ours(g, so, p)
        ur, sr = up_ref(g, sr, p)
        np.testing.assert_allclose(uo, ur, atol=1e-6)


def test_stacked_params_orthogonalized_per_layer():
    """[L, m, n] gets NS per layer: default dims, and the registered `muon` with plain labels."""
    x = jnp.stack([jnp.asarray(_matrix(6, 10)[0] * (i + 1) ** 2, jnp.float32) for i in range(3)])
    per_layer = jnp.stack([newton_schulz(x[i]) for i in range(3)])
    np.testing.assert_allclose(orthogonalize(x), per_layer, atol=1e-6)

    cfg = OptimConfig(name="muon", lr=0.1, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0,
                      nesterov=False)
    tx = build_optimizer(cfg, 10, {"w": "matrix"})
    u, _ = jax.jit(tx.update)({"w": x}, tx.init({"w": x}), {"w": x})
    scale = np.sqrt(10 / 6)
    np.testing.assert_allclose(u["w"], -0.1 * scale * per_layer, atol=1e-6)


def test_four_d_kernels_route_to_embed_by_heads_matrix():
    """[L, D, H, K] (q) is D x HK and [L, H, K, D] (o) is HK x D, per layer."""
    d, h, k = 8, 2, 4
    q = jnp.asarray(np.cos(np.arange(2 * d * h * k) * 0.31).reshape(2, d, h, k), jnp.float32)
    o = jnp.transpose(q, (0, 2, 3, 1))
    axes = {"q": ("layers", "embed", "heads", "kv"), "o": ("layers", "heads", "kv", "embed")}
    groups = labelled_groups(axes)
    assert groups["q"].dims == MatrixDims((1,), (2, 3)) == infer_dims(q)
    assert groups["o"].dims == MatrixDims((1, 2), (3,)) == infer_dims(o)
    cfg = OptimConfig(name="muon", lr=1.0, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0,
                      nesterov=False)
    params = {"q": q, "o": o}
    for g in (groups, param_groups(axes)):  # labelled and plain labels agree
        tx = build_optimizer(cfg, 10, g)
        u, _ = jax.jit(tx.update)(params, tx.init(params), params)
        for layer in range(2):
            ref_q = -newton_schulz(q[layer].reshape(d, h * k)).reshape(d, h, k)
            np.testing.assert_allclose(u["q"][layer], ref_q, atol=5e-5)
            ref_o = -newton_schulz(o[layer].reshape(h * k, d)).reshape(h, k, d)
            np.testing.assert_allclose(u["o"][layer], ref_o, atol=5e-5)


def test_shape_inference_agrees_with_logical_axes_on_the_lm():
    """On the real Transformer++ params, plain-label dims == logical-axes dims; embeddings and
    norms are never orthogonalized."""
    cfg = validate({"model": {"d_model": 32, "num_layers": 2, "num_heads": 2}})
    boxed = jax.eval_shape(lambda: LM(cfg.model).init(jax.random.key(0),
                                                      jnp.zeros((1, 8), jnp.int32)))["params"]
    axes = jax.tree.map(lambda p: tuple(p.names), boxed,
                        is_leaf=lambda p: isinstance(p, nn.Partitioned))
    shapes = nn.unbox(boxed)
    groups = labelled_groups(axes)
    n_matrix = 0
    for g, x in zip(jax.tree.leaves(groups), jax.tree.leaves(shapes)):
        if g == "matrix":
            n_matrix += 1
            assert g.dims == infer_dims(x), (x.shape, g.dims)
        else:
            assert g.dims is None
    assert n_matrix == 7  # q, k, v, o, gate, up, down
    dims = MuonDimensionNumbers((1,), (2,))
    assert infer_dims(jnp.zeros((4, 32, 86))) == dims
