"""Self-modifying Titans (SPEC §4.3-4.4, Eqs. 83-93): DESIGN §3 invariants 1-6 for the layer.

Float64 throughout (x64 on): chunked ≡ token-by-token reference for independent chunk sizes,
causality, segment carry, batch isolation, document resets, self_modify=False ≡ Titans layer,
ablation switches, outer gradient ≡ finite differences.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.config import ModelConfig
from hope_jax.memory import rules
from hope_jax.memory import self_modifying as sm
from hope_jax.memory.config import MemoryConfig
from hope_jax.memory.titans import NeuralMemory
from hope_jax.models.hope import self_modifying_layer
from tests.helpers import model_with

pytestmark = pytest.mark.usefixtures("float64")  # conftest.py


B, T, D, H = 2, 16, 8, 2  # head dim K = 4
with jax.enable_x64(True):  # module constants in float64 without switching x64 on globally
    # row 0: documents [0, 5), [5, 12), [12, 16) (mid-chunk for C = 4, 16); row 1: one document
    SEG = jnp.array([[0] * 5 + [1] * 7 + [2] * 4, [3] * 16])
    POS = jnp.broadcast_to(jnp.arange(T), (B, T))
    X = jax.random.normal(jax.random.PRNGKey(0), (B, T, D), jnp.float64)


def _cfg(**keys):
    """The HOPE layer's config at this file's size; `keys` of model.inner / model.hope."""
    base = ModelConfig(name="hope", d_model=D, num_heads=H, dtype="float64",
                       param_dtype="float64")
    return model_with(base, **{"chunk_size": 4, "memory_hidden_mult": 2.0, **keys})


BASE = _cfg(other_chunk_size=2)


_BASE_VALUES = {"lr_bias": -2.0, "momentum_bias": 2.0, "retain_bias": -3.0}  # eta .1, beta .9


@functools.cache
def _params(cfg, seed=1):
    """Params of the layer's structure with random values around a sane init, so that every
    memory, gate and conv tap matters (conv identity + noise, gates near their init, memory
    first layers N(0, 1), everything else N(0, 0.3^2)).

    Only the structure comes from Flax (`eval_shape`); the values come from numpy (float64
    `jax.random` compiles for ~20 s on a busy CPU)."""
    shapes = jax.eval_shape(self_modifying_layer(cfg).init, jax.random.PRNGKey(0), X, POS, SEG)
    rng = np.random.default_rng(seed)

    def fill(path, a):
        name = jax.tree_util.keystr(path)
        base = np.zeros(a.shape)
        if "_conv" in name:
            base[-1] = 1.0
        base += 1.0 if "scale" in name else _BASE_VALUES.get(path[-1].key, 0.0)
        std = 1.0 if "mem_w0" in name else 0.3
        return jnp.asarray(base + std * rng.standard_normal(a.shape), a.dtype)

    return jax.tree_util.tree_map_with_path(fill, nn.unbox(shapes))


def _apply(cfg, reference=False):
    """The layer's apply; `reference` swaps the chunked inner loop for the token-by-token one
    (both looked up when the layer is traced)."""
    m = self_modifying_layer(cfg, inner_reference=reference)

    def f(p, x, seg, state):
        return m.apply(p, x, POS[:, : x.shape[1]], seg, state)

    return f


# tiny shapes: compile time dominates, so skip LLVM's optimisations (~2x faster compiles)
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(f):
    return jax.jit(f, compiler_options=_FAST_COMPILE)


@functools.cache
def _fn(cfg, reference=False):
    """Jitted `_apply` (one compile per config and input signature)."""
    return _jit(_apply(cfg, reference))


def _run(cfg, params, x=X, seg=SEG, state=None, reference=False):
    return _fn(cfg, reference)(params, x, seg, state)


def _close(a, b, tol=1e-10):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("chunk,other", [(1, 1), (4, 16), (16, 4)])
def test_chunked_matches_token_reference(chunk, other):
    """Chunked scan ≡ per-token loop of Eqs. 83-89 (A1), mid-chunk document starts included;
    (1, 1) is the exact per-token recurrence."""
    cfg = _cfg(chunk_size=chunk, other_chunk_size=other)
    p = _params(cfg)
    y, st = _run(cfg, p)
    y_ref, st_ref = _run(cfg, p, reference=True)
    assert float(jnp.std(y)) > 1e-3
    _close(y, y_ref)
    _close(st["fast"], st_ref["fast"])


@pytest.mark.parametrize("hope", [
    dict(optimizer="gd", momentum=False, retention=False, static_proj="k",
         other_chunk_size=2),
    dict(adaptive_q=True, static_proj="v", other_chunk_size=8),
    dict(closed_form=False, other_chunk_size=2),  # the engine's dgd() step scanned per token
    dict(out_norm=True, out_gain=True, grad_clip=0.0, other_chunk_size=2),  # D2: fast gain
    dict(out_norm=False, grad_clip=0.5, other_chunk_size=4),  # no norm, clipped inner grads
    dict(out_norm=True, grad_clip=0.0, other_chunk_size=4),  # the pre-clip default: RMSNorm
])
def test_variants_match_token_reference(hope):
    """Ablation paths, adaptive q, and the per-token-step path ≡ the reference."""
    cfg = _cfg(**hope)
    p = _params(cfg)
    y, st = _run(cfg, p)
    y_ref, st_ref = _run(cfg, p, reference=True)
    _close(y, y_ref)
    _close(st["fast"], st_ref["fast"])


def test_causal():
    cfg = BASE
    p = _params(cfg)
    y, _ = _run(cfg, p)
    y2, _ = _run(cfg, p, X.at[:, 9].add(1.0))
    _close(y[:, :9], y2[:, :9], 0)
    assert float(jnp.abs(y[:, 9:] - y2[:, 9:]).min(axis=(0, 2)).max()) > 0


def test_padded_tail():
    """T = 13 (not a multiple of the chunks): outputs = the longer run's prefix; padded tail
    tokens never write (state ≡ the token-by-token reference's)."""
    cfg = BASE
    p = _params(cfg)
    y, _ = _run(cfg, p)
    y13, st13 = _run(cfg, p, X[:, :13], SEG[:, :13])
    _close(y13, y[:, :13])
    y_ref, st_ref = _run(cfg, p, X[:, :13], SEG[:, :13], reference=True)
    _close(y13, y_ref)
    _close(st13, st_ref)


def test_segment_carry_equals_one_pass():
    """Two calls (8 + 8 tokens; carried fast state, conv tails, document ids) ≡ one pass."""
    cfg = BASE
    p = _params(cfg)
    y, st = _run(cfg, p)
    y1, st1 = _run(cfg, p, X[:, :8], SEG[:, :8])
    y2, st2 = _run(cfg, p, X[:, 8:], SEG[:, 8:], st1)
    _close(jnp.concatenate([y1, y2], 1), y)
    _close(st2, st)
    # the pure initialiser (no params: the first token takes the meta-learned init) ≡ None
    y0, _ = _run(cfg, p, X[:, :8], SEG[:, :8], self_modifying_layer(cfg).init_state(B))
    _close(y0, y1)


def test_shared_input_is_the_per_memory_maps_with_equal_weights():
    """PAPER.md D9: `hope.shared_input` (one input map x_in for every adaptive memory) is the
    per-memory-map layer with all maps W_m (projection and conv) set equal to it; it keeps its
    conv tail across calls (two calls == one pass)."""
    cfg = _cfg(other_chunk_size=2, shared_input=True)
    p = _params(cfg)
    names = set(p["params"])
    assert {"x_in", "x_in_conv", "q", "q_conv"} <= names
    assert not names & {"k", "v", "lr_in", "retain_in", "k_conv", "lr_in_conv"}
    per = _params(BASE)
    maps = {"k", "v", "lr_in", "retain_in"} & set(per["params"])
    assert len(maps) == 4
    tied = {**per["params"], **{m: p["params"]["x_in"] for m in maps},
            **{f"{m}_conv": p["params"]["x_in_conv"] for m in maps}}
    tied.update({k: v for k, v in p["params"].items() if not k.startswith("x_in")})
    y, st = _run(cfg, p)
    _close(_run(BASE, {"params": tied})[0], y)
    assert float(jnp.abs(_run(BASE, per)[0] - y).max()) > 1e-3
    y1, st1 = _run(cfg, p, X[:, :8], SEG[:, :8])
    y2, st2 = _run(cfg, p, X[:, 8:], SEG[:, 8:], st1)
    _close(jnp.concatenate([y1, y2], 1), y)
    _close(st2, st)


def test_batch_isolation():
    cfg = BASE
    p = _params(cfg)
    y, _ = _run(cfg, p)
    y2, _ = _run(cfg, p, X.at[1].multiply(-2.0))
    _close(y[0], y2[0], 0)


@pytest.mark.parametrize("chunk,other,start", [(4, 2, 8), (1, 1, 5)])
def test_document_reset(chunk, other, start):
    """A packed row's second document ≡ that document alone (chunk-aligned start, or C = 1)."""
    cfg = _cfg(chunk_size=chunk, other_chunk_size=other)
    p = _params(cfg)
    seg = jnp.array([[0] * start + [1] * (T - start)] * B)
    y, _ = _run(cfg, p, seg=seg)
    y_alone, _ = _run(cfg, p, X[:, start:], seg[:, start:])
    _close(y[:, start:], y_alone)


@pytest.mark.parametrize("opt", ["dgd", "gd"])
def test_static_equals_titans_layer(opt):
    """self_modify=False ≡ `NeuralMemory` with the matching config (same param names)."""
    cfg = _cfg(self_modify=False, optimizer=opt)
    mc = MemoryConfig(arch="mlp", depth=2, hidden_mult=cfg.hope.memory_hidden_mult,
                      activation="gelu")
    ic = dataclasses.replace(cfg.inner, optimizer="dgd" if opt == "dgd" else "titans",
                             remat_every=0)
    # NeuralMemory keeps its memory init, gates and l2-norm in fp32: use fp32-exact params
    p = jax.tree_util.tree_map(lambda w: w.astype(jnp.float32).astype(w.dtype), _params(cfg))
    y, _ = _run(cfg, p)
    titans = NeuralMemory(H, D // H, mc, ic, cfg.init_std, dtype=jnp.float64,
                          param_dtype=jnp.float64)
    y_titans = _jit(titans.apply)(p, X, SEG)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_titans), rtol=1e-5, atol=1e-5)
    assert float(jnp.std(y)) > 1e-2


def test_defaults_follow_spec():
    cfg = ModelConfig(name="hope")
    hc, ic = cfg.hope, cfg.inner
    assert (hc.self_modify, hc.adaptive_q, ic.optimizer, ic.momentum, ic.retention,
            hc.static_proj) == (True, False, "dgd", True, True, "")  # SPEC §4.3, A6, A8, A9
    assert (ic.chunk_size, ic.lr_max) == (16, 1.0)  # SPEC §7, A9
    spec = sm.layer_spec(cfg.hope, cfg.inner, cfg.head_dim)
    assert spec.adaptive == ("k", "v", "lr", "retain") and spec.self_target
    assert spec.mem.optimizer.name == "dgd+momentum" and spec.gates == ("lr", "momentum", "retain")
    assert spec.mem.objective is rules.l2  # the default inner loss; inner.objective switches it


@pytest.mark.parametrize("switch", [
    dict(optimizer="gd"), dict(momentum=False), dict(retention=False),
    dict(static_proj="k"), dict(static_proj="v"), dict(adaptive_q=True), dict(self_modify=False),
])
def test_each_switch_changes_output(switch):
    """Every ablation of Table 6 changes the layer (shared params held equal)."""
    base = BASE
    p0 = _params(base)
    cfg = model_with(base, **switch)
    p = _params(cfg)
    p = {"params": {k: p0["params"].get(k, v) for k, v in p["params"].items()}}
    y0, _ = _run(base, p0)
    y, _ = _run(cfg, p)
    assert bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.max(jnp.abs(y - y0))) > 1e-3 * float(jnp.max(jnp.abs(y0)))


def test_outer_gradient_matches_finite_differences():
    """Meta-gradient through every inner write (A14) ≡ central finite differences."""
    cfg = _cfg(chunk_size=2, other_chunk_size=4, remat_every=0)
    p = _params(cfg)
    t = 8
    w = jax.random.normal(jax.random.PRNGKey(5), (B, t, D), jnp.float64)
    f = _apply(cfg)
    loss_fn = lambda q: jnp.sum(w * f(q, X[:, :t], SEG[:, :t], None)[0])
    loss, g = _jit(loss_fn), _jit(jax.grad(loss_fn))(p)
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.PRNGKey(6), len(leaves))
    u = jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, a.shape, a.dtype)
                                            for a, k in zip(leaves, keys)])
    eps = 1e-5
    shift = lambda s: jax.tree_util.tree_map(lambda a, b: a + s * b, p, u)
    fd = (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)
    an = sum(jnp.vdot(a, b) for a, b in zip(*map(jax.tree_util.tree_leaves, (g, u))))
    np.testing.assert_allclose(float(an), float(fd), rtol=1e-6)
    # the meta-learned initial states of the self-modifying memories get gradients
    for n in ("k_mem_w1", "v_mem_w1", "lr_mem_w1", "retain_mem_w1", "mem_w1"):
        assert float(jnp.abs(g["params"][n]).max()) > 0
