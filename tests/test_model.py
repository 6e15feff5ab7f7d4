"""LM invariants for every registered model: causality, batch isolation, scan == unrolled."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.models.lm import LM, MODELS
from tests.helpers import tiny_config

T = 32


def _tokens(b=2, t=T, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, 257)


def _model(name, **kw):
    cfg = tiny_config(**{"model.name": name, "data.seq_len": T, **kw})
    return cfg, LM(cfg.model)


# every registered model at d=16, one layer, T=16 (registry-parametrized: a new model is tested)
TINY = {"model.d_model": 16, "model.num_layers": 1, "model.num_heads": 2, "model.mlp_hidden": 32,
        "model.inner.chunk_size": 4, "model.memory.window": 4, "model.memory.segment_len": 4,
        "model.memory.n_persistent": 2, "data.seq_len": 16}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_causal_batch_and_document_isolated(name):
    """Changing tokens at positions >= t leaves logits at positions < t unchanged; a row's logits
    do not depend on the other rows of the batch; a packed document ignores the one before it
    (one compile: same shapes throughout)."""
    cfg = tiny_config(**{"model.name": name, **TINY})
    model = LM(cfg.model)
    x = _tokens(b=3, t=16)
    seg = jnp.array([[1] * 10 + [2] * 6] * 3)
    params = jax.jit(model.init)(jax.random.key(0), x)
    apply = jax.jit(lambda p, tk, sg: model.apply(p, tk, segment_ids_BT=sg))
    ones = jnp.ones_like(seg)
    t = 11
    a = apply(params, x, ones)
    b = apply(params, x.at[:, t:].set((x[:, t:] + 7) % 257), ones)
    np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-5, rtol=1e-5)
    assert not np.allclose(a[:, t:], b[:, t:])
    c = apply(params, x.at[0::2].set(_tokens(b=2, t=16, seed=1)), ones)  # rows 0, 2 replaced
    np.testing.assert_allclose(a[1], c[1], atol=1e-5, rtol=1e-5)
    assert not np.allclose(a[0], c[0])
    d = apply(params, x, seg)
    e = apply(params, x.at[:, :10].set((x[:, :10] + 3) % 257), seg)
    np.testing.assert_allclose(d[:, 10:], e[:, 10:], atol=1e-5, rtol=1e-5)
    assert not np.allclose(d[:, :10], e[:, :10])


def _unstack(scanned):
    """nn.scan params {'blocks': {'block': tree[L, ...]}} -> {'block_i': tree[...]}."""
    p = dict(scanned)
    stacked = p.pop("blocks")["block"]
    n = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(n):
        p[f"block_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    return p


def test_scan_equals_unrolled():
    cfg, scanned = _model("transformer")
    _, unrolled = _model("transformer", **{"model.scan_layers": False})
    x = _tokens()
    params = nn.unbox(scanned.init(jax.random.key(0), x))["params"]
    a = scanned.apply({"params": params}, x)
    b = unrolled.apply({"params": _unstack(params)}, x)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    ref = nn.unbox(unrolled.init(jax.random.key(0), x))["params"]
    assert jax.tree.structure(ref) == jax.tree.structure(_unstack(params))


def test_remat_same_grads():
    _, plain = _model("transformer")
    _, remat = _model("transformer", **{"model.remat": "block"})
    x = _tokens()
    params = nn.unbox(plain.init(jax.random.key(0), x))["params"]

    def loss(m):
        return lambda p: jnp.mean(m.apply({"params": p}, x) ** 2)

    ga, gb = jax.grad(loss(plain))(params), jax.grad(loss(remat))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), ga, gb)


@pytest.mark.parametrize("window", [0, 12])
def test_query_blocked_attention_equals_full(window):
    """`model.attn_q_block` (logits 8 queries at a time, rematerialised) == full attention, with
    packed documents and with a sliding window: outputs and parameter gradients."""
    kw = {"model.attn_window": window}
    _, full = _model("transformer", **kw)
    _, blocked = _model("transformer", **kw, **{"model.attn_q_block": 8})
    x = _tokens()
    seg = jnp.concatenate([jnp.ones((2, 13), jnp.int32), 2 * jnp.ones((2, T - 13), jnp.int32)], 1)
    pos = jnp.concatenate([jnp.arange(13), jnp.arange(T - 13)])[None].repeat(2, 0)
    params = nn.unbox(full.init(jax.random.key(0), x))["params"]

    def loss(m):
        return lambda p: jnp.mean(m.apply({"params": p}, x, pos, seg) ** 2)

    np.testing.assert_allclose(blocked.apply({"params": params}, x, pos, seg),
                               full.apply({"params": params}, x, pos, seg), rtol=1e-5, atol=1e-5)
    ga, gb = jax.grad(loss(full))(params), jax.grad(loss(blocked))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), ga, gb)


def test_packed_documents_are_independent():
    """With segment ids, a packed row's 2nd document sees nothing of the 1st (Transformer++)."""
    _, model = _model("transformer")
    x = _tokens(b=1)
    cut = 12
    seg = jnp.concatenate([jnp.ones((1, cut), jnp.int32), 2 * jnp.ones((1, T - cut), jnp.int32)], 1)
    pos = jnp.concatenate([jnp.arange(cut), jnp.arange(T - cut)])[None]
    params = jax.jit(model.init)(jax.random.key(0), x)
    packed = model.apply(params, x, pos, seg)
    alone = model.apply(params, x[:, cut:])
    np.testing.assert_allclose(packed[:, cut:], alone, atol=1e-5, rtol=1e-5)


def test_bf16_compute_keeps_fp32_params():
    _, model = _model("transformer", **{"model.dtype": "bfloat16"})
    x = _tokens()
    v = nn.unbox(jax.jit(model.init)(jax.random.key(0), x))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
    assert model.apply(v, x).dtype == jnp.bfloat16


def test_every_param_has_logical_axes():
    from hope_jax.train.state import logical_axes

    cfg = tiny_config()
    axes = logical_axes(cfg)
    leaves = jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))
    for path, a in leaves:
        assert all(isinstance(n, str) for n in a), (path, a)
