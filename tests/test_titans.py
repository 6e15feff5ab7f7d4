"""Titans models through the full LM: causality, document isolation, gradients, configs."""

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.config import ConfigError, validate
from hope_jax.memory.config import InnerConfig
from hope_jax.models.lm import LM
from tests.helpers import assert_causal_and_doc_isolated

ROOT = pathlib.Path(__file__).resolve().parents[1]
T = 24
VARIANTS = ["titans_lmm", "titans_mag", "titans_mal", "titans_mac"]


def _cfg(name, **keys):
    """`keys` of model.inner or model.memory, each in its own section."""
    keys = dict(chunk_size=4, window=8, segment_len=8, n_persistent=2, remat_every=2) | keys
    inner_keys = {f.name for f in dataclasses.fields(InnerConfig)}
    inner = {k: v for k, v in keys.items() if k in inner_keys}
    mem = {k: v for k, v in keys.items() if k not in inner_keys}
    return validate({"model": {"name": name, "vocab_size": 31, "d_model": 16, "num_layers": 2,
                               "num_heads": 2, "memory": mem, "inner": inner}}).model


@pytest.mark.parametrize("name", VARIANTS)
def test_causal_and_document_isolated(name):
    """Logits before t ignore tokens after t; a packed document ignores the one before it.

    t = 13 is mid-chunk, mid-window and mid-segment; the second document starts at 10, also
    mid-chunk, so the fast-state reset, conv and attention masks are all exercised.
    """
    assert_causal_and_doc_isolated(LM(_cfg(name)), T)


def test_outer_gradient_reaches_memory_init_and_gates():
    """The LM loss trains the meta-learned initial memory and the gate projections (A14)."""
    model = LM(_cfg("titans_lmm", doc_reset=False))  # one cond branch: faster to compile
    toks = (jnp.arange(2 * T).reshape(2, T) * 5) % 31
    params = jax.jit(model.init)(jax.random.PRNGKey(1), toks)

    def loss(p):
        logits = model.apply(p, toks[:, :-1])
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logp, toks[:, 1:, None], -1))

    grads = jax.jit(jax.grad(loss))(params)
    mem = grads["params"]["blocks"]["block"]["memory"]
    for name in ("mem_w0", "mem_w1", "lr_gate", "momentum_gate", "retain_gate", "k", "v"):
        g = jax.tree_util.tree_leaves(mem[name])
        assert all(np.isfinite(np.asarray(x)).all() for x in g), name
        assert sum(float(jnp.abs(x).sum()) for x in g) > 0, name


def _load(path):
    spec = importlib.util.spec_from_file_location("cfg", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return validate(mod.get_config())


@pytest.mark.parametrize("path,nominal", [("configs/titans_760m.py", 760e6),
                                          ("configs/titans_1_3b.py", 1.3e9)])
def test_paper_scale_param_counts(path, nominal):
    """SPEC A13 shapes land within 5% of the nominal size (abstract init, no memory used)."""
    cfg = _load(path).model
    shapes = jax.eval_shape(
        lambda: LM(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 64), jnp.int32)))
    n = sum(x.size for x in jax.tree_util.tree_leaves(shapes))
    assert abs(n / nominal - 1) < 0.05, n


def test_tiny_config_matches_transformer_tiny():
    titans, ref = _load("configs/titans_tiny.py"), _load("configs/transformer_tiny.py")
    assert titans.model.name == "titans_lmm"
    for key in ("d_model", "num_layers", "num_heads", "vocab_size"):
        assert getattr(titans.model, key) == getattr(ref.model, key)
    assert titans.data == ref.data and titans.optim == ref.optim
    assert titans.train.steps == ref.train.steps


def test_memory_config_rejects_leaky_combinations():
    with pytest.raises(ConfigError, match="read_after_write"):
        _cfg("titans_lmm", gate_granularity="chunk", read_after_write=True)
    with pytest.raises(ConfigError, match="depth"):
        _cfg("titans_lmm", depth=1)
    with pytest.raises(ConfigError, match="lr_init"):
        _cfg("titans_lmm", lr_init=0.5, lr_max=0.1)


@pytest.mark.parametrize("inner_opt", ["titans", "dgd"])
def test_neural_memory_state_carry(inner_opt):
    """NeuralMemory with an explicit state: calls split at chunk multiples ≡ one pass (conv
    tails, fast weights, optimizer state and document ids carried), the pure `init_state` ≡ a
    fresh state, and the legacy state-less call still works (padding: test_memory_engine)."""
    from hope_jax.memory.config import MemoryConfig
    from hope_jax.memory.titans import NeuralMemory

    ic = InnerConfig(chunk_size=4, optimizer=inner_opt, remat_every=0, lr_max=0.1)
    m = NeuralMemory(2, 4, MemoryConfig(hidden_mult=1.0), ic)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 8))
    pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
    seg = jnp.array([[0] * 6 + [1] * 6, [2] * 12])
    params = m.init(jax.random.PRNGKey(1), x, pos, seg)
    run = jax.jit(lambda p, x, pos, seg, st: m.apply(p, x, pos, seg, st))
    y, st = run(params, x, pos, seg, None)
    np.testing.assert_allclose(y, m.apply(params, x, seg), atol=1e-6)  # legacy (x, seg) form
    y0, st0 = run(params, x, pos, seg, m.init_state(2))
    np.testing.assert_allclose(y0, y, atol=1e-6)
    y1, st1 = run(params, x[:, :8], pos[:, :8], seg[:, :8], m.init_state(2))
    y2, st2 = run(params, x[:, 8:], pos[:, 8:], seg[:, 8:], st1)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(st2), jax.tree_util.tree_leaves(st)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # a 3-token tail (padded to a chunk inside) reads what the one pass read
    y3, _ = run(params, x[:, 8:11], pos[:, 8:11], seg[:, 8:11], st1)
    np.testing.assert_allclose(y3, y[:, 8:11], atol=1e-5)
