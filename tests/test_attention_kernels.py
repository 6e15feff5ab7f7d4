"""Fused attention kernels (nn/attention_kernels.py) equal our XLA attention on CPU: outputs and
gradients, MHA / GQA / MQA, document (segment) masks with padding, sliding windows, the
query-blocked path; the splash kernel in Pallas interpret mode; backend resolution of attn_impl."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.config import ConfigError, validate
from hope_jax.nn.attention import Attention, attend, causal_mask
from hope_jax.nn.attention_kernels import fused_attention, resolve_impl


def _inputs(b, t, h, g, k, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(ks[0], (b, t, h, k))
    kk, v = (jax.random.normal(x, (b, t, g, k)) for x in ks[1:])
    # row 0: three documents then padding (segment 0); row 1: one document
    cuts = np.array([t // 4, t // 2, t - 3])
    seg0 = np.searchsorted(cuts, np.arange(t), side="right") + 1
    seg0[t - 3:] = 0
    seg = jnp.asarray(np.stack([seg0, np.ones(t, int)])[:b].astype(np.int32))
    return q, kk, v, seg


def _reference(q, k, v, seg, window):
    b, t = seg.shape
    idx = jnp.broadcast_to(jnp.arange(t), (b, t))
    return attend(q, k, v, causal_mask(idx, idx, seg, seg, window))


def _value_and_grads(fn, q, k, v):
    w = jax.random.normal(jax.random.key(9), q.shape)  # a loss that weighs every output
    loss = lambda q, k, v: jnp.sum(fn(q, k, v) * w)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v), jax.jit(fn)(q, k, v)


def _assert_same(fn, q, k, v, seg, window, tol):
    (lf, gf), of = _value_and_grads(fn, q, k, v)
    (lr, gr), orf = _value_and_grads(lambda q, k, v: _reference(q, k, v, seg, window), q, k, v)
    np.testing.assert_allclose(of, orf, atol=tol, rtol=tol)
    np.testing.assert_allclose(lf, lr, atol=tol * 10, rtol=tol)
    for a, b in zip(gf, gr):
        np.testing.assert_allclose(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("h,g,window", [(4, 4, 0), (4, 2, 3), (4, 1, 3)])
def test_dot_product_equals_xla_attention(h, g, window):
    # (jax's XLA form computes logits in float32 even for float64 inputs: compared in float32)
    q, k, v, seg = _inputs(2, 16, h, g, 8)
    fn = lambda q, k, v: fused_attention(q, k, v, seg, window, "dot_product")  # noqa: E731
    _assert_same(fn, q, k, v, seg, window, 2e-5)


@pytest.mark.parametrize("window", [0, 40])
def test_splash_kernel_equals_xla_attention_interpret(window):
    q, k, v, seg = _inputs(1, 128, 4, 2, 16, seed=1)
    fn = lambda q, k, v: fused_attention(q, k, v, seg, window, "splash",  # noqa: E731
                                         interpret=True)
    _assert_same(fn, q, k, v, seg, window, 2e-5)


def test_module_fused_path_equals_xla_and_query_blocked_paths():
    b, t, d = 2, 16, 32
    x = jax.random.normal(jax.random.key(3), (b, t, d))
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))
    seg = _inputs(b, t, 4, 2, 8)[3]
    mods = {(impl, qb): Attention(4, 2, 8, window=5, q_block=qb, impl=impl)
            for impl, qb in (("xla", 0), ("xla", 8), ("dot_product", 8))}
    params = mods[("xla", 0)].init(jax.random.key(0), x, pos, seg)

    def run(m):
        loss = lambda p: jnp.sum(m.apply(p, x, pos, seg) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    ref_loss, ref_grad = run(mods[("xla", 0)])
    for key, m in mods.items():
        loss, grad = run(m)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=str(key))
        for a, b_ in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
            np.testing.assert_allclose(a, b_, atol=1e-5, rtol=1e-4, err_msg=str(key))


def test_resolve_impl_per_backend_and_errors():
    bf16, f32, h100, v100 = jnp.bfloat16, jnp.float32, (9, 0), (7, 0)
    assert resolve_impl("auto", bf16, 64, 256, "cpu") == "xla"
    assert resolve_impl("auto", bf16, 64, 256, "gpu", h100) == "cudnn"
    assert resolve_impl("auto", f32, 64, 256, "gpu", h100) == "xla"  # cuDNN flash: bf16/fp16
    assert resolve_impl("auto", bf16, 256, 256, "gpu", h100) == "xla"
    assert resolve_impl("auto", bf16, 64, 255, "gpu", h100) == "xla"
    assert resolve_impl("auto", bf16, 64, 256, "gpu", v100) == "xla"  # pre-Ampere
    assert resolve_impl("auto", f32, 64, 256, "tpu") == "splash"
    assert resolve_impl("auto", f32, 64, 100, "tpu") == "xla"
    assert resolve_impl("dot_product", f32, 64, 100, "cpu") == "dot_product"
    with pytest.raises(ValueError, match="'cudnn' needs an Ampere"):
        resolve_impl("cudnn", bf16, 64, 256, "cpu")
    assert resolve_impl("cudnn", bf16, 64, 256, "gpu", h100) == "cudnn"
    with pytest.raises(ValueError, match="'splash' needs a TPU"):
        resolve_impl("splash", f32, 64, 256, "gpu")
    assert jax.default_backend() != "cpu" or Attention(4, 4, 8).impl == "auto"
    with pytest.raises(ConfigError, match="attn_impl"):
        validate({"model": {"attn_impl": "flash"}})
    with pytest.raises(ConfigError, match="attn_impl='cudnn' needs config.model.dtype"):
        validate({"model": {"attn_impl": "cudnn"}})
    assert validate({"model": {"attn_impl": "cudnn", "dtype": "bfloat16"}}).model.attn_impl == (
        "cudnn")


def test_splash_under_a_mesh_runs_per_shard():
    from hope_jax.config import MeshConfig
    from hope_jax.sharding import make_mesh, mesh_context

    q, k, v, seg = _inputs(4, 128, 4, 2, 16, seed=2)
    seg = jnp.concatenate([seg, seg[:, ::-1]])  # 4 rows: rows 2-3 reversed (padding first)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2), jax.devices()[:8])
    with mesh_context(mesh):
        out = jax.jit(lambda q, k, v: fused_attention(q, k, v, seg, 0, "splash",
                                                      interpret=True))(q, k, v)
    np.testing.assert_allclose(out, _reference(q, k, v, seg, 0), atol=2e-5, rtol=2e-5)
